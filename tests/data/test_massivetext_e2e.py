"""The researcher's path, end to end on 8 CPU devices: raw jsonl of several components -> `gopher-jax data
process` -> registration from gin alone -> `gopher-jax train` on the mixture, killed (SIGKILL) and resumed ->
per-component held-out metrics -> `gopher-jax eval` on one component. Per-step losses equal an
uninterrupted run's, bit for bit.

Only the run that is killed is a subprocess (a SIGKILL needs a process of its own); the other commands go
through the same entry point (gopher_jax.cli.main) in this process, which already has 8 CPU devices and
the libraries imported: each subprocess would pay ~10 s of imports (TensorFlow and seqio for the
mixture) for no assertion. They run at JAX's default matmul precision, as a `gopher-jax` process does
(tests/conftest.py sets 'highest' for the rest of the suite), so they compile the killed run's programs.
"""
import json
import math
import os
import signal
import subprocess
import sys

import jax

from gopher_jax.cli import main
from tests.data.mixture_helpers import write_raw
from tests.reliability.test_kill_resume import finish, records, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAMS = ("train.steps=8", "train.seq_len=64", "train.batch_size=8", "train.log_every=1", "train.eval_every=4",
          "train.eval_batches=2", "train.checkpoint_every=2", "train.keep_checkpoints=3")
COMPONENTS = ("massiveweb", "books", "news", "github")


def _cli(*args, env=None):
    return [sys.executable, "-m", "gopher_jax.cli", *args]


def _env():
    # conftest's XLA_FLAGS (8 devices, its backend optimisation level): the killed run compiles as this
    # process does, so its losses can equal the in-process reference bit for bit
    return dict(os.environ)


def _train_args(workdir, manifest, packed, *extra, resume=False):
    return ["train", "--gin_file=gin_configs/runs/pretrain.gin", "--gin_file=gin_configs/models/tiny.gin",
            "--gin_file=gin_configs/data/massivetext.gin", f"--workdir={workdir}", "--no_progress",
            f"--gin_param=register_massivetext_tasks.manifest='{manifest}'",
            f"--gin_param=packed_data.root='{packed}'", *[f"--gin_param={p}" for p in PARAMS + extra],
            *(["--resume"] if resume else [])]


def _train(workdir, manifest, packed, *extra, resume=False):
    return subprocess.Popen(_cli(*_train_args(workdir, manifest, packed, *extra, resume=resume)), cwd=REPO,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _in_process(capsys, *argv):
    """`gopher-jax ARGV` through the console script's entry point in this process: (code, stdout, stderr)."""
    capsys.readouterr()
    with jax.default_matmul_precision(None):  # a `gopher-jax` process's default, not conftest's 'highest'
        code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_raw_to_process_to_mixture_training_with_kill_resume_and_component_eval(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the gin files are named relative to the repository, as in the README
    inputs = write_raw(str(tmp_path))
    processed = tmp_path / "processed"
    code, _, err = _in_process(capsys, "data", "process", *[f"--input={i}" for i in inputs], f"--output={processed}",
                               "--stages=exact_dedup,fuzzy_dedup", "--validation_fraction=0.2", "--num_shards=2")
    assert code == 0, err[-3000:]
    manifest = json.load(open(processed / "manifest.json"))
    assert set(manifest["components"]) == set(COMPONENTS)

    packed = tmp_path / "packed"
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    code, _, err = _in_process(capsys, *_train_args(ref_dir, processed, packed))
    assert code == 0, err[-3000:]
    assert "left out (no data): c4, wikipedia" in err  # the renormalisation is printed

    run = _train(run_dir, processed, packed, "faults.sleep_per_step_s=0.6")
    wait_for(run, run_dir, lambda rs: any(r.get("step", 0) >= 5 and "loss" in r for r in rs))
    run.send_signal(signal.SIGKILL)
    assert finish(run)[0] == -signal.SIGKILL
    code, _, err = _in_process(capsys, *_train_args(run_dir, processed, packed, resume=True))
    assert code == 0, err[-3000:]
    assert "resumed from step" in err or "resumed from step" in _  # printed on stdout

    def losses(d):
        return {r["step"]: r["loss"] for r in records(d) if "loss" in r}
    ref, got = losses(ref_dir), losses(run_dir)
    assert sorted(ref) == list(range(1, 9))
    for step, loss in got.items():  # steps logged before the kill, and again after the resume
        assert loss == ref[step], (step, loss, ref[step])
    assert set(got) == set(ref)

    final = [r for r in records(ref_dir) if r.get("step") == 8 and "eval_loss" in r][-1]
    for c in COMPONENTS:
        bpb = final[f"eval_bits_per_byte/{c}"]
        assert math.isfinite(bpb) and 0 < bpb < 8, (c, bpb)
    resumed_final = [r for r in records(run_dir) if r.get("step") == 8 and "eval_loss" in r][-1]
    assert {k: v for k, v in resumed_final.items() if k.startswith("eval_")} == \
           {k: v for k, v in final.items() if k.startswith("eval_")}
    summary = json.load(open(ref_dir / "summary.json"))
    assert set(summary["mixture"]) == set(COMPONENTS)

    code, stdout, err = _in_process(capsys, "eval", f"--workdir={ref_dir}", "--task=seqio", "--component=books",
                                    "--json", "--mesh=single")
    assert code == 0, err[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["documents"] == manifest["components"]["books"]["splits"]["validation"]["documents"]
    assert out["bytes"] == manifest["components"]["books"]["splits"]["validation"]["bytes"]
    assert 0 < out["bits_per_byte"] < 8
