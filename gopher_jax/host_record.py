"""Where and when something ran: the one host record that results files, reports and corpus builds carry.

A figure is a claim about a machine; `benchmarks/render_docs.py` prints a results file's host beside every
figure it renders, `gopher-jax scaling reproduce` writes it into reproduce.json, and
`gopher-jax data build-scaling-corpus` into corpus.json.
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import subprocess


def git_commit(repo: str) -> str | None:
    """Returns the short HEAD commit of the git checkout at `repo`, or None outside one."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def host_record(commit_of: str | None = None) -> dict:
    """Returns {cpu_model, cpu_flags (the matmul-relevant ones: AMX, AVX512-BF16, ...), cpu_count,
    load_avg_1m, date (UTC, ISO 8601), jax, libtpu}, plus `commit` (short HEAD of the checkout at
    `commit_of`) when a path is given."""
    from gopher_jax.kernels.build import host_description

    record = {**host_description(), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "jax": _version("jax"), "libtpu": _version("libtpu")}
    if commit_of is not None:
        record["commit"] = git_commit(commit_of)
    return record
