"""The in-step spike guard: non-finite or spiking losses leave params and optimizer state untouched."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gopher_jax.train.config import TrainConfig
from gopher_jax.train.spikes import SpikeGuardState, guard_metrics, maybe_guard, spike_guard


def _step(tx):
    @jax.jit
    def step(params, opt_state, loss, grads):
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss, grad_norm=grad_norm)
        return optax.apply_updates(params, updates), opt_state
    return step


def test_bad_updates_are_dropped_exactly_and_counted():
    params = {"w": jnp.arange(4.0), "b": jnp.ones(())}
    tx = spike_guard(optax.adamw(0.1), threshold=2.0, ema_decay=0.5, warmup=2)
    state = tx.init(params)
    step = _step(tx)
    grads = jax.tree.map(jnp.ones_like, params)
    nan_grads = jax.tree.map(lambda g: g * jnp.nan, grads)
    for loss in (4.0, 3.0):  # two good updates: the running average is trusted from now on
        params, state = step(params, state, loss, grads)
    assert int(state.accepted) == 2 and float(state.loss_ema) == pytest.approx(3.5)
    for loss, g in ((jnp.nan, grads), (3.0, nan_grads), (jnp.inf, grads), (7.5, grads)):  # 7.5 > 2 x 3.5
        before = jax.device_get((params, state.inner))
        params, state = step(params, state, loss, g)
        after = jax.device_get((params, state.inner))
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
        assert int(state.last_skipped) == 1
    assert int(state.skipped) == 4 and int(state.accepted) == 2
    params, state = step(params, state, 6.9, grads)  # below the threshold: applied
    assert int(state.last_skipped) == 0 and int(state.accepted) == 3
    m = guard_metrics(state)
    assert float(m["skipped_updates"]) == 4.0 and float(m["update_skipped"]) == 0.0


def test_spikes_are_not_judged_during_warmup_but_nan_is():
    params = {"w": jnp.zeros(3)}
    tx = spike_guard(optax.sgd(1.0), threshold=2.0, ema_decay=0.9, warmup=5)
    state, step = tx.init(params), _step(tx)
    grads = {"w": jnp.ones(3)}
    params, state = step(params, state, 1.0, grads)
    params, state = step(params, state, 100.0, grads)  # a spike, but still warming up
    assert int(state.skipped) == 0
    params, state = step(params, state, jnp.nan, grads)
    assert int(state.skipped) == 1


def test_policy_none_leaves_the_optimizer_alone_and_config_checks():
    tx = optax.sgd(1.0)
    assert maybe_guard(tx, TrainConfig(spike_policy="none")) is tx
    guarded = maybe_guard(tx, TrainConfig(spike_policy="skip"))
    assert isinstance(guarded.init({"w": jnp.zeros(2)}), SpikeGuardState)
    with pytest.raises(ValueError, match="train.spike_policy='sometimes'"):
        TrainConfig(spike_policy="sometimes")
    with pytest.raises(ValueError, match="train.spike_threshold=0.5"):
        TrainConfig(spike_threshold=0.5)
