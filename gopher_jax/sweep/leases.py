"""Leases on runs, in the run's own directory, so that workers anywhere share a sweep directory
(local, NFS or gs://) with no coordinator: marin's `claim_and_run`, built on write-if-absent.

A run's lease is a numbered file `lease.<generation>.json` holding the owner and an expiry time.
The newest generation is the lease. To claim a run, a worker creates generation g+1 *if it does not
exist* (the only atomic step, and the only one every store offers): when the newest lease is free
(released, or expired because its worker died), every racer tries the same g+1 and exactly one wins.
The owner renews by rewriting its own generation; it learns it lost the run (it stalled past
expiry and someone claimed g+1) when g+1 appears, and stops. Generations are never deleted: they
are the run's claim history (who trained it, when).

Write-if-absent per store: local paths use link(2) of a written temp file (atomic, and a reader never
sees a half-written lease); fsspec filesystems open with mode "xb"; gs:// through tf.io.gfile has no
precondition, so there the google-cloud-storage client writes with `if_generation_match=0`.
Expiry compares wall clocks of different machines: keep the TTL well above their skew (default 120 s).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
import uuid

from gopher_jax.train import workdir_fs

DEFAULT_TTL_S = 120.0
_LEASE = re.compile(r"^lease\.(\d+)\.json$")


def create_exclusive(path: str, data: bytes) -> bool:
    """Writes `data` to `path` only if nothing is there; returns whether this call created it."""
    backend = workdir_fs.backend_for(path)
    if isinstance(backend, workdir_fs.LocalBackend):
        local = path[len("file://"):] if path.startswith("file://") else path
        tmp = f"{local}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, local)  # fails if `local` exists; the file appears whole
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)
    if isinstance(backend, workdir_fs.FsspecBackend):
        try:
            with backend.fs.open(backend._p(path), "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
    if workdir_fs.scheme(path) == "gs":
        return _gcs_create_if_absent(path, data)
    raise NotImplementedError(f"no write-if-absent for {path!r}: register an fsspec filesystem for its scheme "
                              f"(workdir_fs.register_backend) or use a local path or gs://")


def _gcs_create_if_absent(path: str, data: bytes) -> bool:
    try:
        from google.api_core.exceptions import PreconditionFailed
        from google.cloud import storage
    except ImportError as e:
        raise ImportError("a gs:// sweep directory needs google-cloud-storage for its leases (write-if-absent): "
                          "pip install google-cloud-storage") from e
    bucket, _, name = path[len("gs://"):].partition("/")
    blob = storage.Client().bucket(bucket).blob(name)
    try:
        blob.upload_from_string(data, if_generation_match=0)
        return True
    except PreconditionFailed:
        return False


@dataclasses.dataclass
class Lease:
    """A held lease: the run directory, its generation and the owner string."""

    run_dir: str
    generation: int
    owner: str
    ttl_s: float

    @property
    def path(self) -> str:
        return workdir_fs.join(self.run_dir, f"lease.{self.generation}.json")


def make_owner(tag: str = "") -> str:
    """Returns a unique owner string: host, pid and a random suffix (plus an optional tag)."""
    return f"{socket.gethostname()}:{os.getpid()}{':' + tag if tag else ''}:{uuid.uuid4().hex[:6]}"


def _record(owner: str, ttl_s: float, *, released: bool = False, now: float | None = None) -> bytes:
    now = time.time() if now is None else now
    return json.dumps({"owner": owner, "heartbeat": now, "expires": now + ttl_s, "released": released}).encode()


def generations(run_dir: str) -> list[int]:
    """Returns the lease generations present in `run_dir`, ascending."""
    return sorted(int(m.group(1)) for n in workdir_fs.listdir(run_dir) if (m := _LEASE.match(n)))


def newest(run_dir: str) -> tuple[int, dict] | None:
    """Returns (generation, record) of the newest lease, or None if the run was never claimed."""
    gens = generations(run_dir)
    if not gens:
        return None
    g = gens[-1]
    try:
        return g, json.loads(workdir_fs.read_text(workdir_fs.join(run_dir, f"lease.{g}.json")))
    except (ValueError, OSError):  # being renewed this instant on a store without atomic replace
        return g, {"owner": "?", "expires": float("inf"), "released": False}


def is_held(record: dict | None, now: float | None = None) -> bool:
    """Returns whether a lease record is live (not released, not expired)."""
    now = time.time() if now is None else now
    return bool(record) and not record.get("released") and record.get("expires", 0) > now


def claim(run_dir: str, owner: str, ttl_s: float = DEFAULT_TTL_S) -> Lease | None:
    """Claims the run if it is free (never claimed, released, or expired); returns the Lease or None."""
    workdir_fs.makedirs(run_dir)
    cur = newest(run_dir)
    if cur is not None and is_held(cur[1]):
        return None
    g = 0 if cur is None else cur[0] + 1
    lease = Lease(run_dir, g, owner, ttl_s)
    return lease if create_exclusive(lease.path, _record(owner, ttl_s)) else None


def still_mine(lease: Lease) -> bool:
    """Returns whether no newer generation exists (nobody reclaimed the run from this owner)."""
    return not workdir_fs.exists(workdir_fs.join(lease.run_dir, f"lease.{lease.generation + 1}.json"))


def renew(lease: Lease) -> bool:
    """Extends the lease by its TTL; returns False (and writes nothing) if it was lost to another worker."""
    if not still_mine(lease):
        return False
    workdir_fs.write_bytes_atomic(lease.path, _record(lease.owner, lease.ttl_s))
    return True


def release(lease: Lease) -> None:
    """Marks the lease released so another worker may claim the run at once (if it is still ours)."""
    if still_mine(lease):
        workdir_fs.write_bytes_atomic(lease.path, _record(lease.owner, 0.0, released=True))
