"""Restore failures are classified (gopher_jax/train/checkpoint_errors.py), each with its own handling:
a changed config stops with the binding named, resource and transient errors are retried then raised,
corrupt checkpoints are quarantined (test_checkpoint_corruption.py), and a workdir with history never
starts again at step 0 unless asked by name. Every test checks what was said and what was kept."""
import dataclasses
import errno
import functools
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.train import checkpoint_errors as errors
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.config import TrainConfig
from gopher_jax.train.sharded import build_trainer
from tests.train.helpers import MODEL, OPTIMIZER

FAST = errors.RestoreRetry(attempts=3, first_wait_s=0.0)


def _listing(workdir):
    """Every file under the workdir (relative paths), to prove nothing was moved or deleted."""
    return sorted(os.path.relpath(p, workdir) for p in glob.glob(os.path.join(str(workdir), "**"), recursive=True)
                  if os.path.isfile(p))


# -- changed config on --resume: stop, name the binding, move nothing ------------------------------------------

@dataclasses.dataclass(frozen=True)
class Run:
    spike_policy: str = "none"
    optimizer: str = "adamw"
    param_dtype: str = "float32"
    num_layers: int = 2

    @functools.lru_cache(maxsize=None)  # noqa: B019 — a handful of frozen configs, built once per session
    def trainer(self):
        model = dataclasses.replace(MODEL, param_dtype=self.param_dtype, num_layers=self.num_layers)
        train = TrainConfig(steps=10, batch_size=8, seq_len=16, spike_policy=self.spike_policy)
        return build_trainer(model, dataclasses.replace(OPTIMIZER, name=self.optimizer), train,
                             build_mesh(MeshConfig(data=-1), jax.devices()[:1]), DEFAULT_RULES)

    @functools.lru_cache(maxsize=None)  # noqa: B019
    def initial_state(self):
        trainer = self.trainer()
        with trainer.context():
            return trainer.init()

    def bindings(self):
        """What gin.operative_config_str() would hold for these fields."""
        return (f"ModelConfig.num_layers = {self.num_layers}\nModelConfig.param_dtype = '{self.param_dtype}'\n"
                f"optimizer.name = '{self.optimizer}'\ntrain.spike_policy = '{self.spike_policy}'\n")


def _save(workdir, run, record_bindings=True):
    ck = Checkpointer(str(workdir), run_config=run.bindings() if record_bindings else None)
    ck.save(1, run.initial_state(), {"batches_consumed": 1})
    ck.close()


def _resume(workdir, run, record_bindings=True, retry=FAST):
    trainer = run.trainer()
    messages = []
    ck = Checkpointer(str(workdir), run_config=run.bindings() if record_bindings else None, retry=retry)
    try:
        return ck.restore_newest_good(trainer.abstract_state, trainer.state_shardings, report=messages.append), messages
    finally:
        ck.close()


