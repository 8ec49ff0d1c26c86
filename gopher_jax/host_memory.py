"""Transparent huge pages for XLA's host buffers: the CPU train step's page faults, removed.

XLA's CPU runtime allocates every step's temporaries (2.7 GB for gopher_44m at seq 512, batch 8)
with malloc, and glibc serves blocks that large with a fresh mmap that is unmapped again on free. So
each step first-touches every page of its working set: about 600,000 minor page faults per step,
~10-15% of the step's time on a 2-core host (benchmarks/README.md). With transparent huge pages in
the kernel's `madvise` mode (the common default), glibc >= 2.35 asks for 2 MiB pages when the
`glibc.malloc.hugetlb=1` tunable is set, which cuts the faults 40-fold. Tunables are read once
when the process starts, so the `gopher-jax` command re-executes itself with the tunable set
before it imports anything heavy. Opt out with GOPHER_JAX_HUGEPAGES=0.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = "/sys/kernel/mm/transparent_hugepage/enabled"
OPT_OUT = "GOPHER_JAX_HUGEPAGES"


def thp_mode(path: str = THP_SETTING) -> str | None:
    """Returns the kernel's transparent-huge-page mode ('always', 'madvise', 'never'), or None."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def _glibc_has_tunable() -> bool:
    name, version = platform.libc_ver()
    try:
        return name == "glibc" and tuple(int(x) for x in version.split(".")[:2]) >= (2, 35)
    except ValueError:
        return False


def needs_tunable(environ=os.environ, mode: str | None = None) -> bool:
    """Whether this process would gain from restarting with TUNABLE (madvise THP, glibc >= 2.35,
    the tunable not yet set, and not opted out)."""
    if environ.get(OPT_OUT, "1") == "0" or active(environ):
        return False
    mode = thp_mode() if mode is None else mode
    return sys.platform.startswith("linux") and mode == "madvise" and _glibc_has_tunable()


def with_tunable(environ=os.environ) -> dict:
    """Returns a copy of `environ` with TUNABLE appended to GLIBC_TUNABLES (other tunables kept)."""
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(t for t in (env.get("GLIBC_TUNABLES", ""), TUNABLE) if t)
    return env


def active(environ=os.environ) -> bool:
    """Whether this process runs with TUNABLE set (it can only take effect at process start)."""
    return TUNABLE in environ.get("GLIBC_TUNABLES", "")


def reexec_with_hugepages(python_args: list[str]) -> None:
    """Replaces this process with `python *python_args` (e.g. ['-m', 'gopher_jax.cli', 'train', ...])
    under TUNABLE when needs_tunable(); returns, doing nothing, otherwise. The process id, open
    files and signal handlers' targets stay the same. Call it before jax is imported."""
    if needs_tunable():
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *python_args], with_tunable())
