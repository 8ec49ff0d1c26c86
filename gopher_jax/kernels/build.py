"""Builds a C++ FFI kernel into a shared library once per host, cached on disk.

The library lands in ~/.cache/gopher_jax/kernels/<hash>/ (GOPHER_JAX_KERNEL_CACHE overrides the
root). The hash covers the source, jax/jaxlib versions, the compiler and its flags and the CPU's
feature flags (the code is built with -march=native, valid only on CPUs with the same features),
so a host with other features builds its own copy. Parallel processes serialise on a file lock.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax

# -ffast-math lets g++ vectorise reductions; -fno-finite-math-only keeps NaN/Inf propagating (the
# spike guard must see them).
BASE_FLAGS = ("-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-std=c++17", "-fPIC",
              "-shared", "-w")


def compiler() -> str | None:
    """Returns the C++ compiler to use (CXX, else g++ or c++ on PATH), or None."""
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def cpu_signature() -> str:
    """Returns the CPU's feature-flags line (what -march=native code depends on)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    import platform
    return platform.machine()


def cache_root() -> Path:
    """Returns the directory holding built kernels and per-host probe results."""
    root = os.environ.get("GOPHER_JAX_KERNEL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "gopher_jax" / "kernels"


def host_key(*parts: bytes) -> str:
    """Returns a 20-hex-digit key over `parts`, jax/jaxlib versions and this CPU's features."""
    import jaxlib
    key = hashlib.sha256()
    for part in (*parts, jax.__version__.encode(), jaxlib.__version__.encode(), cpu_signature().encode()):
        key.update(part)
        key.update(b"\0")
    return key.hexdigest()[:20]


def source_texts(source: Path) -> tuple[bytes, ...]:
    """Returns the bytes of `source` and of every header it includes from its own directory
    (`#include "name.h"`, and the headers those include), so an edit to a shared header rebuilds
    every kernel that uses it."""
    texts, seen, pending = [], set(), [source]
    while pending:
        path = pending.pop(0)
        if path.name in seen or not path.exists():
            continue
        seen.add(path.name)
        texts.append(path.read_bytes())
        pending += [source.with_name(n.decode()) for n in re.findall(rb'^#include "([\w.]+)"', texts[-1], flags=re.M)]
    return tuple(texts)


def build_library(source: Path, name: str, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compiles `source` into lib<name>.so (or returns the cached copy); raises RuntimeError why not."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    include = jax.ffi.include_dir()
    if not (Path(include) / "xla" / "ffi" / "api" / "ffi.h").exists():
        raise RuntimeError(f"XLA FFI headers not found under {include}")
    flags = BASE_FLAGS + tuple(extra_flags)
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    out_dir = cache_root() / host_key(*source_texts(source), cxx.encode(), version.encode(),
                                      " ".join(flags).encode())
    lib = out_dir / f"lib{name}.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel pytest workers: one builds, the rest wait
        try:
            if lib.exists():
                return lib
            fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
            os.close(fd)
            cmd = [cxx, *flags, f"-I{include}", str(source), "-o", tmp, "-lpthread"]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                os.unlink(tmp)
                raise RuntimeError(f"{shlex.join(cmd)} failed:\n{proc.stderr[-4000:]}")
            os.chmod(tmp, 0o755)
            os.replace(tmp, lib)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return lib


# CPU features that decide which GEMM can reach the matmul units (recorded beside benchmark numbers).
MATMUL_CPU_FLAGS = ("amx_tile", "amx_bf16", "avx512_bf16", "avx512f", "avx512_vnni", "avx2", "fma")


def host_description() -> dict:
    """Returns {"cpu_model", "cpu_flags"}: /proc/cpuinfo's model name and its MATMUL_CPU_FLAGS present."""
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = set(cpu_signature().split(":", 1)[-1].split())
    return {"cpu_model": model, "cpu_flags": [f for f in MATMUL_CPU_FLAGS if f in flags]}
