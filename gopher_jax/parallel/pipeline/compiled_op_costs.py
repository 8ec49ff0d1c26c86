"""Op costs of the pipeline executor, measured: compile each stage branch and read XLA's cost analysis.

Every executed op kind (F, R, V, B, I, W; schedule.py) at every stage position (first: embedding +
layers, mid: layers, last: layers + head + loss) is the same function the executor's `lax.switch`
branch runs (`executor.StageOps`), jitted on one device for one microbatch and compiled; its cost is
`compiled.cost_analysis()["flops"]` (after XLA's dead-code elimination). zero_bubble's R, I and W are
the split backward of deferred_wgrad.py: I computes dx and every Dense's input and output cotangent,
W only the kernels' x^T dy, so I + W is about V, not 2 V.

XLA's cost analysis counts a while loop's body once, so the layer scan is unrolled
(ModelConfig.scan_unroll) and a stage is priced from two compiles, with one and with two layers:
cost(op, L layers) = c1 + (L - 1) (c2 - c1), where c2 - c1 is one layer and c1 holds the stage's
per-call work (embedding, head, loss, position tables). B is priced as R + V.
Attention is priced through its XLA path (ModelConfig.attention_impl='xla'), whose FLOPs the cost
analysis sees (the CPU kernel is an opaque custom call). FLOPs do not depend on the sharding, so one
device and a one-row microbatch give the same ratios as the partitioned step.

`op_costs` falls back to cost.analytic_costs (documented there) when compiling fails, and says so in
`OpCosts.source`.
"""
from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder
from gopher_jax.parallel.pipeline.cost import POSITIONS, OpCosts, analytic_costs

log = logging.getLogger(__name__)


def abstract_stage_inputs(cfg: ModelConfig, seq_len: int, rows: int, layers: int):
    """ShapeDtypeStructs of (layers slice, outer params, stage input, microbatch)."""
    tokens = jax.ShapeDtypeStruct((rows, seq_len), jnp.int32)
    params = nn.meta.unbox(jax.eval_shape(lambda t: Decoder(cfg).init(jax.random.key(0), t)["params"], tokens))
    outer = dict(params)
    p = jax.tree.map(lambda a: jax.ShapeDtypeStruct((layers,) + a.shape[1:], a.dtype), outer.pop("layers"))
    mb = {k: tokens for k in ("inputs", "targets", "segment_ids", "positions")}
    mb["loss_weights"] = jax.ShapeDtypeStruct((rows, seq_len), jnp.float32)
    x = jax.ShapeDtypeStruct((rows, seq_len, cfg.d_model), jnp.dtype(cfg.dtype))
    return p, outer, x, mb


def stage_set_bytes(cfg: ModelConfig, seq_len: int, rows: int, layers: int) -> dict:
    """Returns bytes on one device of {"residual": one residual set (what R keeps for V / I),
    "weight_grad": one weight-gradient set (every distinct Dense input and output cotangent, I -> W),
    "stage_grads": one stage's fp32 parameter gradients}, from the executor's own layouts (StageOps),
    the larger of the first and last stage positions, for `rows` rows per device of one microbatch."""
    import numpy as np

    from gopher_jax.parallel.pipeline.executor import StageOps, outer_keys

    p, outer, x, mb = abstract_stage_inputs(cfg, seq_len, rows, layers)
    size = lambda leaves: sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in leaves)  # noqa: E731
    out = {"residual": 0, "weight_grad": 0, "stage_grads": sum(int(np.prod(a.shape)) * 4 for a in jax.tree.leaves(p))}
    for pos in ("first", "last"):
        o = {k: outer[k] for k in outer_keys(outer, pos)}
        ops = StageOps(cfg, pos, 0.0, True, p, o, x, mb, jax.ShapeDtypeStruct((), jnp.float32))
        out["residual"] = max(out["residual"], size(ops.shapes))
        out["weight_grad"] = max(out["weight_grad"], size(ops.wgrad_shapes))
    return out


