"""IsoFLOP sweeps: FLOP budgets x model sizes, generated as a sweep spec and run on the sweep runner
(gopher_jax/sweep: leases, resume, --workers, Ray); their losses are collected for `scaling fit`.

The spec has two zipped axes, `budget` and `size`: one value pair per (budget, size) cell long
enough to train, the size setting ModelConfig.* and the budget the cell's train.steps.

Layout of a sweep directory:
  manifest.json           the plan: every run's sizes, N, steps, tokens, FLOPs and command
  sweep.json              the same runs as the sweep runner's plan (`gopher-jax sweep --out DIR` resumes it)
  <run>/overrides.gin     the run's bindings (ModelConfig.* sizes, train.steps / batch_size / seq_len)
  <run>/metrics.jsonl     written by the run's `gopher-jax train --workdir=<run>`
  <run>/DONE              written by the sweep worker when training exited 0
  runs.csv, curves.csv    written by `collect`: final losses (approaches 2, 3, Kaplan) and
                          whole training curves (approach 1)
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex

import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.scaling.flops import flops_per_token
from gopher_jax.scaling.params import count_params
from gopher_jax.scaling.runs import Runs, concat, final_eval_loss, make_runs, read_metrics, write_csv

# Loss of a finished run: the held-out eval loss if the run logged one, else the mean of the last
# few training losses (one logged batch is noisy at tiny scale).
FINAL_TRAIN_POINTS = 3


@dataclasses.dataclass(frozen=True)
class Size:
    """One model shape of the sweep: layers x width, heads = width / head_dim."""

    num_layers: int
    d_model: int
    head_dim: int = 32

    @classmethod
    def parse(cls, text: str, head_dim: int = 32) -> "Size":
        """Parses 'LxD' (e.g. '4x128')."""
        try:
            layers, width = (int(x) for x in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"model size {text!r} is not LAYERSxWIDTH, e.g. 4x128") from None
        if width % head_dim:
            raise ValueError(f"model size {text!r}: width {width} is not a multiple of head_dim={head_dim}")
        return cls(layers, width, head_dim)

    def overrides(self) -> dict[str, int]:
        """Returns the ModelConfig fields this size sets."""
        return {"num_layers": self.num_layers, "d_model": self.d_model,
                "num_heads": self.d_model // self.head_dim, "head_dim": self.head_dim}


def _size_params(cell: dict) -> list[str]:
    """Returns the bindings a cell's size sets: ModelConfig fields, then its per-size optimizer ones."""
    return ([f"ModelConfig.{k} = {v}" for k, v in cell["model"].items()]
            + [f"{k} = {v}" for k, v in cell.get("hparams", {}).items()])


def _cell_params(cell: dict, seq_len: int, batch_size: int) -> list[str]:
    """Returns the bindings of one (budget, size) cell, in the order overrides.gin lists them."""
    return (_size_params(cell) + _budget_params(cell["steps"], seq_len, batch_size))


def _budget_params(steps: int, seq_len: int, batch_size: int) -> list[str]:
    return ([f"train.steps = {steps}", f"train.batch_size = {batch_size}", f"train.seq_len = {seq_len}",
               # held-out loss once, at the end (it is the loss the fits read); one checkpoint
               "train.eval_every = 0", f"train.checkpoint_every = {steps}"])


def isoflop_spec(cells: list[dict], run_gin, model_gin, seq_len: int, batch_size: int, base_params=()):
    """Returns the sweep spec of the cells: axes budget x size, zipped (each cell one pair)."""
    from gopher_jax.sweep.spec import Axis, AxisValue, SweepSpec

    budget = Axis("budget", tuple(AxisValue(f"{c['budget']:.3g}".replace("+", ""), (),
                                            tuple(_budget_params(c["steps"], seq_len, batch_size))) for c in cells))
    size = Axis("size", tuple(AxisValue(f"{c['model']['num_layers']}x{c['model']['d_model']}", (),
                                        tuple(_size_params(c))) for c in cells))
    return SweepSpec(tuple(run_gin) + tuple(model_gin), tuple(base_params), (budget, size), (("budget", "size"),))


