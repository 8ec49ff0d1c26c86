"""File-size manifests that let a restore name the truncated or missing file of a checkpoint.

orbax commits a checkpoint atomically (a temp dir renamed when complete) but does not check the
bytes on restore: a truncated array file surfaces as an opaque TensorStore error. After a save is
complete we record every file's size in `<step>/MANIFEST_NAME`; `verify` compares against it.
Sizes, not hashes: checking is a directory listing, even for large checkpoints.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time

MANIFEST_NAME = "gopher_jax_files.json"
TMP_MARKER = ".orbax-checkpoint-tmp"


def _files(step_dir: str) -> dict[str, int]:
    out = {}
    for root, _, names in os.walk(step_dir):
        for n in names:
            path = os.path.join(root, n)
            rel = os.path.relpath(path, step_dir)
            if not rel.startswith(MANIFEST_NAME):  # itself, and its .tmp while being written
                out[rel] = os.path.getsize(path)
    return out


def write_manifest(step_dir: str) -> None:
    """Records the sizes of all files under a complete checkpoint directory (atomically)."""
    tmp = os.path.join(step_dir, MANIFEST_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"version": 1, "files": _files(step_dir)}, f)
    os.replace(tmp, os.path.join(step_dir, MANIFEST_NAME))


def has_manifest(step_dir: str) -> bool:
    """Returns whether `write_manifest` completed for this checkpoint."""
    return os.path.isfile(os.path.join(step_dir, MANIFEST_NAME))


def verify(step_dir: str) -> str | None:
    """Returns None if every recorded file is present with its size, else a sentence naming the file."""
    try:
        with open(os.path.join(step_dir, MANIFEST_NAME)) as f:
            recorded = json.load(f)["files"]
    except FileNotFoundError:
        return None  # saved but not yet sealed (e.g. killed right after); orbax's own checks apply
    except (ValueError, KeyError) as e:
        return f"{os.path.join(step_dir, MANIFEST_NAME)} is unreadable ({e})"
    now = _files(step_dir)
    for rel, size in sorted(recorded.items()):
        path = os.path.join(step_dir, rel)
        if rel not in now:
            return f"{path} is missing"
        if now[rel] != size:
            return f"{path} is {now[rel]} bytes but {size} were written (truncated or overwritten)"
    return None


def describe_error(step_dir: str, error: BaseException) -> str:
    """Returns a one-line description of a restore error, naming a file when the error does."""
    full = str(error)
    text = full.split(" [tensorstore_spec")[0].strip().splitlines()[0] if full.strip() else ""
    files = [f for f in re.findall(r'local file "([^"]+)"', full) if not f.endswith("/")]
    return f"{files[-1] if files else step_dir}: {type(error).__name__}: {text[:300]}"


def quarantine(path: str, corrupt_root: str) -> str:
    """Moves a bad checkpoint (or interrupted temp dir) aside, never deleting it; returns where."""
    os.makedirs(corrupt_root, exist_ok=True)
    dest = os.path.join(corrupt_root, f"{os.path.basename(path)}.{time.strftime('%Y%m%d-%H%M%S')}")
    n = 0
    while os.path.exists(dest + (f".{n}" if n else "")):
        n += 1
    dest += f".{n}" if n else ""
    shutil.move(path, dest)
    return dest
