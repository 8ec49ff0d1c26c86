"""Atomic file writes: a temp file in the same folder, then rename.

Concurrent processes (parallel tests, several hosts sharing a cache) never see half a file.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, IO


def atomic_write(path: str, write: Callable[[IO], None], *, binary: bool = False) -> None:
    """Calls write(f) on a temp file beside `path`, then renames it into place (0644)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; caches are shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
