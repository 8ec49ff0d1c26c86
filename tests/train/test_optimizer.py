"""Schedules, the weight-decay mask and master weights."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.optimizer import clip_by_global_norm, decay_mask, learning_rate_schedule
from gopher_jax.train.state import abstract_params
from tests.train.helpers import MODEL, batch, one_step, trainer_on


def test_gopher_schedule_warms_up_then_decays_by_10x():
    cfg = OptimizerConfig(peak_learning_rate=1e-3, warmup_steps=1500, schedule="gopher")
    lr = learning_rate_schedule(cfg, 100_000)
    assert float(lr(0)) == 0.0
    assert float(lr(750)) == pytest.approx(5e-4)
    assert float(lr(1500)) == pytest.approx(1e-3)
    assert float(lr(100_000)) == pytest.approx(1e-4)
    assert float(lr(50_000)) < 1e-3


def test_chinchilla_schedule_is_an_alias_of_gophers():
    """Chinchilla App. B: cosine cycle = the training steps, decay to 10% -- which 'gopher' already is."""
    kwargs = dict(peak_learning_rate=2e-4, warmup_steps=100)
    chinchilla = learning_rate_schedule(OptimizerConfig(schedule="chinchilla", **kwargs), 10_000)
    gopher = learning_rate_schedule(OptimizerConfig(schedule="gopher", **kwargs), 10_000)
    steps = np.arange(0, 10_001, 7)
    np.testing.assert_array_equal(jax.vmap(chinchilla)(steps), jax.vmap(gopher)(steps))
    # the paper's curve, written out: warmup, then 0.1 + 0.9 * (1 + cos(pi * progress)) / 2 of the peak
    progress = (steps[steps >= 100] - 100) / (10_000 - 100)
    paper = 2e-4 * (0.1 + 0.9 * (1 + np.cos(np.pi * progress)) / 2)
    np.testing.assert_allclose(jax.vmap(chinchilla)(steps[steps >= 100]), paper, rtol=1e-5)


def test_decay_mask_skips_norms_and_embeddings():
    mask = decay_mask(abstract_params(MODEL, 16), OptimizerConfig())
    assert mask["embedder"]["embedding"] is False
    assert mask["final_norm"]["scale"] is False
    assert mask["content_bias"] is False
    assert mask["layers"]["attention_norm"]["scale"] is False
    assert mask["layers"]["mlp"]["wi"]["kernel"] is True
    assert mask["layers"]["attention"]["rel_proj"] is True
    everything = decay_mask(abstract_params(MODEL, 16), OptimizerConfig(decay_embeddings_and_norms=True))
    assert all(jax.tree.leaves(everything))


def test_bf16_params_keep_an_fp32_master_copy():
    model = MODEL.replace(param_dtype="bfloat16", dtype="bfloat16")
    trainer = trainer_on(model=model)
    with trainer.context():  # two steps: the warmup schedule's LR is 0 at step 0
        state = trainer.init()
        for seed in (0, 1):
            state, metrics = trainer.train_step(state, trainer.put_batch(batch(seed=seed)))
    state, metrics = jax.device_get(state), {k: float(v) for k, v in metrics.items()}
    assert {a.dtype for a in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.bfloat16)}
    assert {a.dtype for a in jax.tree.leaves(state.master)} == {jnp.dtype(jnp.float32)}
    jax.tree.map(lambda p, m: np.testing.assert_array_equal(p, m.astype(jnp.bfloat16)), state.params, state.master)
    # The master copy holds what bf16 cannot: small updates are not rounded away.
    lost = [np.any(m != m.astype(jnp.bfloat16).astype(jnp.float32)) for m in jax.tree.leaves(state.master)]
    assert any(lost)
    assert np.isfinite(metrics["loss"]) and abs(metrics["loss"] - np.log(MODEL.vocab_size)) < 1.5


def test_bad_config_values_name_the_fix():
    with pytest.raises(ValueError, match="train.batch_size=10 is not divisible by train.microbatches=4"):
        TrainConfig(batch_size=10, microbatches=4)
    with pytest.raises(ValueError, match="optimizer.schedule='linear'"):
        OptimizerConfig(schedule="linear")


@pytest.mark.parametrize("max_norm", [1e3, 1.0, 1e-3])  # below, near and far above the gradients' norm
def test_global_norm_clip_equals_optaxs(max_norm):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    grads = {"w": jax.random.normal(keys[0], (64, 33)), "b": jax.random.normal(keys[1], (33,)) * 3,
             "e": {"t": jax.random.normal(keys[2], (7, 5, 3))}}
    ours, theirs = clip_by_global_norm(max_norm), optax.clip_by_global_norm(max_norm)
    state = ours.init(grads)
    assert jax.tree.structure(state) == jax.tree.structure(theirs.init(grads))  # checkpoints unchanged
    got, _ = jax.jit(ours.update)(grads, state)
    want, _ = jax.jit(theirs.update)(grads, theirs.init(grads))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=3e-7, atol=0)
    norm = float(optax.tree.norm(got))
    assert norm == pytest.approx(min(max_norm, float(optax.tree.norm(grads))), rel=1e-6)
    bad = jax.tree.map(lambda t: t.at[0].set(jnp.inf), grads)  # a non-finite norm: as optax (zeros or NaN)
    np.testing.assert_array_equal(np.isnan(np.asarray(jax.tree.leaves(ours.update(bad, state)[0])[0])),
                                  np.isnan(np.asarray(jax.tree.leaves(theirs.update(bad, state)[0])[0])))
