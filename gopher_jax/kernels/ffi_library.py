"""One C++ kernel source as a loaded library whose handlers are registered as XLA FFI targets.

Shared by the CPU kernels (cpu_attention, cpu_gemm, cpu_xent): the library is built on first use
(kernels/build.py, cached per host), each handler symbol is registered under its target name, and
any failure (no compiler, a build error, the kernel switched off by its environment variable) is
kept as the reason, so callers fall back to XLA and say why.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Callable

import jax

from gopher_jax.kernels.build import build_library


class FfiLibrary:
    """`source` built as lib<name>.so with `targets` ({FFI target name: handler symbol}) registered
    for the CPU; `disable_env` set to anything but '' or '0' turns it off; `extra_flags()` adds
    compiler flags (read at the first load)."""

    def __init__(self, source: Path, name: str, targets: dict[str, str], disable_env: str,
                 extra_flags: Callable[[], tuple[str, ...]] = tuple):
        self.source, self.name, self.targets, self.disable_env = source, name, dict(targets), disable_env
        self._extra_flags = extra_flags
        self._lock = threading.Lock()
        self._state: dict = {}

    def load(self) -> bool:
        """Builds and registers the library once; returns whether it is usable."""
        with self._lock:
            if "ok" in self._state:
                return self._state["ok"]
            if os.environ.get(self.disable_env, "") not in ("", "0"):
                self._state.update(ok=False, reason=f"disabled by {self.disable_env}")
                return False
            try:
                path = build_library(self.source, self.name, self._extra_flags())
                lib = ctypes.CDLL(str(path))
                for target, symbol in self.targets.items():
                    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
            except Exception as e:  # noqa: BLE001 - any failure means "use the fallback"
                self._state.update(ok=False, reason=f"{type(e).__name__}: {e}")
                return False
            self._state.update(ok=True, reason="", path=str(path), lib=lib)
            return True

    def available(self) -> bool:
        """True if the library is built and registered (builds it on the first call)."""
        return self.load()

    def unavailable_reason(self) -> str:
        """Why `available()` is False ('' if it is True)."""
        self.load()
        return self._state.get("reason", "")

    def path(self) -> str | None:
        """The built library's path (None if unavailable)."""
        self.load()
        return self._state.get("path")

    def flag(self, symbol: str) -> bool:
        """The library's `int symbol(void)` as a bool (False if unavailable), e.g. a CPU-feature query."""
        return self.load() and bool(getattr(self._state["lib"], symbol)())