def plan_sweep(budgets, sizes, *, base: ModelConfig, out_dir: str, run_gin=(), model_gin=(),
               seq_len: int = 128, batch_size: int = 8, method: str = "chinchilla", min_steps: int = 20,
               size_rule=None, sizes_per_budget: dict | None = None, base_params=()) -> dict:
    """Returns the manifest: one run per (budget, size) whose step count spends the budget.

    `size_rule(d_model, n_params, tokens_per_step) -> {gin binding: value}` adds per-size settings
    (e.g. gopher_jax.scaling.size_hparams.size_bindings) to every run of that size.
    `sizes_per_budget` ({budget: [Size, ...]}) gives a budget its own sizes instead of `sizes`.
    `base_params` are gin bindings every run gets (after the gin files, before its cell's bindings).
    Runs that would take fewer than `min_steps` steps are left out (listed under 'skipped'). Each
    run's name and workdir are the sweep runner's (arm labels + config hash, see gopher_jax/sweep/plan.py).
    """
    from gopher_jax.sweep.plan import expand

    cells, skipped = [], []
    for c in sorted(float(b) for b in budgets):
        for size in (sizes_per_budget or {}).get(c, sizes):
            model = size.overrides()
            if seq_len > base.max_len:  # the learned-position table and masks must cover seq_len
                model["max_len"] = seq_len
            cfg = base.replace(**model)
            fpt = flops_per_token(cfg, seq_len, method)
            steps = int(round(c / (fpt * batch_size * seq_len)))
            label = f"C{c:.3g}_L{size.num_layers}_d{size.d_model}".replace("+", "")
            if steps < min_steps:
                skipped.append({"name": label, "steps": steps, "reason": f"< min_steps={min_steps}"})
                continue
            tokens = steps * batch_size * seq_len
            n_params = count_params(cfg)
            hparams = size_rule(size.d_model, n_params, batch_size * seq_len) if size_rule else {}
            cells.append({"budget": c, "C": fpt * tokens, "N": n_params,
                          "N_non_embedding": count_params(cfg, embeddings=False), "flops_per_token": fpt,
                          "steps": steps, "tokens": tokens, "tokens_per_step": batch_size * seq_len, "model": model,
                          "hparams": hparams})
    if not cells:
        raise ValueError(f"every run of the sweep is shorter than min_steps={min_steps}; raise the budgets "
                         f"{list(budgets)} or lower the batch size / sequence length")
    runs = []
    for cell, rp in zip(cells, expand(isoflop_spec(cells, run_gin, model_gin, seq_len, batch_size, base_params))):
        workdir = os.path.join(out_dir, rp.name)
        runs.append({"name": rp.name, **cell, "workdir": workdir, "params": list(rp.params),
                     "command": ["gopher-jax", "train", *rp.train_args(workdir)]})
    return {"budgets": sorted(float(b) for b in budgets), "seq_len": seq_len, "batch_size": batch_size,
            "method": method, "run_gin": list(run_gin), "model_gin": list(model_gin),
            "base_params": list(base_params), "runs": runs,
            "skipped": skipped}


def overrides_gin(run: dict, seq_len: int, batch_size: int) -> str:
    """Returns the gin text of one run's overrides (the bindings its command passes)."""
    lines = [f"# {run['name']}: N={run['N']:,} params, {run['tokens']:,} tokens, C={run['C']:.4g} FLOPs"]
    lines += _cell_params(run, seq_len, batch_size)
    return "\n".join(lines) + "\n"


def write_sweep(manifest: dict, out_dir: str) -> str:
    """Writes manifest.json, the runner's sweep.json and every run's overrides.gin; returns the manifest path."""
    from gopher_jax.sweep.plan import expand, write_plan

    spec = _spec_of(manifest)
    write_plan(out_dir, spec, expand(spec), extra={"isoflop_manifest": "manifest.json"})
    for run in manifest["runs"]:
        os.makedirs(run["workdir"], exist_ok=True)
        with open(os.path.join(run["workdir"], "overrides.gin"), "w") as f:
            f.write(overrides_gin(run, manifest["seq_len"], manifest["batch_size"]))
    path = os.path.join(out_dir, "manifest.json")
    with open(path, "w") as f:
        json.dump(manifest, f, indent=2)
    return path


