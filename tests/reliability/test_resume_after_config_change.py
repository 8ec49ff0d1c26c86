"""The issue-19 scenario with real `gopher-jax train` processes: a config change on --resume stops with
the changed bindings named and moves nothing; the original config then continues from the newest
checkpoint; a workdir whose checkpoints were all quarantined refuses to start again at step 0.

  run 1: train 20 steps, checkpoints at 10 and 20
  run 2: --resume with train.spike_policy='skip' and optimizer.name='adam' -> exit 1, the message
  run 3: --resume with the original config -> resumed from step 20, no step trained twice
  run 4: both checkpoints moved to checkpoints_corrupt/ (what the old code did in run 2), --resume -> exit 1
"""
import glob
import os

from tests.reliability.test_kill_resume import SMALL, finish, records, start

# SMALL: tiny.gin at 2 layers x 64 wide; the checks are on the bindings, the checkpoints and the logged
# steps, which do not depend on the model's size.
PARAMS = ("train.steps=20", "train.seq_len=64", "train.batch_size=4", "train.log_every=5", "train.eval_every=0",
          "train.eval_batches=1", "train.checkpoint_every=10", *SMALL)
CHANGED = ("train.spike_policy='skip'", "optimizer.name='adam'")


def _files(workdir):
    return sorted(os.path.relpath(p, workdir) for p in glob.glob(os.path.join(str(workdir), "checkpoints*", "**"),
                                                                 recursive=True) if os.path.isfile(p))


def test_changed_config_on_resume_then_original_config_continues(tmp_path):
    run_dir = tmp_path / "run"
    code, _, err = finish(start(run_dir, *PARAMS))
    assert code == 0, err[-3000:]
    assert sorted(os.listdir(run_dir / "checkpoints")) == ["10", "20"]
    logged = [r["step"] for r in records(run_dir) if "loss" in r]
    assert logged == [5, 10, 15, 20]
    before = _files(run_dir)

    code, out, err = finish(start(run_dir, *PARAMS, *CHANGED, resume=True))
    assert code == 1, err[-3000:]
    assert f"checkpoint step 20 ({run_dir}/checkpoints/20) does not fit the train state this config builds" in err
    assert ("optimizer state has no spike guard: the run was saved with train.spike_policy='none' (now 'skip')"
            in err), err[-3000:]
    assert "the run was saved with optimizer.name='adamw' (now 'adam')" in err, err[-3000:]
    assert "Nothing was moved: the checkpoint is intact" in err and "Traceback" not in err
    assert _files(run_dir) == before and not os.path.exists(run_dir / "checkpoints_corrupt")
    assert "resumed from step" not in out

    code, out, err = finish(start(run_dir, *PARAMS, resume=True))
    assert code == 0, err[-3000:]
    assert "resumed from step 20" in out and "nothing left to train" in out
    assert [r["step"] for r in records(run_dir) if "loss" in r] == logged  # steps 5..20 not trained again

    os.makedirs(run_dir / "checkpoints_corrupt")
    for s in ("10", "20"):
        os.rename(run_dir / "checkpoints" / s, run_dir / "checkpoints_corrupt" / f"{s}.20260101-000000")
    quarantined = _files(run_dir)
    code, out, err = finish(start(run_dir, *PARAMS, resume=True))
    assert code == 1, err[-3000:]
    assert "it holds no checkpoint that restores, only 2 quarantined checkpoint(s)" in err, err[-3000:]
    assert "Training did not start again from step 0" in err and "--restart_from_scratch" in err
    assert _files(run_dir) == quarantined and [r["step"] for r in records(run_dir) if "loss" in r] == logged