CHANGES = {
    # name: (saved run, resumed run, recorded bindings?, the sentence the user must see)
    "spike_guard_added": (Run(), Run(spike_policy="skip"), True,
                          "optimizer state has no spike guard: the run was saved with train.spike_policy='none' "
                          "(now 'skip')"),
    "spike_guard_removed": (Run(spike_policy="rewind"), Run(), True,
                            "optimizer state has a spike guard: the run was saved with train.spike_policy='rewind' "
                            "(now 'none')"),
    "spike_guard_added_unrecorded": (Run(), Run(spike_policy="skip"), False,
                                     "optimizer state has no spike guard: the run was saved with "
                                     "train.spike_policy='none'"),
    "optimizer_name": (Run(), Run(optimizer="adam"), True,
                       "the run was saved with optimizer.name='adamw' (now 'adam')"),
    "optimizer_name_unrecorded": (Run(), Run(optimizer="adam"), False,
                                  "optimizer.name (adam / adamw) or optimizer.clip_norm (0 removes clipping) differs"),
    "bf16_master_copy": (Run(), Run(param_dtype="bfloat16"), True,
                         "parameters were saved as float32 without an fp32 master copy: the run was saved with "
                         "ModelConfig.param_dtype='float32' (now 'bfloat16')"),
    "model_shape": (Run(), Run(num_layers=3), True, "the run was saved with ModelConfig.num_layers=2 (now 3)"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_changed_config_stops_with_the_binding_named_and_moves_nothing(tmp_path, change):
    saved, resumed, recorded, sentence = CHANGES[change]
    _save(tmp_path, saved, recorded)
    before = _listing(tmp_path)
    with pytest.raises(errors.CheckpointMismatch) as e:
        _resume(tmp_path, resumed, recorded)
    message = str(e.value)
    assert "checkpoint step 1 " in message and sentence in message, message
    assert "Nothing was moved: the checkpoint is intact" in message
    assert _listing(tmp_path) == before and not os.path.exists(tmp_path / "checkpoints_corrupt")
    (step, _, data), messages = _resume(tmp_path, saved, recorded)  # the original config still resumes
    assert step == 1 and data == {"batches_consumed": 1} and not messages


def test_model_shape_change_names_the_arrays(tmp_path):
    _save(tmp_path, Run())
    with pytest.raises(errors.CheckpointMismatch,
                       match=r"params\.layers\.[a-z_.]+ is \(2, [0-9, ]+\) in the checkpoint, \(3, [0-9, ]+\) now"):
        _resume(tmp_path, Run(num_layers=3))


# -- resource and transient errors: retried with backoff, then raised; nothing moved ---------------------------

def _small_state(v):
    return {"w": jnp.full((64, 16), float(v)), "step": jnp.asarray(v, jnp.int32)}


@pytest.fixture()
def small(tmp_path):
    """Checkpoints of steps 1 and 2 of a small state; returns (workdir, abstract, shardings)."""
    ck = Checkpointer(str(tmp_path), keep=5)
    for s in (1, 2):
        ck.save(s, _small_state(s), {"batches_consumed": s})
    ck.close()
    rep = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("d",)), PartitionSpec())
    abstract = jax.eval_shape(lambda: _small_state(0))
    return tmp_path, abstract, jax.tree.map(lambda _: rep, abstract)


def _restore_with_fault(small, fault, failures, attempts=3):
    """Restores with manager.restore raising `fault` on its first `failures` calls."""
    workdir, abstract, shardings = small
    ck = Checkpointer(str(workdir), keep=5, retry=errors.RestoreRetry(attempts=attempts, first_wait_s=0.0))
    real, calls, messages = ck.manager.restore, [], []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) <= failures:
            raise fault
        return real(*args, **kwargs)

    ck.manager.restore = flaky
    try:
        return ck.restore_newest_good(abstract, shardings, report=messages.append), messages, calls
    finally:
        ck.close()


OOM = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes.")


def test_injected_out_of_memory_is_retried_then_raised_and_nothing_moved(small):
    before = _listing(small[0])
    with pytest.raises(errors.CheckpointUnavailable) as e:
        _restore_with_fault(small, OOM, failures=99)
    message = str(e.value)
    assert message.startswith("restoring checkpoint step 2 (") and "failed 3 time(s) with a resource error" in message
    assert "RESOURCE_EXHAUSTED" in message and "Nothing was moved: the checkpoint is kept as it is" in message
    assert "restore on more devices" in message
    assert _listing(small[0]) == before and not os.path.exists(small[0] / "checkpoints_corrupt")


def test_out_of_memory_that_clears_is_retried_and_the_newest_checkpoint_restored(small):
    (step, state, _), messages, calls = _restore_with_fault(small, OOM, failures=2)
    assert step == 2 and float(state["w"][0, 0]) == 2.0 and len(calls) == 3
    assert len(messages) == 2 and all("resource error on try" in m and "nothing was moved" in m for m in messages)
    assert messages[0].startswith("restoring checkpoint step 2 (") and "try 1 of 3" in messages[0]


def _tf_error(name, message):
    import tensorflow as tf
    return getattr(tf.errors, name)(None, None, message)


