"""Loss-spike and non-finite guard: an optax wrapper that drops bad updates inside the jitted step.

An update is dropped when the loss or the gradient norm is not finite, or when the loss exceeds
`threshold` x the running average (EMA) of accepted losses once `warmup` updates were accepted.
A dropped update leaves parameters and the inner optimizer state (Adam moments, step count, so the
learning-rate schedule too) exactly as they were; the guard's counters live in the optimizer state,
so they are checkpointed and a resumed run continues bit-identically.

Policies (gin `train.spike_policy`): "none" (no guard), "skip" (drop the update and count it; stop
after `train.max_skipped_updates`), "rewind" (also restore the newest checkpoint and continue with
the batches after the offending ones; stop after `train.max_rewinds`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

POLICIES = ("none", "skip", "rewind")
# Distinct from 0/1/2 and from signals.EXIT_PREEMPTED: resuming as-is would likely diverge again.
EXIT_DIVERGED = 3


class SpikeGuardState(NamedTuple):
    inner: Any  # the wrapped optimizer's state
    loss_ema: jax.Array  # float32 running average of accepted losses
    accepted: jax.Array  # int32 updates applied
    skipped: jax.Array  # int32 updates dropped (total)
    last_skipped: jax.Array  # int32 1 if the latest update was dropped


class TrainingDiverged(SystemExit):
    """Raised by the loop when the skip/rewind limit is exceeded; exits with EXIT_DIVERGED."""

    def __init__(self, message: str):
        super().__init__(EXIT_DIVERGED)
        self.message = message

    def __str__(self) -> str:
        return self.message


def spike_guard(inner: optax.GradientTransformation, *, threshold: float, ema_decay: float,
                warmup: int) -> optax.GradientTransformationExtraArgs:
    """Returns `inner` wrapped so update(..., loss=, grad_norm=) zeroes bad updates (see module doc)."""

    def init(params):
        zero_i = jnp.zeros((), jnp.int32)
        return SpikeGuardState(inner.init(params), jnp.zeros((), jnp.float32), zero_i, zero_i, zero_i)

    def update(updates, state: SpikeGuardState, params=None, *, loss, grad_norm, **extra):
        loss = jnp.asarray(loss, jnp.float32)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        spike = (state.accepted >= warmup) & (loss > threshold * state.loss_ema)
        ok = finite & ~spike
        new_updates, new_inner = inner.update(updates, state.inner, params)
        # where, not multiply: NaN * 0 is NaN, and the dropped branch must leave no trace.
        new_updates = jax.tree.map(lambda u: jnp.where(ok, u, jnp.zeros_like(u)), new_updates)
        inner_state = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_inner, state.inner)
        ema = jnp.where(state.accepted == 0, loss, ema_decay * state.loss_ema + (1.0 - ema_decay) * loss)
        bad = (~ok).astype(jnp.int32)
        return new_updates, SpikeGuardState(
            inner=inner_state, loss_ema=jnp.where(ok, ema, state.loss_ema),
            accepted=state.accepted + ok.astype(jnp.int32), skipped=state.skipped + bad, last_skipped=bad)

    return optax.GradientTransformationExtraArgs(init, update)


def maybe_guard(tx: optax.GradientTransformation, train_config) -> optax.GradientTransformation:
    """Returns `tx` wrapped by spike_guard unless train.spike_policy is "none"."""
    if train_config.spike_policy == "none":
        return tx
    return spike_guard(tx, threshold=train_config.spike_threshold, ema_decay=train_config.spike_ema_decay,
                       warmup=train_config.spike_warmup_steps)


def guard_metrics(opt_state) -> dict:
    """Returns the guard's per-step metrics (empty if the optimizer is not guarded)."""
    if not isinstance(opt_state, SpikeGuardState):
        return {}
    return {"update_skipped": opt_state.last_skipped.astype(jnp.float32),
            "skipped_updates": opt_state.skipped.astype(jnp.float32),
            "loss_ema": opt_state.loss_ema}
