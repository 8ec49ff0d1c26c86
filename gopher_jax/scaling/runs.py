"""The runs table that every fit reads: one row per (run, point) with N, D, loss, C, step, run.

CSV columns: N (parameters), D (tokens seen), loss (nats/token) are required; C (training FLOPs;
default 6*N*D), step and run (a name grouping rows of one training curve) are optional.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Iterable

import numpy as np

REQUIRED = ("N", "D", "loss")
OPTIONAL = ("C", "step", "run")


@dataclasses.dataclass
class Runs:
    """Columns of a runs table as numpy arrays (float64; `run` is an array of str)."""

    N: np.ndarray
    D: np.ndarray
    loss: np.ndarray
    C: np.ndarray
    step: np.ndarray | None = None
    run: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.N)

    def take(self, idx) -> "Runs":
        """Returns the rows at `idx` (an index array or boolean mask)."""
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Runs(self.N[idx], self.D[idx], self.loss[idx], self.C[idx], pick(self.step), pick(self.run))

    def groups(self) -> dict[str, np.ndarray]:
        """Returns row indices per training run: the `run` column, else one group per N."""
        keys = self.run if self.run is not None else np.array([f"N={n:.6g}" for n in self.N])
        return {k: np.flatnonzero(keys == k) for k in dict.fromkeys(keys.tolist())}


def make_runs(N, D, loss, C=None, step=None, run=None) -> Runs:
    """Returns a validated `Runs`; C defaults to 6*N*D (Chinchilla Sec. 2)."""
    N, D, loss = (np.asarray(x, np.float64).ravel() for x in (N, D, loss))
    C = 6.0 * N * D if C is None else np.asarray(C, np.float64).ravel()
    if not (len(N) == len(D) == len(loss) == len(C)):
        raise ValueError(f"runs columns differ in length: N={len(N)} D={len(D)} loss={len(loss)} C={len(C)}")
    for name, col in (("N", N), ("D", D), ("loss", loss), ("C", C)):
        bad = np.flatnonzero(~np.isfinite(col) | (col <= 0))
        if bad.size:
            raise ValueError(f"runs column {name} must be finite and > 0; row {int(bad[0])} has "
                             f"{name}={float(col[bad[0]])}. Drop or fix that row (diverged run?).")
    step = None if step is None else np.asarray(step, np.float64).ravel()
    run = None if run is None else np.asarray([str(r) for r in run])
    return Runs(N, D, loss, C, step, run)


def read_csv(path: str) -> Runs:
    """Reads a runs CSV (see module docstring); returns `Runs`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"runs file {path!r} does not exist (make one with "
                                f"`gopher-jax scaling sweep --collect` or write columns N,D,loss)")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"runs file {path!r} has no data rows")
    missing = [c for c in REQUIRED if c not in rows[0]]
    if missing:
        raise ValueError(f"runs file {path!r} lacks column(s) {missing}; it has {list(rows[0])}. "
                         f"Required: {REQUIRED}, optional: {OPTIONAL}")

    def col(name, cast=float):
        if name not in rows[0] or any(r[name] in ("", None) for r in rows):
            return None
        try:
            return [cast(r[name]) for r in rows]
        except ValueError as e:
            raise ValueError(f"runs file {path!r}: column {name} has a non-number ({e})") from e

    return make_runs(col("N"), col("D"), col("loss"), col("C"), col("step"), col("run", str))


def write_csv(runs: Runs, path: str) -> None:
    """Writes `runs` as CSV with columns run, step, N, D, C, loss (those present)."""
    cols = [("run", runs.run), ("step", runs.step), ("N", runs.N), ("D", runs.D), ("C", runs.C),
            ("loss", runs.loss)]
    cols = [(k, v) for k, v in cols if v is not None]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([k for k, _ in cols])
        for i in range(len(runs)):
            w.writerow([_fmt(v[i]) for _, v in cols])


def _fmt(x) -> str:
    if isinstance(x, (str, np.str_)):
        return str(x)
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


def read_metrics(path: str, *, loss_key: str = "loss") -> list[dict]:
    """Returns the training-loss records of a metrics.jsonl: dicts with `step` and `loss`, by step.

    Lines without `loss_key` (eval lines, headers) are skipped; a truncated last line (a run
    killed mid-write) is ignored rather than failing the whole sweep.
    """
    out = []
    with open(path) as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1} is not JSON: {line[:80]!r}")
        if "step" in rec and loss_key in rec and _finite(rec[loss_key]):
            out.append({"step": int(rec["step"]), "loss": float(rec[loss_key])})
    return sorted(out, key=lambda r: r["step"])


def final_eval_loss(path: str) -> float | None:
    """Returns the last held-out loss in a metrics.jsonl (a key with 'eval' and 'loss'), else None."""
    last = None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            keys = [k for k in rec if "eval" in k.lower() and "loss" in k.lower() and _finite(rec[k])]
            if keys:
                last = float(rec[sorted(keys)[0]])
    return last


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def concat(parts: Iterable[Runs]) -> Runs:
    """Returns the rows of several `Runs` tables, in order."""
    parts = list(parts)
    cat = lambda name: None if any(getattr(p, name) is None for p in parts) else np.concatenate(  # noqa: E731
        [getattr(p, name) for p in parts])
    return Runs(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("N", "D", "loss", "C")),
                cat("step"), cat("run"))
