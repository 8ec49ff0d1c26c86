"""Chinchilla's compute-optimal study, reproduced from our own training runs (`gopher-jax scaling reproduce`).

What it does, in order (each step resumes: rerunning the command continues where it stopped):
  1. the scaling corpus: DIR/corpus (or --corpus), built by `gopher-jax data build-scaling-corpus`
     when missing: real text and code from the installed packages, byte-level tokens, so that no
     run repeats data and non-embedding parameters dominate the tiny models;
  2. the IsoFLOP plan (gopher_jax/scaling/sweep.py): per FLOP budget (Chinchilla App. F count, last
     layer included) the sizes of SIZES_BY_BUDGET, each trained for the steps that spend the budget,
     with the per-size optimizer rule of gopher_jax/scaling/size_hparams.py (1/width learning rate,
     N-token warmup, beta2 0.99, cosine over the run's own length);
  3. the runs, on the sweep runner (gopher_jax/sweep: leases, resume, any number of workers on any
     number of machines sharing DIR; `gopher-jax sweep --out DIR --executor=ray` runs the same plan);
  4. collection: each run's held-out loss at its last step (approaches 2, 3) and its training curve
     (approach 1);
  5. fits of approaches 1-3 with 95% bootstrap intervals (approaches 1-2 Huber-weighted where the
     points allow, gopher_jax/scaling/robust.py; approach 3 Chinchilla's Huber objective), plots,
     and DIR/report.md + DIR/reproduce.json: a and b beside Chinchilla Table 2, whether each interval
     excludes Kaplan's 0.73, the runs table and the wall time.
"""
from __future__ import annotations

import json
import os

import numpy as np

from gopher_jax.host_record import host_record
from gopher_jax.scaling import constants as K
from gopher_jax.scaling import sweep as S

SEQ_LEN = 256
BATCH_SIZE = 8                       # 2,048 tokens per step: >= 60 steps for every run at 1e12 FLOPs
RUN_GIN = ("gin_configs/runs/pretrain.gin",)
MODEL_GIN = ("gin_configs/models/tiny.gin",)  # Gopher architecture; the sizes override its shape
# Every run: one held-out evaluation at its end (sweep cells set train.eval_every = 0) over more
# batches than the default 20, a logged point every 5 steps for approach 1's curves, one checkpoint.
BASE_PARAMS = ("train.eval_batches = 64", "train.log_every = 5", "train.keep_checkpoints = 1")
# FLOP budgets: 10x in four log-spaced steps.
BUDGETS = (1e12, 2.15e12, 4.64e12, 1e13)
# Sizes per budget (LAYERSxWIDTH; head_dim 32, 16 below width 64), 6-8 per budget spanning 7-35x in
# parameters (26K to 903K with the byte-level vocabulary). Placed by a pilot at 1e12 FLOPs whose
# minimum fell between 2x32 and 2x48 (~22 tokens per parameter), then widened upwards at larger
# budgets enough to contain Kaplan's slope (a = 0.73) as well as Chinchilla's (0.5): the sizes must
# not decide the answer. The pilot's runs are the 1e12 row (docs/scaling.md).
SIZES_BY_BUDGET = {
    1e12: ("1x32", "2x32", "2x48", "2x64", "3x64", "3x96", "4x96", "4x128"),
    2.15e12: ("1x32", "2x32", "2x48", "2x64", "3x64", "3x96"),
    4.64e12: ("2x32", "2x48", "2x64", "3x64", "4x64", "3x96"),
    1e13: ("2x48", "2x64", "3x64", "4x64", "3x96", "4x128"),
}
LEVEL = 0.95
N_BOOT = 1000
MIN_STEPS = 20
GOAL_A_RANGE = (0.40, 0.60)  # the range of a the reproduction aims for (Chinchilla Table 2's approaches: 0.46-0.50)
CORPUS_GIN = "data.gin"


