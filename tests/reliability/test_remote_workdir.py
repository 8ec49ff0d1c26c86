"""Size manifests, verification and quarantine work on a gs://-style workdir, through the one filesystem
API (gopher_jax/train/workdir_fs.py) they share with local workdirs.

Offline there is no bucket: gs:// is served by fsspec's in-memory filesystem registered with the API for
the "gs" scheme, so the same gs:// path strings travel the same code. The tf.io.gfile backend (what
real gs:// paths use) runs the same checks on local paths. A stray local "gs:" directory (what
os.makedirs("gs://...") creates) would land in the test's working directory and fail the test.
"""
import json
import os
import uuid

import fsspec
import jax.numpy as jnp
import pytest

from gopher_jax.train import checkpoint_integrity as integrity
from gopher_jax.train import workdir_fs as fs
from gopher_jax.train.checkpoints import Checkpointer


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    """{relative path: bytes} of one real orbax checkpoint step (the layout Checkpointer writes)."""
    root = tmp_path_factory.mktemp("src")
    ck = Checkpointer(str(root), async_save=False)
    ck.save(10, {"w": jnp.arange(4096, dtype=jnp.float32).reshape(64, 64), "step": jnp.asarray(10)},
            {"batches_consumed": 10})
    ck.close()
    step = os.path.join(str(root), "checkpoints", "10")
    out = {}
    for d, _, names in os.walk(step):
        for n in names:
            if not n.startswith(integrity.MANIFEST_NAME):
                with open(os.path.join(d, n), "rb") as f:
                    out[os.path.relpath(os.path.join(d, n), step)] = f.read()
    return out


@pytest.fixture(params=["gs_in_memory", "local", "gfile_on_local"])
def workdir(request, tmp_path, monkeypatch):
    """A run directory served by one backend; the cwd is an empty directory to catch stray "gs:" dirs."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if request.param == "gs_in_memory":
        memory = fsspec.filesystem("memory")
        fs.register_backend("gs", fs.FsspecBackend(memory))
        root = f"gs://bucket-{uuid.uuid4().hex[:8]}/runs/tiny"
        yield root
        fs.register_backend("gs", None)
        memory.rm("/" + root.split("://")[1].split("/")[0], recursive=True)
    else:
        if request.param == "gfile_on_local":
            monkeypatch.setattr(fs, "_LOCAL", fs.GfileBackend())
        yield str(tmp_path / "runs" / "tiny")
    assert os.listdir(cwd) == [], f"a local directory was created: {os.listdir(cwd)}"


def _upload(root, files):
    step = fs.join(root, "checkpoints", "10")
    backend = fs.backend_for(step)
    for rel, data in files.items():
        path = fs.join(step, rel)
        fs.makedirs(path.rsplit("/", 1)[0])
        backend.write_bytes(path, data)
    return step


def test_scheme_and_backend_choice():
    assert fs.scheme("gs://b/run") == "gs" and fs.scheme("/tmp/run") is None and fs.scheme("runs/x") is None
    assert fs.scheme("file:///tmp/run") is None and fs.join("gs://b/run", "checkpoints") == "gs://b/run/checkpoints"
    assert isinstance(fs.backend_for("gs://b/run"), fs.GfileBackend)  # what epath/orbax use for gs:// too
    assert isinstance(fs.backend_for("/tmp/run"), fs.LocalBackend)


def test_manifest_verify_and_quarantine(workdir, real_checkpoint):
    step = _upload(workdir, real_checkpoint)
    assert fs.listdir(fs.join(workdir, "checkpoints")) == ["10"]
    if workdir.startswith("gs://"):
        assert isinstance(fs.backend_for(step), fs.FsspecBackend)

    # sealed and intact: nothing said, nothing moved
    integrity.write_manifest(step)
    assert integrity.has_manifest(step)
    recorded = json.loads(fs.read_text(fs.join(step, integrity.MANIFEST_NAME)))["files"]
    assert recorded == {rel: len(data) for rel, data in real_checkpoint.items()}
    assert integrity.verify(step) is None
    assert fs.listdir(fs.join(workdir, "checkpoints")) == ["10"]  # intact: nothing moved
    assert not fs.exists(fs.join(workdir, "checkpoints_corrupt"))

    # a truncated array file is named, with both sizes
    victim = max(real_checkpoint, key=lambda rel: len(real_checkpoint[rel]))
    size = len(real_checkpoint[victim])
    fs.backend_for(step).write_bytes(fs.join(step, victim), real_checkpoint[victim][: size // 2])
    assert integrity.verify(step) == (f"{fs.join(step, victim)} is {size // 2} bytes but {size} were written "
                                      f"(truncated or overwritten)")

    # a file the manifest lists but the store lacks is named too
    fs.write_text_atomic(fs.join(step, integrity.MANIFEST_NAME),
                         json.dumps({"version": 1, "files": {**recorded, "state/gone": 7}}))
    assert integrity.verify(step) == f"{fs.join(step, 'state/gone')} is missing"

    # quarantine: moved inside the same store, every file kept, the source gone
    corrupt = fs.join(workdir, "checkpoints_corrupt")
    dest = integrity.quarantine(step, corrupt)
    assert dest.startswith(corrupt + "/10.")
    assert not fs.exists(step) and fs.listdir(fs.join(workdir, "checkpoints")) == []
    kept = fs.file_sizes(dest)
    assert {rel: n for rel, n in kept.items() if not rel.startswith(integrity.MANIFEST_NAME)} == \
        {**recorded, victim: size // 2}
    # a second quarantine of the same name does not overwrite the first
    step = _upload(workdir, real_checkpoint)
    assert integrity.quarantine(step, corrupt) != dest and len(fs.listdir(corrupt)) == 2


def test_unreadable_manifest_is_an_integrity_failure(workdir, real_checkpoint):
    step = _upload(workdir, real_checkpoint)
    fs.write_text_atomic(fs.join(step, integrity.MANIFEST_NAME), "{not json")
    assert integrity.verify(step).startswith(f"{fs.join(step, integrity.MANIFEST_NAME)} is unreadable")


def test_metrics_log_and_run_files_go_through_the_workdir_filesystem(tmp_path, monkeypatch):
    """metrics.jsonl (appended), loss_curve.png and summary-style files land in the bucket, not in a local gs:/."""
    from gopher_jax.train.metrics_log import MetricsLog

    monkeypatch.chdir(tmp_path)
    memory = fsspec.filesystem("memory")
    fs.register_backend("gs", fs.FsspecBackend(memory))
    try:
        log = MetricsLog("gs://bucket/run-metrics", enabled=True)
        log.write({"step": 1, "loss": 3.0})
        log.write({"step": 2, "loss": 2.5, "eval_loss": 2.7})
        assert [r["step"] for r in log.records()] == [1, 2]
        png = log.plot("gs://bucket/run-metrics/loss_curve.png")
        assert fs.read_text("gs://bucket/run-metrics/metrics.jsonl").count("\n") == 2
        assert memory.cat_file("/bucket/run-metrics/loss_curve.png")[:4] == b"\x89PNG" and png.startswith("gs://")
        fs.write_text_atomic("gs://bucket/run-metrics/summary.json", "{}")
        assert fs.exists("gs://bucket/run-metrics/summary.json")
        assert not (tmp_path / "gs:").exists()
    finally:
        fs.register_backend("gs", None)
