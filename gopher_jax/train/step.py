"""The jitted train step: microbatched gradient accumulation, clipping, Adam(W), master weights."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder, head_matmul_impl
from gopher_jax.ops import cross_entropy, head_cross_entropy, split_microbatches  # noqa: F401  (split_microbatches: re-export)
from gopher_jax.train.spikes import SpikeGuardState, guard_metrics
from gopher_jax.train.state import TrainState

BATCH_KEYS = ("inputs", "targets", "loss_weights", "segment_ids", "positions")


def fused_head_impl(model_config: ModelConfig, rows: int) -> str | None:
    """Returns the GEMM for the fused head + loss (ops/head_cross_entropy.py) of a `rows`-token
    batch, or None where the loss stays unfused: off CPU or on a multi-device mesh (custom calls do
    not shard), heads too small for `matmul_impl` to measure (unit-test models: nothing to gain),
    or the kernel switched off or unavailable. The head's own GEMM, with fp32 sums for its logits."""
    from gopher_jax.kernels import matmul_impl
    if not head_cross_entropy.available() or not matmul_impl.on_single_cpu()[0]:
        return None
    impl = head_matmul_impl(model_config, rows)
    if impl == "xla":
        if not matmul_impl.measured(rows, model_config.d_model, model_config.padded_vocab_size):
            return None
        impl = "xla_f32acc"  # fp32 logits from bf16 operands (the same dot for fp32)
    return impl


def make_loss_fn(model_config: ModelConfig, z_loss: float, *, fuse_head: bool = True):
    """Returns (params, batch) -> (weighted loss sum incl. z-loss, z-loss sum) for one (micro)batch.

    With `fuse_head` the output head and the loss run as one op wherever `fused_head_impl` finds a
    GEMM for it (ops/head_cross_entropy.py; decided per traced batch shape); it pays in a backward
    pass (the logit gradient comes out of the loss's own pass), so evaluation passes False.
    """
    model = Decoder(model_config)

    def loss_fn(params, batch):
        args = (batch["inputs"], batch["segment_ids"], batch["positions"])
        head_impl = fused_head_impl(model_config, math.prod(batch["inputs"].shape)) if fuse_head else None
        if head_impl is not None:
            x, w, transposed = model.apply({"params": params}, *args, head_inputs=True)
            return head_cross_entropy.head_cross_entropy(
                x, w, batch["targets"], batch["loss_weights"], vocab=model_config.vocab_size,
                transposed=transposed, impl=head_impl, z_loss=z_loss)
        logits = model.apply({"params": params}, *args)
        return cross_entropy(logits, batch["targets"], batch["loss_weights"], z_loss)

    return loss_fn


def make_train_step(model_config: ModelConfig, tx: optax.GradientTransformation, *, microbatches: int,
                    z_loss: float = 0.0, schedule=None, pipeline=None):
    """Returns (state, batch) -> (new state, metrics); metrics are scalar float32 arrays.

    Loss and gradients are normalised by the token weight of the whole global batch, so any
    number of microbatches gives the same update (up to float summation order).
    `pipeline` (gopher_jax.parallel.pipeline.Pipeline, when MeshConfig.pipeline > 1) computes the
    gradients of `pipeline.microbatches` microbatches per pass; the scan accumulates the passes.
    """
    loss_fn = make_loss_fn(model_config, z_loss)

    def step(state: TrainState, batch: dict):
        total_weight = jnp.maximum(jnp.sum(batch["loss_weights"].astype(jnp.float32)), 1.0)

        def scaled_loss(params, mb):
            loss_sum, z_sum = loss_fn(params, mb)
            return loss_sum / total_weight, z_sum / total_weight

        def grads_of(mb):
            if pipeline is not None:
                return pipeline(state.params, mb, total_weight)
            (loss, z), grads = jax.value_and_grad(scaled_loss, has_aux=True)(state.params, mb)
            return loss, z, jax.tree.map(lambda g: g.astype(jnp.float32), grads)

        passes = microbatches if pipeline is None else microbatches // pipeline.microbatches
        if passes == 1:
            loss, z, grads = grads_of(batch)
        else:
            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)

            def body(carry, mb):
                loss_acc, z_acc, g_acc = carry
                loss_i, z_i, g_i = grads_of(mb)
                return (loss_acc + loss_i, z_acc + z_i, jax.tree.map(jnp.add, g_acc, g_i)), None

            init = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32), zeros)
            (loss, z, grads), _ = jax.lax.scan(body, init, split_microbatches(batch, passes))

        grad_norm = optax.tree.norm(grads)
        target = state.master if state.master is not None else state.params
        if isinstance(state.opt_state, SpikeGuardState):  # drops non-finite / spiking updates in-step
            updates, opt_state = tx.update(grads, state.opt_state, target, loss=loss, grad_norm=grad_norm)
        else:
            updates, opt_state = tx.update(grads, state.opt_state, target)
        new_target = optax.apply_updates(target, updates)
        if state.master is not None:  # bf16 params are a rounded view of the fp32 master copy
            params = jax.tree.map(lambda m, p: m.astype(p.dtype), new_target, state.params)
            master = new_target
        else:
            params, master = new_target, None
        metrics = {"loss": loss - z, "z_loss": z, "grad_norm": grad_norm, "tokens": total_weight,
                   **guard_metrics(opt_state)}
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, master=master), metrics

    return step


def make_eval_step(model_config: ModelConfig):
    """Returns (params, batch) -> (loss sum, token weight sum) for held-out evaluation."""
    loss_fn = make_loss_fn(model_config, 0.0, fuse_head=False)

    def eval_step(params, batch):
        loss_sum, _ = loss_fn(params, batch)
        return loss_sum, jnp.sum(batch["loss_weights"].astype(jnp.float32))

    return eval_step
