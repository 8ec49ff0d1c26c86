"""Arms of a sweep side by side: one row per arm with seed-level intervals, the paired difference to
the baseline and its significance, plus throughput; per-component bits-per-byte in a second table.

Every number is defined in the table's notes (stats.py has the formulas). Inputs are the records
of results.py, i.e. the runs' own summary.json / config.gin; only finished runs count.
"""
from __future__ import annotations

import csv
import io
import math

from gopher_jax.sweep import stats

DEFAULT_METRIC = "eval_bits_per_byte"
SIDE_METRIC = "eval_loss"


def _finished(records):
    return [r for r in records if r.get("status") == "done" and r.get("step") is not None]


def components(records) -> list[str]:
    """Returns the data components that have per-component held-out bits-per-byte, sorted."""
    return sorted({k.split("/", 1)[1] for r in records for k in r if k.startswith("eval_bits_per_byte/")})


def _by_seed(runs, metric) -> dict:
    return {str(r.get("seed") if r.get("seed") is not None else r["run"]): r.get(metric) for r in runs}


def _mean(runs, key):
    vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
    return sum(vals) / len(vals) if vals else None


def compare_arms(records: list[dict], *, baseline: str | None = None, metric: str = DEFAULT_METRIC,
                 level: float = stats.LEVEL) -> dict:
    """Returns {'metric', 'baseline', 'arms': [row per arm], 'components': [...], 'notes': [...]}."""
    done = _finished(records)
    arms: dict[str, list] = {}
    for r in done:
        arms.setdefault(r["arm"], []).append(r)
    if not arms:
        raise ValueError(f"no finished run among {len(records)} (status 'done' with a summary.json); "
                         f"train them first (`gopher-jax sweep ...`)")
    if any(metric not in r for r in done):
        known = sorted(k for k in done[0] if k.startswith("eval") or k in ("final_train_loss",))
        raise ValueError(f"--metric={metric!r} is missing from some runs' summary.json; known: {known}")
    baseline = baseline or next((r["arm"] for r in records if r["arm"] in arms), None)
    if baseline not in arms:
        raise ValueError(f"--baseline={baseline!r} is not an arm with finished runs; arms: {sorted(arms)}")
    comps = components(done)
    base = _by_seed(arms[baseline], metric)
    rows = []
    for arm, runs in sorted(arms.items(), key=lambda kv: (kv[0] != baseline, kv[0])):
        m = stats.mean_ci([r.get(metric) for r in runs], level)
        side = stats.mean_ci([r.get(SIDE_METRIC) for r in runs], level)
        row = {"arm": arm, "n": m.n, "seeds": sorted(_by_seed(runs, metric)), metric: m.mean, f"{metric}_ci": m.half_width,
               SIDE_METRIC: side.mean, f"{SIDE_METRIC}_ci": side.half_width, "ci_note": m.why_none,
               "tokens": _mean(runs, "tokens"), "flops": _mean(runs, "flops"),
               "tokens_per_s": _mean(runs, "tokens_per_s"), "mfu": _mean(runs, "mfu")}
        if arm != baseline:
            d = stats.paired_delta(_by_seed(runs, metric), base, level)
            row.update({"delta": d.delta, "delta_ci": d.half_width, "p_value": d.p_value, "n_pairs": d.n_pairs,
                        "bootstrap_low": d.bootstrap_low, "bootstrap_high": d.bootstrap_high,
                        "delta_note": d.why_none})
        for c in comps:
            cm = stats.mean_ci([r.get(f"eval_bits_per_byte/{c}") for r in runs], level)
            row[f"eval_bits_per_byte/{c}"], row[f"eval_bits_per_byte/{c}_ci"] = cm.mean, cm.half_width
        rows.append(row)
    pct = round(level * 100)
    notes = [f"{metric}: held-out {'bits per UTF-8 byte' if 'bits' in metric else metric}, mixture-weighted, at the "
             f"run's last step; mean over seeds ± {pct}% t-interval (t_(n-1) · sd/sqrt(n))",
             f"Δ: mean over shared seeds of (arm − {baseline}); ± its {pct}% t-interval; p: two-sided paired t-test "
             f"by seed; bootstrap: {pct}% percentile interval of the mean paired difference "
             f"({stats.BOOTSTRAP_RESAMPLES} resamples; with few seeds it cannot reach past the observed differences, "
             f"so it is narrower than the t-interval: read Δ ± t-interval and p first)",
             "tokens: trained tokens (steps × batch × seq_len); FLOPs: training FLOPs = the loop's per-token count "
             "× tokens; tokens/s and MFU: median over the run's logged windows (summary.json), mean over seeds"]
    notes += [f"{r['arm']}: no CI ({r['ci_note']})" for r in rows if r["ci_note"]]
    notes += [f"{r['arm']}: no p-value ({r['delta_note']})" for r in rows if r.get("delta_note")]
    return {"metric": metric, "baseline": baseline, "level": level, "arms": rows, "components": comps,
            "notes": notes}


def _pm(mean, hw, digits=4) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {hw:.{digits}f}" if hw is not None else "")


def _g(x, fmt) -> str:
    return "-" if x is None else format(x, fmt)


def to_markdown(table: dict) -> str:
    """Returns the comparison as two Markdown tables (arms, then per-component bits/byte) and notes."""
    m = table["metric"]
    head = ["arm", "n", m, "eval_loss", f"Δ {m}", "p (paired t)", "bootstrap CI of Δ", "tokens", "FLOPs",
            "tokens/s", "MFU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table["arms"]:
        is_base = r["arm"] == table["baseline"]
        boot = ("-" if r.get("bootstrap_low") is None else f"[{r['bootstrap_low']:+.4f}, {r['bootstrap_high']:+.4f}]")
        delta = "(baseline)" if is_base else (
            "-" if r.get("delta") is None else f"{r['delta']:+.4f}" + (
                f" ± {r['delta_ci']:.4f}" if r.get("delta_ci") is not None else ""))
        lines.append("| " + " | ".join([
            r["arm"], str(r["n"]), _pm(r[m], r[f"{m}_ci"]), _pm(r["eval_loss"], r["eval_loss_ci"]), delta,
            "" if is_base else _g(r.get("p_value"), ".3g"), "" if is_base else boot, _g(r["tokens"], ",.0f"),
            _g(r["flops"], ".3g"), _g(r["tokens_per_s"], ",.0f"),
            "-" if r["mfu"] is None else f"{r['mfu']:.1%}"]) + " |")
    if table["components"]:
        lines += ["", "Held-out bits per byte by component (mean ± CI over seeds):", "",
                  "| arm | " + " | ".join(table["components"]) + " |", "|---|" + "---|" * len(table["components"])]
        for r in table["arms"]:
            lines.append(f"| {r['arm']} | " + " | ".join(
                _pm(r[f"eval_bits_per_byte/{c}"], r[f"eval_bits_per_byte/{c}_ci"]) for c in table["components"]) + " |")
    lines += [""] + [f"- {n}" for n in table["notes"]]
    return "\n".join(lines)


def to_csv(table: dict) -> str:
    """Returns one CSV row per arm (every field of the JSON rows; seeds joined by ';')."""
    keys = []
    for r in table["arms"]:
        keys += [k for k in r if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in table["arms"]:
        w.writerow({**r, "seeds": ";".join(r["seeds"])})
    return buf.getvalue()
