"""Leases: write-if-absent on local paths and on a gs:// stand-in; claim, renew, expiry, reclaim; racing
claimers never both win."""
import threading
import time

import fsspec
import pytest

from gopher_jax.sweep import leases, status
from gopher_jax.train import workdir_fs


@pytest.fixture(params=["local", "gs"])
def run_dir(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "run")
        return
    workdir_fs.register_backend("gs", workdir_fs.FsspecBackend(fsspec.filesystem("memory")))
    d = f"gs://bucket/{tmp_path.name}/run"
    try:
        yield d
    finally:
        workdir_fs.register_backend("gs", None)


def test_create_exclusive(run_dir):
    workdir_fs.makedirs(run_dir)
    p = workdir_fs.join(run_dir, "x.json")
    assert leases.create_exclusive(p, b"first") is True
    assert leases.create_exclusive(p, b"second") is False
    assert workdir_fs.read_text(p) == "first"


def test_claim_renew_release_expire(run_dir):
    a = leases.claim(run_dir, "A", ttl_s=30)
    assert a is not None and a.generation == 0
    assert leases.claim(run_dir, "B", ttl_s=30) is None  # held
    assert status.run_status(run_dir) == status.RUNNING
    assert leases.renew(a)
    leases.release(a)  # preempted: free at once
    assert status.run_status(run_dir) == status.LEFT
    b = leases.claim(run_dir, "B", ttl_s=0.2)
    assert b.generation == 1
    time.sleep(0.3)  # B died: its lease expires
    assert status.run_status(run_dir) == status.LEFT
    c = leases.claim(run_dir, "C", ttl_s=30)
    assert c.generation == 2
    assert leases.renew(b) is False  # B learns it lost the run and writes nothing
    assert leases.newest(run_dir)[1]["owner"] == "C"
    assert leases.generations(run_dir) == [0, 1, 2]  # the claim history stays


def test_racing_claimers_one_winner_per_generation(tmp_path):
    """16 threads claim the same free run at once, 20 times over: exactly one wins each time."""
    run_dir = str(tmp_path / "run")
    for round_ in range(20):
        barrier, wins = threading.Barrier(16), []

        def claimer(i):
            barrier.wait()
            lease = leases.claim(run_dir, f"w{i}", ttl_s=30)
            if lease is not None:
                wins.append(lease)
        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1 and wins[0].generation == round_
        leases.release(wins[0])
