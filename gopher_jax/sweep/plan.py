"""Expanding a spec into runs: the product of the axes (zipped axes move together), each run named
by its arm's labels plus a short hash of its full bindings, and the plan file `DIR/sweep.json`.

The hash covers the *contents* of every gin file and every binding, in order, so the same run gets the
same name on any clone (paths differ, contents do not) and a run whose config changed gets a new one:
a finished run is found again by name and never rerun; an edited one is a new run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re

from gopher_jax.sweep.spec import SweepSpec, find_axis
from gopher_jax.train import workdir_fs

PLAN_FILE = "sweep.json"
HASH_CHARS = 8


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One training run of the sweep."""

    name: str  # directory name under the sweep directory
    arm: str  # labels of every non-seed axis, 'position=rope' ('base' if only seeds vary)
    values: dict  # {axis name: label}
    seed: str | None  # label on the seed axis (None if the spec has none)
    gin_files: tuple[str, ...]
    params: tuple[str, ...]
    config_hash: str

    def train_args(self, workdir: str) -> list[str]:
        """Returns the `gopher-jax train` arguments of this run (always --resume: a reclaimed run continues)."""
        return ([f"--gin_file={f}" for f in self.gin_files] + [f"--gin_param={p}" for p in self.params]
                + [f"--workdir={workdir}", "--resume", "--no_progress"])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", str(text)).strip("-") or "x"


def config_hash(gin_files, params) -> str:
    """Returns a short sha256 of the gin files' contents and the bindings, in order."""
    from gopher_jax.gin_utils import resolve_gin_file

    h = hashlib.sha256()
    for f in gin_files:
        path = f if workdir_fs.scheme(f) else resolve_gin_file(f)
        h.update(b"file\0" + workdir_fs.read_text(path).encode() + b"\0")
    for p in params:
        h.update(b"param\0" + " ".join(p.split()).encode() + b"\0")
    return h.hexdigest()[:HASH_CHARS]


def _groups(spec: SweepSpec) -> list[list[int]]:
    """Returns axis indices grouped: each zip is one group, every other axis its own."""
    names = [a.name for a in spec.axes]
    groups, zipped = [], set()
    for i, a in enumerate(spec.axes):
        if a.name in zipped:
            continue
        z = next((z for z in spec.zip if a.name in z), None)
        if z is None:
            groups.append([i])
        else:
            groups.append([names.index(n) for n in z])
            zipped |= set(z)
    return groups


def expand(spec: SweepSpec) -> list[RunPlan]:
    """Returns every run of the spec, in axis order (the seed axis varies fastest if it is last)."""
    groups = _groups(spec)
    choices = [range(len(spec.axes[g[0]].values)) for g in groups]
    runs = []
    for combo in itertools.product(*choices):
        picked = {}
        for g, k in zip(groups, combo):
            for i in g:
                picked[i] = spec.axes[i].values[k]
        files, params, values, arm_parts, name_parts, seed = list(spec.base_gin_files), [], {}, [], [], None
        for i, axis in enumerate(spec.axes):
            v = picked[i]
            files += v.gin_files
            params += v.params
            values[axis.name] = v.label
            name_parts.append(f"{_safe(axis.short)}-{_safe(v.label)}")
            if axis.name == spec.seed_axis:
                seed = v.label
            else:
                arm_parts.append(f"{axis.short}={v.label}")
        params = list(spec.base_params) + params  # the axes' bindings win over the base's
        h = config_hash(files, params)
        runs.append(RunPlan("_".join(name_parts + [h]), ",".join(arm_parts) or "base", values, seed,
                            tuple(files), tuple(params), h))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("two runs of the sweep got the same name; make the axis labels distinct")
    return runs


def baseline_arm(spec: SweepSpec, runs: list[RunPlan]) -> str:
    """Returns the baseline arm's name: the spec's baseline labels, else the first arm."""
    if not spec.baseline:
        return runs[0].arm
    want = {find_axis(spec, k).name: v for k, v in spec.baseline.items()}
    for r in runs:
        if all(r.values[k] == v for k, v in want.items()):
            return r.arm
    raise ValueError(f"no run matches the baseline {spec.baseline}")


def write_plan(out: str, spec: SweepSpec, runs: list[RunPlan], extra: dict | None = None) -> str:
    """Writes DIR/sweep.json (the runs, their bindings, the baseline) and each run's sweep_run.json."""
    workdir_fs.makedirs(out)
    plan = {"baseline": baseline_arm(spec, runs), "seed_axis": spec.seed_axis,
            "axes": {a.name: [v.label for v in a.values] for a in spec.axes},
            "runs": [dataclasses.asdict(r) for r in runs], **(extra or {})}
    for r in runs:
        d = workdir_fs.join(out, r.name)
        workdir_fs.makedirs(d)
        workdir_fs.write_text_atomic(workdir_fs.join(d, "sweep_run.json"), json.dumps(dataclasses.asdict(r), indent=1))
    path = workdir_fs.join(out, PLAN_FILE)
    workdir_fs.write_text_atomic(path, json.dumps(plan, indent=1))
    return path


def load_plan(out: str) -> tuple[dict, list[RunPlan]]:
    """Returns (plan dict, runs) from DIR/sweep.json."""
    path = workdir_fs.join(out, PLAN_FILE)
    if not workdir_fs.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {out} is not a sweep directory "
                                f"(`gopher-jax sweep --spec=FILE --out={out}` creates it)")
    plan = json.loads(workdir_fs.read_text(path))
    runs = [RunPlan(**{**r, "gin_files": tuple(r["gin_files"]), "params": tuple(r["params"])}) for r in plan["runs"]]
    return plan, runs
