"""Spike policies in a real (in-process) training loop: "rewind" restores the newest checkpoint and
skips the offending batches; both policies stop past their limit with EXIT_DIVERGED and an explanation."""
import json
import os

import gin
import pytest

from gopher_jax import gin_utils
from gopher_jax.train.spikes import EXIT_DIVERGED, TrainingDiverged

# A 2-layer, 64-wide tiny.gin: the policies act on the loss, the checkpoints and the batch positions,
# which do not depend on the model's size; a smaller model only compiles and steps faster.
COMMON = ("train.seq_len=32", "train.batch_size=8", "train.log_every=1", "train.eval_every=0",
          "train.eval_batches=1", "train.checkpoint_every=2", "train.spike_warmup_steps=100",
          "ModelConfig.num_layers=2", "ModelConfig.d_model=64", "ModelConfig.num_heads=4", "ModelConfig.head_dim=16")


def run(workdir, *params):
    import gopher_jax.data.input_pipeline  # noqa: F401  (configurables gin must know)
    import gopher_jax.model.config  # noqa: F401
    import gopher_jax.parallel.mesh  # noqa: F401
    import gopher_jax.parallel.rules  # noqa: F401
    import data_tasks
    from gopher_jax.train.loop import resolve_tokenizer, train
    gin_utils.parse_gin(["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin"], COMMON + params)
    try:
        task = data_tasks.register_for_training(resolve_tokenizer()[0], verbose=False)
        return train(str(workdir), progress=False, train_task=task)
    finally:
        gin.clear_config()  # later tests in this process build configs from their defaults


def records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_rewind_skips_the_bad_batches_then_stops_at_the_limit(tmp_path, capsys):
    with pytest.raises(TrainingDiverged) as e:
        run(tmp_path, "train.steps=10", "train.spike_policy='rewind'", "train.max_rewinds=2",
            "faults.nan_loss_batches=(3, 6, 9)")
    assert e.value.code == EXIT_DIVERGED
    assert "train.max_rewinds=2" in str(e.value) and "--resume" in str(e.value)
    events = [r for r in records(tmp_path) if "event" in r]
    # batch 3 ran as step 4: back to checkpoint 2 (which had consumed 2 batches), batches 2-3 skipped
    assert events[0] == {"step": 4, "event": "rewind", "to_step": 2, "rewinds": 1, "skipped_batches": [2, 4]}
    # step 3 = batch 4, step 4 = batch 5 (checkpoint 4 at 6 batches), step 5 = batch 6: back to 4
    assert events[1] == {"step": 5, "event": "rewind", "to_step": 4, "rewinds": 2, "skipped_batches": [6, 7]}
    # steps 5, 6 = batches 7, 8 (checkpoint 6), step 7 = batch 9: a third rewind is over the limit
    assert events[2]["event"] == "diverged" and events[2]["step"] == 7
    losses = [r["loss"] for r in records(tmp_path) if "loss" in r]
    assert len(losses) == 10 and sum(l != l for l in losses) == 3  # steps 1-4, 3-5, 5-7; 3 NaN batches
    ckpts = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
    assert ckpts[-1] == 6  # nothing written after the problem
    with open(tmp_path / "checkpoints" / "6" / "data" / "metadata") as f:
        data = json.load(f)
    assert data["batches_consumed"] == 9 and data["reliability"] == {"rewinds": 2}
    assert "rewound to step 2 and skipped batches 2..3" in capsys.readouterr().err


def test_skip_policy_stops_past_max_skipped_updates(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"2 updates were dropped .* train.max_skipped_updates=1") as e:
        run(tmp_path, "train.steps=6", "train.spike_policy='skip'", "train.max_skipped_updates=1",
            "faults.nan_loss_batches=(1, 2)")
    assert e.value.code == EXIT_DIVERGED
    events = [r for r in records(tmp_path) if "event" in r]
    assert [r["event"] for r in events] == ["skipped_updates", "skipped_updates", "diverged"]
    assert events[-1]["step"] == 3