TRANSIENT = {
    "EIO": lambda: OSError(errno.EIO, "Input/output error"),
    "ETIMEDOUT": lambda: OSError(errno.ETIMEDOUT, "Connection timed out"),
    "tf_unavailable": lambda: _tf_error("UnavailableError", "gs://bucket/run: 503 Service Unavailable"),
    "tf_deadline": lambda: _tf_error("DeadlineExceededError", "GCS read timed out"),
    "tensorstore_status": lambda: ValueError("UNAVAILABLE: Error reading \"gs://bucket/run/checkpoints/2\""),
    "timeout": lambda: TimeoutError("read timed out"),
}


@pytest.mark.parametrize("fault", list(TRANSIENT))
def test_injected_transient_filesystem_error_is_retried_then_raised_and_nothing_moved(small, fault):
    before = _listing(small[0])
    with pytest.raises(errors.CheckpointUnavailable, match="failed 2 time\\(s\\) with a transient error") as e:
        _restore_with_fault(small, TRANSIENT[fault](), failures=99, attempts=2)
    assert "check the filesystem" in str(e.value) and "checkpoint_restore.attempts" in str(e.value)
    assert _listing(small[0]) == before and not os.path.exists(small[0] / "checkpoints_corrupt")


@pytest.mark.parametrize("error,kind", [
    (FileNotFoundError(errno.ENOENT, "No such file"), errors.INTEGRITY),
    (ValueError("DATA_LOSS: Error reading local file \"x/d/abc\": unexpected end of file"), errors.INTEGRITY),
    (MemoryError(), errors.RESOURCE),
    (OSError(errno.ESTALE, "Stale file handle"), errors.TRANSIENT),
])
def test_classification(error, kind):
    assert errors.classify(error) == kind
    wrapped = RuntimeError("orbax could not restore")
    wrapped.__cause__ = error
    assert errors.classify(wrapped) == kind  # orbax re-raises: the cause decides


