"""train.tokens / train.batch_ramp: steps derived from the budget, the paper run files, and plan's run time."""
import json
import math

import gin
import pytest

import gopher_jax.model.config  # noqa: F401  (configurables the gin files bind)
import gopher_jax.parallel.mesh  # noqa: F401
import gopher_jax.parallel.pipeline  # noqa: F401
import gopher_jax.parallel.rules  # noqa: F401
from gopher_jax.plan.run_time import format_run_estimate, run_estimate
from gopher_jax.train import token_budget
from gopher_jax.train.config import TrainConfig

GOPHER_TOKENS, CHINCHILLA_TOKENS = 300 * 10**9, 1400 * 10**9  # Gopher §3; Chinchilla Table 4


def test_steps_follow_the_budget_when_the_batch_changes():
    small = TrainConfig(tokens=10**6, batch_size=8, seq_len=256)
    big = TrainConfig(tokens=10**6, batch_size=32, seq_len=256)
    assert small.steps == math.ceil(10**6 / (8 * 256)) == 489
    assert big.steps == math.ceil(10**6 / (32 * 256)) == 123
    assert TrainConfig().steps == 200 and TrainConfig(steps=7).steps == 7  # without a budget: train.steps


def test_steps_and_tokens_that_disagree_are_refused_naming_both():
    with pytest.raises(ValueError, match=r"train.steps=10 and train.tokens=1,000,000 .*set train.tokens=0"):
        TrainConfig(steps=10, tokens=10**6, batch_size=8, seq_len=256)
    assert TrainConfig(steps=489, tokens=10**6, batch_size=8, seq_len=256).steps == 489  # dataclasses.replace


def test_ramp_stages_cover_the_budget():
    cfg = TrainConfig(tokens=10**6, batch_size=8, seq_len=256, batch_ramp=((500_000, 16),))
    stages = cfg.stages()
    assert [(s.first_step, s.steps, s.batch_size) for s in stages] == [(0, 245, 8), (245, 123, 16)]
    assert cfg.steps == 368
    assert token_budget.batch_at_step(244, stages) == 8 and token_budget.batch_at_step(245, stages) == 16
    trained = token_budget.tokens_after(cfg.steps, stages, 256)
    assert 10**6 <= trained < 10**6 + 2 * 16 * 256  # at least the budget, at most one step over per stage
    with pytest.raises(ValueError, match="must increase"):
        TrainConfig(batch_size=8, batch_ramp=((500, 16), (400, 32)))
    with pytest.raises(ValueError, match="not divisible by train.microbatches=3"):
        TrainConfig(batch_size=6, microbatches=3, batch_ramp=((500, 16),))


@pytest.mark.parametrize("run_file, tokens, batches, lr", [
    ("gopher_44m", GOPHER_TOKENS, [128], 6e-4), ("gopher_117m", GOPHER_TOKENS, [128], 6e-4),
    ("gopher_417m", GOPHER_TOKENS, [128], 2e-4), ("gopher_1_4b", GOPHER_TOKENS, [128], 2e-4),
    ("gopher_7_1b", GOPHER_TOKENS, [1024], 1.2e-4), ("gopher_280b", GOPHER_TOKENS, [1536, 3072], 4e-5),
    ("chinchilla_70b", CHINCHILLA_TOKENS, [768, 1536], 1e-4)])
def test_paper_run_files_state_the_papers_budgets(run_file, tokens, batches, lr):
    """Gopher Table 1 (batch in tokens: 0.25M, 2M, 3M -> 6M; max LR) and Chinchilla Table 4 (1.5M -> 3M)."""
    from gopher_jax.train.config import OptimizerConfig
    gin.parse_config_files_and_bindings([f"gin_configs/runs/{run_file}.gin"], [])
    cfg, opt = TrainConfig(), OptimizerConfig()
    assert cfg.tokens == tokens and cfg.seq_len == 2048
    assert [s.batch_size for s in cfg.stages()] == batches and opt.peak_learning_rate == lr
    assert token_budget.tokens_after(cfg.steps, cfg.stages(), 2048) >= tokens
    # Cadence scaled to the run: tens to a few hundred evaluations, checkpoints at least every ~1% of it.
    assert 10 <= cfg.steps / cfg.eval_every <= 200 and cfg.steps / cfg.checkpoint_every >= 100
    if run_file.startswith("gopher"):
        assert opt.name == "adam" and opt.warmup_steps == 1500
        assert opt.clip_norm == (0.25 if run_file in ("gopher_7_1b", "gopher_280b") else 1.0)
    else:
        assert opt.name == "adamw"


def test_parallel_recipes_include_their_run_file_and_keep_its_budget():
    gin.parse_config_files_and_bindings(["gin_configs/parallel/gopher_280b_v3.gin"], [])
    cfg = TrainConfig()
    assert cfg.tokens == GOPHER_TOKENS and cfg.microbatches == 12 and cfg.steps == 47_684 + 23_842


def test_run_estimate_is_step_time_times_steps_per_stage():
    cfg = TrainConfig(tokens=10**6, batch_size=8, seq_len=256, batch_ramp=((500_000, 16),))
    est = run_estimate(cfg, 2.0, num_chips=4)
    assert est["run_steps"] == 368
    assert est["predicted_wall_s"] == pytest.approx(245 * 2.0 + 123 * 4.0)  # the batch-16 steps take twice as long
    split = run_estimate(cfg, {"predicted_step_s": 2.0, "communication_s": 0.5}, num_chips=4)
    assert split["predicted_wall_s"] == pytest.approx(245 * 2.0 + 123 * (1.5 * 2 + 0.5))  # only compute scales
    assert est["predicted_chip_hours"] == pytest.approx(est["predicted_wall_s"] / 3600 * 4)
    text = format_run_estimate({**est, "num_chips": 4})
    assert "368 steps" in text and "chip-hours on 4 chips" in text and "assumes 100% goodput" in text


def test_the_loop_trains_the_token_budget_through_the_batch_ramp(tmp_path):
    """train.tokens with a ramp in a real (in-process) run: batch 8 then 16 rows of 32 tokens; the run
    trains ceil(512/256) + ceil(1024/512) = 4 steps and draws 8 + 8 + 16 + 16 rows of the stream."""
    from tests.reliability.test_rewind import records, run
    summary = run(tmp_path, "train.steps=None", "train.tokens=1536", "train.batch_ramp=((512, 16),)",
                  "train.checkpoint_every=100")
    assert summary["step"] == 4 and summary["tokens_per_step"] == 16 * 32
    assert [r["step"] for r in records(tmp_path) if "loss" in r] == [1, 2, 3, 4]
    assert sum(m["realised"] for m in summary["mixture"].values()) == pytest.approx(1.0)
    assert summary["goodput"]["goodput/productive_s"] > 0 and 0 < summary["goodput"]["goodput"] < 1
    with open(tmp_path / "checkpoints" / "4" / "data" / "metadata") as f:  # orbax JsonSave of the data state
        assert json.load(f)["rows_drawn"] == 8 + 8 + 16 + 16