def corpus_gin(corpus_dir: str) -> str:
    """Returns the path of the corpus's data.gin; raises FileNotFoundError naming the build command."""
    path = os.path.join(corpus_dir, CORPUS_GIN)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: build the scaling corpus first "
                                f"(`gopher-jax data build-scaling-corpus --out {corpus_dir}`), or pass --corpus "
                                f"to a directory that command wrote")
    return path


def ensure_corpus(corpus_dir: str, log=print) -> str:
    """Builds the scaling corpus in `corpus_dir` unless its data.gin exists; returns data.gin's path."""
    path = os.path.join(corpus_dir, CORPUS_GIN)
    if not os.path.isfile(path):
        from gopher_jax.data.scaling_corpus import build_scaling_corpus

        log(f"scaling corpus: building {corpus_dir} (once; later runs reuse it)")
        build_scaling_corpus(corpus_dir)
    return corpus_gin(corpus_dir)


def plan(out: str, data_gin: str, *, budgets=BUDGETS, sizes_by_budget=None, seq_len: int = SEQ_LEN,
         batch_size: int = BATCH_SIZE, run_gin=RUN_GIN, model_gin=MODEL_GIN, base_params=BASE_PARAMS,
         min_steps: int = MIN_STEPS) -> dict:
    """Plans the sweep and writes it to `out` (manifest.json, the runner's sweep.json); returns the manifest."""
    from gopher_jax.scaling.model_zoo import load_config
    from gopher_jax.scaling.size_hparams import size_bindings
    from gopher_jax.sweep.validate_arms import import_configurables

    sizes_by_budget = SIZES_BY_BUDGET if sizes_by_budget is None else sizes_by_budget
    missing = [b for b in budgets if float(b) not in {float(k) for k in sizes_by_budget}]
    if missing:
        raise ValueError(f"budgets {missing} have no sizes; give each budget its sizes "
                         f"(--sizes 'BUDGET:LxD,LxD,...;BUDGET:...')")
    per_budget = {float(b): [parse_size(s) for s in sizes] for b, sizes in sizes_by_budget.items()}
    # data.gin comes after the model file: it sets the vocabulary the byte-level tokenizer has
    model_files = list(model_gin) + [data_gin]
    import_configurables()  # data.gin binds the data configurables too, not only ModelConfig
    base = load_config(model_files)
    manifest = S.plan_sweep(budgets, [], base=base, out_dir=out, run_gin=list(run_gin), model_gin=model_files,
                            seq_len=seq_len, batch_size=batch_size, method="chinchilla", min_steps=min_steps,
                            size_rule=size_bindings, sizes_per_budget=per_budget, base_params=base_params)
    S.write_sweep(manifest, out)
    return manifest


def parse_size(text: str) -> S.Size:
    """Parses 'LxD' with head_dim 32, or 16 below width 64 (so that 2x32 and 2x48 have 2-3 heads)."""
    width = text.lower().partition("x")[2]
    return S.Size.parse(text, 16 if width.isdigit() and int(width) < 64 else 32)


