"""maybe_initialize: which case applies, and errors that name the missing piece (no runtime started)."""
import os

import pytest

from gopher_jax import distributed


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(distributed, "_done", None)
    for k in ("GOPHER_JAX_COORDINATOR", "GOPHER_JAX_NUM_PROCESSES", "GOPHER_JAX_PROCESS_ID",
              "GOPHER_JAX_DISTRIBUTED", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kw: calls.append(kw))
    return calls


def test_single_process_does_nothing(fresh, monkeypatch):
    monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")  # one host: nothing to coordinate
    assert distributed.maybe_initialize() == "single-process" and fresh == []
    assert distributed.maybe_initialize() == "already"


def test_explicit_from_env(fresh, monkeypatch):
    monkeypatch.setenv("GOPHER_JAX_COORDINATOR", "10.0.0.2:1234")
    monkeypatch.setenv("GOPHER_JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("GOPHER_JAX_PROCESS_ID", "1")
    assert distributed.maybe_initialize() == "explicit"
    assert fresh == [{"coordinator_address": "10.0.0.2:1234", "num_processes": 2, "process_id": 1}]


def test_tpu_auto(fresh, monkeypatch):
    monkeypatch.setenv("GOPHER_JAX_DISTRIBUTED", "auto")
    assert distributed.maybe_initialize() == "tpu-auto" and fresh == [{}]


@pytest.mark.parametrize("kwargs,match", [
    ({"coordinator": "h:1"}, "--num_processes"),
    ({"coordinator": "h", "num_processes": 2, "process_id": 0}, "needs a port"),
    ({"coordinator": "h:1", "num_processes": 2, "process_id": 2}, r"process_id=2 must be in \[0, num_processes=2\)"),
])
def test_errors_name_the_fix(fresh, kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.maybe_initialize(**kwargs)
    assert fresh == []


# -- two local processes x 4 CPU devices: hosts agree on the stop step and on the restored checkpoint --------------

def _pair(workdir, steps, *extra, per_process=((), ())):
    """Starts `gopher-jax train` as processes 0 and 1 of one run; per_process[i] adds flags to process i only."""
    import subprocess
    import sys

    from tests.plan.test_multiprocess import ARGS, REPO, _env, _free_port
    port = _free_port()
    return [subprocess.Popen([sys.executable, "-m", "gopher_jax.cli", "train", f"--workdir={workdir}", *ARGS,
                              f"--gin_param=train.steps={steps}", *extra, *per_process[i],
                              f"--coordinator=localhost:{port}", "--num_processes=2", f"--process_id={i}"],
                             cwd=REPO, env=_env(4, workdir.parent / "jax_cache"), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
            for i in range(2)]


def _outputs(procs):
    return [(p.communicate(timeout=600)[0], p.returncode) for p in procs]


def _losses(workdir):
    import json
    with open(workdir / "metrics.jsonl") as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def test_sigterm_to_one_host_stops_both_at_one_step_and_restores_agree(tmp_path):
    """SIGTERM to process 1 only: both stop at the same step with one checkpoint, and --resume continues
    bit-identically to an uninterrupted pair. Then, from copies of that workdir: a corrupt-file error on
    process 1 only makes both fall back to the same older step (quarantined once, by the lead), and a
    PermissionError on process 1 only stops both, non-zero, with nothing moved."""
    import shutil
    import signal
    import time

    from gopher_jax.data.tokenizer import ensure_embedded_tokenizer

    ensure_embedded_tokenizer(4096)
    total = 6
    run, ref = tmp_path / "run", tmp_path / "reference"
    slow = "--gin_param=faults.sleep_per_step_s=1.0"  # time to signal mid-run
    procs = _pair(run, total, slow) + _pair(ref, total)
    deadline = time.time() + 600
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and max(_losses(run) or [0]) >= 3):
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGTERM)  # only process 1 is told
    (out0, rc0), (out1, rc1), *refs = _outputs(procs)
    assert (rc0, rc1) == (75, 75), out0[-2000:] + out1[-2000:]
    assert all(rc == 0 for _, rc in refs), refs[0][0][-2000:]
    stop = int(out1.split("preempted (SIGTERM) at step ")[1].split(":")[0])
    assert f"preempted (SIGTERM on another host) at step {stop}:" in out0  # the same step on both hosts
    assert 3 <= stop < total
    assert sorted(os.listdir(run / "checkpoints")) == sorted({"2", str(stop)})  # one checkpoint of the stop step

    corrupt, denied = tmp_path / "corrupt_on_one_host", tmp_path / "denied_on_one_host"
    for copy in (corrupt, denied):
        shutil.copytree(run, copy)
    on_p1 = lambda error: ((), (f"--gin_param=faults.restore_error='{error}'", "--gin_param=faults.restore_error_process=1",
                                f"--gin_param=faults.restore_error_steps=({stop},)"))
    # train.steps=2 for the fault runs: they stop right after the restore decision (no compile); the pairs
    # run one after another, as concurrent pairs on 2 shared cores can outlast gloo's 30 s rendezvous.
    (c0, crc0), (c1, crc1), (d0, drc0), (d1, drc1) = _outputs(
        _pair(corrupt, 2, "--resume", per_process=on_p1("FileNotFoundError"))
        + _pair(denied, 2, "--resume", per_process=on_p1("PermissionError")))
    resumed = _outputs(_pair(run, total, "--resume"))

    # Bit-identical continuation after the agreed stop.
    assert all(rc == 0 and f"resumed from step {stop}" in out for out, rc in resumed), resumed[0][0][-2000:]
    got, want = _losses(run), _losses(ref)
    assert sorted(got) == list(range(1, total + 1)) and got == want

    # A corrupt-file error on one host: both restore the same older step; the lead alone quarantined.
    assert (crc0, crc1) == (0, 0), c0[-2000:] + c1[-2000:]
    assert "resumed from step 2" in c0 and "resumed from step 2" in c1
    assert f"checkpoint step {stop} is corrupt or partial" in c0 + c1
    assert len(os.listdir(corrupt / "checkpoints_corrupt")) == 1

    # An error that is not evidence of corruption, on one host: both stop non-zero, nothing moved.
    assert crc0 == 0 and drc0 != 0 and drc1 != 0
    assert f"restoring checkpoint step {stop}" in d1 and "PermissionError" in d1 and "nothing was moved" in d1
    assert "process(es) [1] failed with an error that is not evidence of corruption" in d0
    assert not (denied / "checkpoints_corrupt").exists()
    assert sorted(os.listdir(denied / "checkpoints")) == sorted({"2", str(stop)})
    print("\n".join(line for out in (c0, c1, d0, d1) for line in out.splitlines()
                    if "checkpoint" in line and ("restor" in line or "corrupt" in line)))
