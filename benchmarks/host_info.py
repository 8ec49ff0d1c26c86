"""Where and when a benchmark ran, recorded in its results JSON so every figure rendered from it
(benchmarks/render_docs.py) names its host and date."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess


def cpu_model() -> str:
    """The CPU model name (/proc/cpuinfo's "model name", else platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def git_commit(repo: str) -> str | None:
    """The checkout's HEAD commit (short), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def host_info() -> dict:
    """Returns {cpu_model, cpu_count, load_avg_1m, date (UTC ISO 8601), commit, jax, libtpu}."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "commit": git_commit(repo), "jax": version("jax"), "libtpu": version("libtpu")}