@functools.lru_cache(maxsize=256)
def _flops(cfg: ModelConfig, kind: str, pos: str, seq_len: int, rows: int, layers: int, z_loss: float,
           split: bool) -> float:
    from gopher_jax.parallel.pipeline.executor import StageOps, outer_keys

    p, outer, x, mb = abstract_stage_inputs(cfg, seq_len, rows, layers)
    o = {k: outer[k] for k in outer_keys(outer, pos)}
    tw = jax.ShapeDtypeStruct((), jnp.float32)
    ops = StageOps(cfg, pos, z_loss, split, p, o, x, mb, tw)
    g_last = (jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32))

    def program(p, o, x, mb, tw, kept, wset, g):  # what the executor's run_op does for `kind`
        g = g_last if pos == "last" else g
        if kind == "F":
            return ops.forward(p, o, x, mb, tw)
        if kind in "RB":
            out, vjp = ops.linearize(p, o, x, mb, tw)
            if kind == "R":
                return out, ops.keep(vjp)
        else:
            vjp = ops.restore(kept, p, o)
        if kind == "W":
            return ops.weight_grads(wset, p)
        return ops.backward(vjp, g)

    # FLOPs are counted on the optimized HLO; code generation does not change them, so it is made cheap:
    # LLVM at level 0 (several times faster) and the legacy fusion emitters instead of the MLIR ones
    # (measured: the same costs for every op, 17.6 -> 10.7 CPU-s for the toy's split costs)
    lowered = jax.jit(program).lower(p, o, x, mb, tw, ops.shapes, ops.wgrad_shapes, x)
    compiled = lowered.compile({"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False})
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0))  # absent when the program has no floating-point work


@functools.lru_cache(maxsize=16)
def measured_costs(cfg: ModelConfig, seq_len: int, layers_per_stage: int, z_loss: float = 0.0,
                   split: bool = False, rows: int = 1) -> OpCosts:
    """FLOPs of (kind, position) for one microbatch row through one virtual stage of `layers_per_stage`
    layers (module docstring). B is priced as R + V of the unsplit backward (the fused op runs both,
    and it is the reference work of cost.py). `split` (zero_bubble) prices R, I and W as the split
    backward runs them (executor.StageOps, deferred_wgrad.py). `rows`: sequences per microbatch on a
    device (1 for ratios; a test comparing with a compiled step uses the step's own)."""
    # unrolled: the cost analysis sees every layer; 2 layers are all the compiles need (the abstract
    # parameter tree is built from this config: its outer shapes do not depend on the layer count)
    # XLA's dot: its FLOPs are visible (a CPU GEMM custom call is opaque) and it is what a TPU runs; it
    # also skips matmul_impl='auto''s per-host probe, which would run the 280B's [d, 4d] matmuls for real
    cfg = cfg.replace(attention_impl="xla", matmul_impl="xla", scan_unroll=2, num_layers=2)

    def price(kind: str, split_op: bool) -> dict:
        one = {pos: _flops(cfg, kind, pos, seq_len, rows, 1, z_loss, split_op) for pos in POSITIONS
               if not (kind == "F" and pos == "last")}
        per_layer = _flops(cfg, kind, "mid", seq_len, rows, 2, z_loss, split_op) - one["mid"]
        # the last stage's forward never runs on its own: it is its R (or B's recompute)
        return {(kind, pos): 0.0 if pos not in one else one[pos] + (layers_per_stage - 1) * per_layer
                for pos in POSITIONS}

    cost = {**price("F", False), **price("R", False), **price("V", False)}
    for pos in POSITIONS:
        cost[("B", pos)] = cost[("R", pos)] + cost[("V", pos)]
    if split:
        for kind in ("R", "I", "W"):
            cost.update(price(kind, True))
    return OpCosts(cost, "compiled")


def op_costs(cfg: ModelConfig, seq_len: int, layers_per_stage: int, z_loss: float = 0.0,
             split: bool = False) -> OpCosts:
    """measured_costs, or analytic_costs when compiling is unavailable (OpCosts.source says which)."""
    try:
        return measured_costs(cfg, seq_len, layers_per_stage, z_loss, split=split)
    except Exception as e:  # noqa: BLE001  (any backend failure: the documented fallback)
        log.warning("pipeline op costs: compiling the stage branches failed (%s: %s); using the analytic "
                    "unit costs (gopher_jax/parallel/pipeline/cost.py)", type(e).__name__, e)
        return analytic_costs(cfg.remat_policy)
