"""Where and when a benchmark ran, recorded in its results JSON so every figure rendered from it
(benchmarks/render_docs.py) names its host and date: the product's one host record
(gopher_jax/host_record.py) with this checkout's commit."""
from __future__ import annotations

import os
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)


def host_info() -> dict:
    """Returns {cpu_model, cpu_flags, cpu_count, load_avg_1m, date (UTC ISO 8601), jax, libtpu, commit}."""
    from gopher_jax.host_record import host_record

    return host_record(commit_of=_REPO)
