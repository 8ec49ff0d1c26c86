"""One record per run, read from the runs' own files, and DIR/results.jsonl to query across sweeps.

A record holds the run's identity (sweep, run, arm, seed, axis labels as `axis.<name>`), every gin
binding of its config.gin flattened into a column (`gin.ModelConfig.position`, ...), and every final
metric of its summary.json (`eval_loss`, `eval_bits_per_byte`, per component
`eval_bits_per_byte/<component>`, tokens, FLOPs, tokens/s, MFU). Then, e.g.:

    pandas.read_json("DIR/results.jsonl", lines=True).groupby("arm")["eval_bits_per_byte"].mean()
    duckdb.sql("select arm, avg(eval_bits_per_byte) from read_json_auto('*/results.jsonl') group by arm")
"""
from __future__ import annotations

import dataclasses
import json

from gopher_jax.sweep import status
from gopher_jax.train import workdir_fs

RESULTS_FILE = "results.jsonl"


class _AnyValue:
    """gin parser delegate: references and macros become their text, so every binding is a column."""

    def configurable_reference(self, scoped_name, evaluate):
        return f"@{scoped_name}{'()' if evaluate else ''}"

    def macro(self, name):
        return f"%{name}"


def _jsonable(v):
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def flatten_gin(text: str) -> dict:
    """Returns {'gin.<scope/>selector.arg': value} for every binding in gin text (e.g. a run's config.gin)."""
    from gin import config_parser

    out = {}
    for stmt in config_parser.ConfigParser(text, _AnyValue()):
        if isinstance(stmt, config_parser.BindingStatement):
            scope = f"{stmt.scope}/" if stmt.scope else ""
            out[f"gin.{scope}{stmt.selector}.{stmt.arg_name}"] = _jsonable(stmt.value)
    return out


def _read_json(path: str) -> dict:
    return json.loads(workdir_fs.read_text(path)) if workdir_fs.exists(path) else {}


def metric_curve(run_dir: str, metric: str) -> list[tuple[int, float]]:
    """Returns [(step, value)] of `metric` in a run's metrics.jsonl (a truncated last line is skipped).

    A resumed run may log a step twice; the later record wins."""
    path = workdir_fs.join(run_dir, "metrics.jsonl")
    if not workdir_fs.exists(path):
        return []
    by_step = {}
    for line in workdir_fs.read_text(path).splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if metric in rec and rec.get("step") is not None:
            by_step[int(rec["step"])] = float(rec[metric])
    return sorted(by_step.items())


def run_record(run_dir: str, *, sweep: str = "", run: dict | None = None) -> dict:
    """Returns the flat record of one run directory (a sweep run, or any `gopher-jax train` workdir)."""
    run = run or _read_json(workdir_fs.join(run_dir, "sweep_run.json"))
    summary = _read_json(workdir_fs.join(run_dir, "summary.json"))
    name = run.get("name") or workdir_fs.basename(run_dir)
    rec = {"sweep": sweep, "run": name, "run_dir": run_dir, "arm": run.get("arm") or name,
           "seed": run.get("seed"), "config_hash": run.get("config_hash"),
           "status": status.run_status(run_dir) if run else ("done" if summary else "left")}
    rec.update({f"axis.{k}": v for k, v in (run.get("values") or {}).items()})
    config = workdir_fs.join(run_dir, "config.gin")
    if workdir_fs.exists(config):
        rec.update(flatten_gin(workdir_fs.read_text(config)))
    if rec["seed"] is None and "gin.train.seed" in rec:
        rec["seed"] = str(rec["gin.train.seed"])
    if summary:
        tokens = summary["step"] * summary.get("tokens_per_step", 0)
        rec.update({"step": summary["step"], "final_train_loss": summary.get("final_loss"),
                    "eval_loss": summary.get("eval_loss"), "eval_bits_per_byte": summary.get("eval_bits_per_byte"),
                    **summary.get("eval", {}), "tokens": tokens,
                    # training FLOPs: the loop's per-token count (gopher_jax/train/mfu.py) x tokens trained
                    "flops": summary.get("flops_per_token", 0) * tokens,
                    "tokens_per_s": summary.get("tokens_per_s"), "mfu": summary.get("mfu"),
                    "mfu_count": summary.get("mfu_count"), "compile_s": summary.get("compile_s")})
    done = status.read_marker(run_dir, status.DONE_FILE)
    if done:
        rec["wall_s"] = done.get("wall_s")
    return rec


def collect(paths: list[str]) -> list[dict]:
    """Returns the records of every run under the given sweep directories and run directories."""
    from gopher_jax.sweep.plan import PLAN_FILE, load_plan

    records = []
    for p in paths:
        if workdir_fs.exists(workdir_fs.join(p, PLAN_FILE)):
            _, runs = load_plan(p)
            for r in runs:
                records.append(run_record(workdir_fs.join(p, r.name), sweep=p, run=dataclasses.asdict(r)))
        elif workdir_fs.exists(workdir_fs.join(p, "summary.json")) or workdir_fs.exists(workdir_fs.join(p, "config.gin")):
            records.append(run_record(p))
        else:
            raise FileNotFoundError(f"{p} is neither a sweep directory (no sweep.json) nor a run (no summary.json)")
    return records


def write_results(records: list[dict], path: str) -> str:
    """Writes one JSON line per record; returns the path."""
    workdir_fs.write_text_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path
