"""Schedules, the weight-decay mask and master weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.optimizer import decay_mask, learning_rate_schedule
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


def test_chinchilla_cosine_cycle_matches_run_length():
    cfg = OptimizerConfig(peak_learning_rate=2e-4, warmup_steps=100, schedule="chinchilla")
    lr = learning_rate_schedule(cfg, 10_000)
    assert float(lr(10_000)) == pytest.approx(2e-5)  # the minimum is reached exactly at the end
    assert float(lr(5050)) == pytest.approx((2e-4 + 2e-5) / 2, rel=1e-3)  # half-way down the cosine


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