def test_backoff_doubles_and_is_capped():
    retry = errors.RestoreRetry(attempts=6, first_wait_s=2.0, max_wait_s=10.0)
    assert [retry.wait_s(a) for a in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    with pytest.raises(ValueError, match="checkpoint_restore.attempts=0"):
        errors.RestoreRetry(attempts=0)


# -- never step 0 over existing history -------------------------------------------------------------------------

def test_resume_with_only_quarantined_checkpoints_refuses_to_start_from_step_0(small):
    workdir, abstract, shardings = small
    os.makedirs(workdir / "checkpoints_corrupt")
    for s in ("1", "2"):  # e.g. moved aside by an earlier version that quarantined any failure
        os.rename(workdir / "checkpoints" / s, workdir / "checkpoints_corrupt" / f"{s}.20260101-000000")
    before = _listing(workdir)
    ck = Checkpointer(str(workdir))
    with pytest.raises(errors.NoUsableCheckpoint) as e:
        ck.restore_newest_good(abstract, shardings, report=lambda m: None)
    message = str(e.value)
    assert "only 2 quarantined checkpoint(s)" in message and "1.20260101-000000" in message
    assert "Training did not start again from step 0" in message and "--restart_from_scratch" in message
    with pytest.raises(errors.RunHistoryExists, match="already holds a run") as e:  # and not without --resume
        ck.check_can_start(resume=False)
    assert isinstance(e.value, FileExistsError)
    assert _listing(workdir) == before
    # Asked by name: everything moves to checkpoints_superseded/<time>/, and the run may start at step 0.
    messages = []
    ck.check_can_start(resume=False, restart_from_scratch=True, report=messages.append)
    assert "moved the earlier checkpoints to" in messages[0]
    moved = glob.glob(str(workdir / "checkpoints_superseded" / "*" / "checkpoints_corrupt" / "2.20260101-000000"))
    assert moved and ck.history() == [] and ck.restore_newest_good(abstract, shardings) is None
    assert sorted(p.split("checkpoints_corrupt/")[-1] for p in _listing(workdir)) == \
        sorted(p.split("checkpoints_corrupt/")[-1] for p in before)  # same files, none lost
    ck.close()


def test_without_resume_a_workdir_with_checkpoints_is_refused(small):
    ck = Checkpointer(str(small[0]))
    with pytest.raises(errors.RunHistoryExists, match=r"checkpoints of steps \[1, 2\]\); nothing was overwritten"):
        ck.check_can_start(resume=False)
    ck.check_can_start(resume=True)  # --resume decides in restore_newest_good
    ck.close()


def test_an_interrupted_first_save_is_not_history(tmp_path):
    """Killed while writing its first checkpoint: nothing restorable ever existed, so --resume starts at 0."""
    ck = Checkpointer(str(tmp_path))
    ck.save(1, _small_state(1), {"batches_consumed": 1})
    ck.close()
    os.rename(tmp_path / "checkpoints" / "1", tmp_path / "checkpoints" / "1.orbax-checkpoint-tmp")
    ck = Checkpointer(str(tmp_path))
    abstract = jax.eval_shape(lambda: _small_state(0))
    rep = NamedSharding(Mesh(np.array(jax.devices()[:1]), ("d",)), PartitionSpec())
    messages = []
    assert ck.restore_newest_good(abstract, jax.tree.map(lambda _: rep, abstract), report=messages.append) is None
    assert "interrupted save" in messages[0] and glob.glob(str(tmp_path / "checkpoints_corrupt" / "1.orbax-*"))
    ck.close()


def test_resume_and_restart_from_scratch_are_exclusive_flags(capsys):
    import argparse

    from gopher_jax.train import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    assert parser.parse_args(["--workdir=w", "--restart_from_scratch"]).restart_from_scratch
    assert not parser.parse_args(["--workdir=w", "--resume"]).restart_from_scratch
    with pytest.raises(SystemExit):
        parser.parse_args(["--workdir=w", "--resume", "--restart_from_scratch"])
    assert "not allowed with argument" in capsys.readouterr().err


# -- errors that are not evidence of corruption: stop, name the checkpoint, quarantine nothing -----------------

@pytest.mark.parametrize("error", ["PermissionError", "ValueError", "TypeError"])
def test_unanticipated_restore_errors_stop_and_move_nothing(small, error):
    from gopher_jax.train.faults import Faults
    workdir, abstract, shardings = small
    before = _listing(workdir)
    fault = Faults(restore_error=error).restore_fault
    ck = Checkpointer(str(workdir), keep=5, retry=FAST, restore_fault=fault)
    try:
        with pytest.raises(errors.CheckpointRestoreFailed) as e:
            ck.restore_newest_good(abstract, shardings, report=lambda m: None)
    finally:
        ck.close()
    message = str(e.value)
    print(f"\n{error}: {message}")
    assert message.startswith(f"restoring checkpoint step 2 ({workdir}/checkpoints/2) failed with {error}: ")
    assert "not evidence that the checkpoint is corrupt, so nothing was moved or quarantined" in message
    assert "--resume" in message
    assert _listing(workdir) == before and not os.path.exists(workdir / "checkpoints_corrupt")


def test_a_missing_file_is_evidence_and_falls_back(small):
    from gopher_jax.train.faults import Faults
    workdir, abstract, shardings = small
    fault = Faults(restore_error="FileNotFoundError", restore_error_steps=(2,)).restore_fault
    ck, messages = Checkpointer(str(workdir), keep=5, retry=FAST, restore_fault=fault), []
    try:
        step, state, _ = ck.restore_newest_good(abstract, shardings, report=messages.append)
    finally:
        ck.close()
    assert step == 1 and float(state["w"][0, 0]) == 1.0
    assert messages[0].startswith("checkpoint step 2 is corrupt or partial: ") and "falling back to step 1" in messages[0]
    assert len(os.listdir(workdir / "checkpoints_corrupt")) == 1


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), ValueError("sharding mismatch"),
                                   TypeError("unexpected keyword argument"), AttributeError("no attribute 'x'")])
def test_errors_without_evidence_of_corruption_are_unknown(error):
    assert errors.classify(error) == errors.UNKNOWN