def _spec_of(manifest: dict):
    return isoflop_spec(manifest["runs"], manifest["run_gin"], manifest["model_gin"], manifest["seq_len"],
                        manifest["batch_size"], manifest.get("base_params", ()))


def load_manifest(out_dir: str) -> dict:
    """Reads DIR/manifest.json; returns it."""
    path = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist; generate the sweep first "
                                f"(`gopher-jax scaling sweep --out {out_dir} --dry-run`)")
    with open(path) as f:
        return json.load(f)


def shell_commands(manifest: dict) -> list[str]:
    """Returns one shell line per run (for a pod: run each on a worker, or `gopher-jax sweep --out DIR`)."""
    return [shlex.join(r["command"]) for r in manifest["runs"]]


def run_local(out_dir: str, *, workers: int = 1, log=print) -> dict[str, int]:
    """Trains every unfinished run of the written sweep in `out_dir` on the sweep runner (finished runs
    are skipped, killed ones resume); returns {run: 0, or the exit code its FAILED marker records}."""
    from gopher_jax.sweep import status
    from gopher_jax.sweep.local_executor import run_local as run_workers
    from gopher_jax.sweep.plan import load_plan

    from gopher_jax.sweep.devices import devices_per_worker
    from gopher_jax.sweep.validate_arms import validate_runs

    runs = load_plan(out_dir)[1]
    validate_runs(runs, devices_per_worker(workers))  # every cell before any trains (raises ArmError)
    names = [r.name for r in runs]
    status.clear_failed(out_dir, names)
    run_workers(out_dir, names, workers=workers)
    codes = {}
    for n in names:
        run_dir = os.path.join(out_dir, n)
        state = status.run_status(run_dir)
        codes[n] = 0 if state == status.DONE else status.read_marker(run_dir, status.FAILED_FILE).get("exit_code", 1)
        if codes[n]:
            log(f"{n}: exit {codes[n]} (see {os.path.join(run_dir, 'train.log')})")
    return codes


def collect(manifest: dict, *, loss_key: str = "loss", finished_only: bool = False) -> tuple[Runs, Runs, list[str]]:
    """Returns (final-loss table, training-curve table, names of runs left out). A run without
    metrics is left out; with `finished_only`, so is one without the sweep runner's DONE marker
    (a run still training would otherwise count its last logged step as its end)."""
    from gopher_jax.sweep import status

    finals, curves, missing = [], [], []
    for run in manifest["runs"]:
        if finished_only and status.run_status(run["workdir"]) != status.DONE:
            missing.append(run["name"])
            continue
        path = os.path.join(run["workdir"], "metrics.jsonl")
        recs = read_metrics(path, loss_key=loss_key) if os.path.isfile(path) else []
        recs = [r for r in recs if r["step"] > 0]
        if not recs:
            missing.append(run["name"])
            continue
        steps = np.array([r["step"] for r in recs], np.float64)
        loss = np.array([r["loss"] for r in recs])
        D = steps * run["tokens_per_step"]
        curves.append(make_runs(np.full(len(D), run["N"]), D, loss, run["flops_per_token"] * D,
                                steps, [run["name"]] * len(D)))
        eval_loss = final_eval_loss(path)
        final = eval_loss if eval_loss is not None else float(np.mean(loss[-FINAL_TRAIN_POINTS:]))
        finals.append(make_runs([run["N"]], [D[-1]], [final], [run["flops_per_token"] * D[-1]],
                                [steps[-1]], [run["name"]]))
    if not finals:
        raise ValueError(f"no run of the sweep has a metrics.jsonl with '{loss_key}' yet; train them first "
                         f"(`gopher-jax scaling sweep --out DIR --run`)")
    return concat(finals), concat(curves), missing


def write_collected(manifest: dict, out_dir: str, **kw) -> tuple[str, str, list[str]]:
    """Collects and writes runs.csv and curves.csv; returns their paths and the missing runs."""
    finals, curves, missing = collect(manifest, **kw)
    runs_csv, curves_csv = os.path.join(out_dir, "runs.csv"), os.path.join(out_dir, "curves.csv")
    write_csv(finals, runs_csv)
    write_csv(curves, curves_csv)
    return runs_csv, curves_csv, missing