def parse_sizes(text: str) -> dict[float, tuple[str, ...]]:
    """Parses 'BUDGET:LxD,LxD;BUDGET:...' into {budget: sizes}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        budget, _, sizes = part.partition(":")
        try:
            out[float(budget)] = tuple(s for s in sizes.split(",") if s)
        except ValueError:
            raise ValueError(f"--sizes part {part!r} is not BUDGET:LxD,LxD (e.g. 1e12:2x64,3x96)") from None
        if not out[float(budget)]:
            raise ValueError(f"--sizes part {part!r} names no sizes")
    return out


def fit_all(out: str, *, n_boot: int = N_BOOT, level: float = LEVEL, log=print, plots: bool = True) -> dict:
    """Collects the runs in `out`, fits approaches 1-3 with bootstrap intervals, writes runs.csv,
    curves.csv, fit.json and (plots) the plots; returns {"fits": {approach: fit JSON}, "missing": [...], "plots": [...]}."""
    from gopher_jax.scaling.approach1 import fit_approach1
    from gopher_jax.scaling.approach2 import fit_approach2
    from gopher_jax.scaling.approach3 import fit_approach3
    from gopher_jax.scaling import plots as P

    from gopher_jax.scaling.runs import write_csv

    manifest = S.load_manifest(out)
    finals, curves, missing = S.collect(manifest, finished_only=True)
    write_csv(finals, os.path.join(out, "runs.csv"))
    write_csv(curves, os.path.join(out, "curves.csv"))
    fits = {}
    # approach 1 on the budgets' range only: below the smallest budget every curve is early in its
    # schedule (warmup, high learning rate), which no run's annealed end represents
    c_range = (float(finals.C.min()), float(finals.C.max()))
    if c_range[1] < 1.5 * c_range[0]:
        c_range = None  # one budget: approach 1 then reads the whole curves (and says what it can)
    for name, fit in (("1", lambda: fit_approach1(curves, n_boot=n_boot, level=level, c_range=c_range)),
                      ("2", lambda: fit_approach2(finals, n_boot=n_boot, level=level)),
                      ("3", lambda: fit_approach3(finals, n_boot=n_boot, level=level))):
        try:
            fits[name] = fit().to_json()
        except ValueError as e:
            fits[name] = {"approach": name, "error": str(e)}
            log(f"approach {name}: not fitted ({e})")
    with open(os.path.join(out, "fit.json"), "w") as f:
        json.dump(fits, f, indent=2)
    paths = []
    if not plots:
        return {"fits": fits, "missing": missing, "plots": paths, "finals": finals}
    if "error" not in fits["2"]:  # Chinchilla Fig. 3: the IsoFLOP parabolas and their vertices
        paths.append(P.plot_isoflop(finals, fits["2"], os.path.join(out, "scaling_isoflop.png")))
    if "error" not in fits["1"]:  # Fig. 2: the curves and their envelope
        paths.append(P.plot_envelope(curves, fits["1"], os.path.join(out, "scaling_envelope.png")))
    paths.append(P.plot_allocation(finals, fits, os.path.join(out, "scaling_allocation.png")))
    return {"fits": fits, "missing": missing, "plots": paths, "finals": finals}


def run_table(manifest: dict) -> list[dict]:
    """Returns one row per planned run: size, N, tokens, FLOPs, final held-out loss, wall time, tokens/s."""
    from gopher_jax.scaling.runs import final_eval_loss

    rows = []
    for r in manifest["runs"]:
        metrics, summary_path = os.path.join(r["workdir"], "metrics.jsonl"), os.path.join(r["workdir"], "summary.json")
        summary = _read_json(summary_path)
        loss = final_eval_loss(metrics) if os.path.isfile(metrics) else None
        m = r["model"]
        rows.append({"run": r["name"], "budget": r["budget"], "size": f"{m['num_layers']}x{m['d_model']}",
                     "N": r["N"], "N_non_embedding": r["N_non_embedding"], "tokens": r["tokens"], "steps": r["steps"],
                     "C": r["C"], "learning_rate": r["hparams"].get("optimizer.peak_learning_rate"),
                     "warmup_steps": r["hparams"].get("optimizer.warmup_steps"), "eval_loss": loss,
                     "wall_s": summary.get("goodput", {}).get("wall_s", summary.get("wall_s")),
                     "tokens_per_s": summary.get("tokens_per_s")})
    return rows


def verdict(fits: dict) -> dict:
    """Returns, per fitted approach, a and b with intervals and whether they meet the goal: a in
    GOAL_A_RANGE with an interval that excludes Kaplan's a = 0.73 (Chinchilla Table 2's Kaplan row)."""
    out = {}
    for name, fit in fits.items():
        if "error" in fit or fit.get("a") is None:
            out[name] = {"fitted": False, "why": fit.get("error", "degenerate fit")}
            continue
        a_lo, a_hi = fit["intervals"].get("a", [None, None])
        b_lo, b_hi = fit["intervals"].get("b", [None, None])
        excludes = a_hi is not None and a_hi < K.KAPLAN_A
        in_range = GOAL_A_RANGE[0] <= fit["a"] <= GOAL_A_RANGE[1]
        out[name] = {"fitted": True, "a": fit["a"], "a_interval": [a_lo, a_hi], "b": fit["b"],
                     "b_interval": [b_lo, b_hi], "chinchilla_a": K.CHINCHILLA_EXPONENTS[name][0],
                     "chinchilla_b": K.CHINCHILLA_EXPONENTS[name][1], "excludes_kaplan": bool(excludes),
                     "in_goal_range": bool(in_range), "goal_range": list(GOAL_A_RANGE),
                     "goal_met": bool(in_range and excludes)}
    return out


def write_report(out: str, manifest: dict, fitted: dict, *, wall_s: float | None, corpus_dir: str,
                 level: float = LEVEL) -> str:
    """Writes DIR/report.md and DIR/reproduce.json; returns the report text."""
    rows = run_table(manifest)
    v = verdict(fitted["fits"])
    corpus_path = os.path.join(corpus_dir, "corpus.json")
    corpus = _read_json(corpus_path)
    train_wall = sum(r["wall_s"] or 0.0 for r in rows)
    pct = f"{level:.0%}"
    lines = ["# IsoFLOP reproduction of Chinchilla's compute-optimal exponents", "",
             f"Runs: {len(rows)} planned, {len(rows) - len(fitted['missing'])} trained; budgets "
             + ", ".join(f"{b:.3g}" for b in manifest["budgets"]) + " FLOPs (Chinchilla App. F count); "
             f"{manifest['batch_size']} x {manifest['seq_len']} tokens per step.",
             f"Training wall time (sum over runs, from each run's summary.json): {train_wall / 3600:.2f} h"
             + (f"; this command's wall time: {wall_s / 3600:.2f} h" if wall_s is not None else "") + ".", "",
             f"| approach | a (N_opt ~ C^a) [{pct} CI] | b (D_opt ~ C^b) [{pct} CI] | Chinchilla Table 2 a / b "
             f"| CI excludes Kaplan's a = {K.KAPLAN_A} |", "|---|---|---|---|---|"]
    for name in ("1", "2", "3"):
        x = v.get(name, {"fitted": False, "why": "not run"})
        if not x["fitted"]:
            lines.append(f"| {name} | not fitted: {x['why']} | | | |")
            continue
        lines.append(f"| {name} | {x['a']:.3f} [{_fmt(x['a_interval'])}] | {x['b']:.3f} [{_fmt(x['b_interval'])}] "
                     f"| {x['chinchilla_a']:.2f} / {x['chinchilla_b']:.2f} | {'yes' if x['excludes_kaplan'] else 'no'} |")
    lines += ["", "| run | size | N | tokens | C | lr | warmup steps | held-out loss | wall s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = "-" if r["eval_loss"] is None else f"{r['eval_loss']:.4f}"
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        lines.append(f"| {r['run']} | {r['size']} | {r['N']:,} | {r['tokens']:,} | {r['C']:.3g} | "
                     f"{r['learning_rate']:.3g} | {r['warmup_steps']} | {loss} | {wall} |")
    lines += ["", "Plots: " + ", ".join(os.path.basename(p) for p in fitted["plots"])]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    payload = {"verdict": v, "fits": fitted["fits"], "runs": rows, "missing": fitted["missing"],
               "train_wall_s": train_wall, "command_wall_s": wall_s, "corpus": corpus, "level": level,
               "budgets": manifest["budgets"], "seq_len": manifest["seq_len"], "batch_size": manifest["batch_size"],
               "host": host_record()}
    with open(os.path.join(out, "reproduce.json"), "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
    return text


def _read_json(path: str) -> dict:
    """Returns the JSON object in `path`, or {} if there is no such file."""
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _fmt(interval) -> str:
    lo, hi = interval
    return "-" if lo is None or hi is None else f"{lo:.3f}, {hi:.3f}"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON-serialisable")
