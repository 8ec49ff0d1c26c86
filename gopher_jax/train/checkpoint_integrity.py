"""File-size manifests that let a restore name the truncated or missing file of a checkpoint.

orbax commits a checkpoint atomically (a temp dir renamed when complete) but does not check the
bytes on restore: a truncated array file surfaces as an opaque TensorStore error. After a save is
complete we record every file's size in `<step>/MANIFEST_NAME`; `verify` compares against it.
Sizes, not hashes: checking is a directory listing, even for large checkpoints.

All file access goes through workdir_fs, so gs:// workdirs get manifests and quarantine too.
"""
from __future__ import annotations

import json
import re
import time

from gopher_jax.train import workdir_fs as fs

MANIFEST_NAME = "gopher_jax_files.json"
TMP_MARKER = ".orbax-checkpoint-tmp"


def _files(step_dir: str) -> dict[str, int]:
    # Leaves out the manifest itself and its .tmp while being written.
    return {rel: size for rel, size in fs.file_sizes(step_dir).items() if not rel.startswith(MANIFEST_NAME)}


def write_manifest(step_dir: str) -> None:
    """Records the sizes of all files under a complete checkpoint directory (atomically)."""
    fs.write_text_atomic(fs.join(step_dir, MANIFEST_NAME), json.dumps({"version": 1, "files": _files(step_dir)}))


def has_manifest(step_dir: str) -> bool:
    """Returns whether `write_manifest` completed for this checkpoint."""
    return fs.exists(fs.join(step_dir, MANIFEST_NAME))


def verify(step_dir: str) -> str | None:
    """Returns None if every recorded file is present with its size, else a sentence naming the file.

    A checkpoint without a manifest (saved, then killed before sealing) passes: orbax's own checks
    apply. Filesystem errors (EIO, a timed-out bucket) propagate for the caller to classify.
    """
    manifest = fs.join(step_dir, MANIFEST_NAME)
    if not fs.exists(manifest):
        return None
    try:
        recorded = json.loads(fs.read_text(manifest))["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"{manifest} is unreadable ({e})"
    now = _files(step_dir)
    for rel, size in sorted(recorded.items()):
        path = fs.join(step_dir, rel)
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
    fs.makedirs(corrupt_root)
    dest = fs.join(corrupt_root, f"{fs.basename(path)}.{time.strftime('%Y%m%d-%H%M%S')}")
    n = 0
    while fs.exists(dest + (f".{n}" if n else "")):
        n += 1
    dest += f".{n}" if n else ""
    fs.move_tree(path, dest)
    return dest
