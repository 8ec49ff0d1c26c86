"""Where the test suite's 10 minutes go: CPU seconds (the process and its children) and wall seconds per test.

    python benchmarks/suite_cpu.py --json benchmarks/results/suite_cpu_profile.json [--top 30] [-- PYTEST ARGS]

Runs README command 2's pytest (`-n 2 tests` unless PYTEST ARGS are given) with a plugin that reads
getrusage (self + waited-for children: the `gopher-jax` subprocesses tests start) before and after
each test, on every xdist worker. The suite is CPU-bound on 2 cores (both busy ~90-95% of the run),
so a test's CPU seconds, not its wall seconds (which grow with whatever the other worker runs), say
what removing or shrinking it would save. A module-scoped fixture is charged to the first test that
uses it. `--aggregate DIR` summarises an earlier run's per-worker files instead of running pytest.
The JSON has the host (benchmarks/host_info.py), the totals, every test's figures, and per file sums.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_ENV = "GOPHER_JAX_SUITE_CPU_DIR"


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


try:  # the plugin half: loaded into pytest (and each xdist worker) with `-p suite_cpu`
    import pytest

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        out = os.environ.get(OUT_ENV)
        c0, t0 = _cpu_seconds(), time.time()
        yield
        if out:
            with open(os.path.join(out, f"worker_{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps({"test": item.nodeid, "cpu_s": _cpu_seconds() - c0, "wall_s": time.time() - t0,
                                    "start": t0}) + "\n")
except ImportError:  # running as a script without pytest installed: only --aggregate works
    pass


def aggregate(directory: str, top: int) -> dict:
    """Returns the summary of the per-worker files in `directory`: totals, per test, per file."""
    rows = [json.loads(line) for path in sorted(glob.glob(os.path.join(directory, "worker_*.jsonl")))
            for line in open(path)]
    per_file = collections.defaultdict(lambda: {"cpu_s": 0.0, "wall_s": 0.0, "tests": 0})
    for r in rows:
        entry = per_file[r["test"].split("::")[0]]
        entry["cpu_s"] += r["cpu_s"]
        entry["wall_s"] += r["wall_s"]
        entry["tests"] += 1
    by_cpu = sorted(rows, key=lambda r: -r["cpu_s"])
    total = sum(r["cpu_s"] for r in rows)
    return {"tests": len(rows), "cpu_s": total, "worker_wall_s": sum(r["wall_s"] for r in rows),
            "top_tests_share_of_cpu": sum(r["cpu_s"] for r in by_cpu[:top]) / total if total else 0.0,
            "per_test": [{k: r[k] for k in ("test", "cpu_s", "wall_s")} for r in by_cpu],
            "per_file": dict(sorted(per_file.items(), key=lambda kv: -kv[1]["cpu_s"]))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", default="", help="write the summary here")
    p.add_argument("--top", type=int, default=30, help="tests to print, dearest first")
    p.add_argument("--aggregate", default="", help="summarise this directory of worker files; run nothing")
    p.add_argument("pytest_args", nargs="*", help="after --: pytest arguments (default: -n 2 tests)")
    args = p.parse_args(argv)
    sys.path.insert(0, HERE)
    from host_info import host_info

    directory, pytest_wall, exit_code = args.aggregate, None, 0
    if not directory:
        directory = tempfile.mkdtemp(prefix="gopher_jax_suite_cpu_")
        env = {**os.environ, OUT_ENV: directory, "PYTHONPATH": os.pathsep.join(
            [HERE] + [path for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path])}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", "-p", "no:cacheprovider",
               *(args.pytest_args or ["-n", "2", "tests"])]
        print("running:", " ".join(cmd), flush=True)
        t0 = time.time()
        exit_code = subprocess.call(cmd, cwd=os.path.dirname(HERE), env=env)
        pytest_wall = time.time() - t0
    summary = {"host": host_info(), "pytest_wall_s": pytest_wall, "pytest_exit": exit_code,
               **aggregate(directory, args.top)}
    print(f"{summary['tests']} tests, {summary['cpu_s']:.0f} CPU-s, {summary['worker_wall_s']:.0f} worker wall-s"
          + (f", pytest {pytest_wall:.0f} s wall" if pytest_wall else "")
          + f"; the {args.top} dearest tests: {100 * summary['top_tests_share_of_cpu']:.0f}% of the CPU")
    for r in summary["per_test"][:args.top]:
        print(f"{r['cpu_s']:8.1f} CPU-s {r['wall_s']:8.1f} wall-s  {r['test']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
