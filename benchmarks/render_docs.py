"""Rewrites the generated figure regions of the docs from the committed results under benchmarks/results/.

    python benchmarks/render_docs.py           # rewrite every region
    python benchmarks/render_docs.py --check   # change nothing; exit 1 naming each region that differs
                                               # and each compile result whose recipe changed since

A region is marked in markdown as `<!-- figures:NAME -->` ... `<!-- /figures -->` and in a gin file
as `# figures:NAME` ... `# /figures`; NAME picks a renderer below. Every rendered figure names the
host it was measured on (CPU model, or the TPU topology an ahead-of-time compile targeted), the date
of its run, and links its results file, so a number in the docs has one source.
tests/docs/test_docs_figures.py fails when a region differs from what this script writes.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import textwrap
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = "benchmarks/results"
GIB = 2**30

# A markdown region may be indented (inside a list item): its body is indented the same.
MD_REGION = re.compile(r"(([ \t]*)<!-- figures:([\w.-]+) -->\n)(.*?)([ \t]*<!-- /figures -->)", re.S)
GIN_REGION = re.compile(r"(()# figures:([\w.-]+)\n)(.*?)(# /figures)", re.S)


def load(name: str) -> dict:
    """Reads benchmarks/results/<name>; the file must record where and when it ran (its `host`)."""
    with open(os.path.join(REPO, RESULTS, name), encoding="utf-8") as f:
        data = json.load(f)
    if "host" not in data or "date" not in data["host"] or "cpu_model" not in data["host"]:
        raise ValueError(f"{RESULTS}/{name} has no host.cpu_model / host.date: rerun its benchmark, which "
                         "records them with benchmarks/host_info.py")
    return data


def host_and_date(data: dict) -> str:
    host = data["host"]
    cores = f", {host['cpu_count']} cores" if host.get("cpu_count") else ""
    load = f" (load {host['load_avg_1m']:.0f})" if host.get("load_avg_1m") is not None else ""
    return f"{host['cpu_model']}{cores}{load}, {host['date'][:10]}"


def link(page: str, name: str) -> str:
    """A markdown link from `page` to benchmarks/results/<name>."""
    rel = os.path.relpath(os.path.join(RESULTS, name), os.path.dirname(page) or ".")
    return f"[{RESULTS}/{name}]({rel})"


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False) + "\n"


# ------------------------------------------------------------------------------------------ renderers
def throughput_44m(page: str) -> str:
    """README: gopher_44m's training throughput and MFU beside torch.compile, from one comparison run."""
    d = load("compare_pytorch.json")
    rounds = len(d["rounds"])
    return _wrap(f"gopher_44m at seq {d['seq_len']}, batch {d['batch_size']}, trains at "
            f"{d['ours_tokens_per_s']:,.0f} tokens/s (median of {rounds} rounds; "
            f"{d['ours_mfu']:.0%} MFU by the one definition: causal attention counted once, the embedding "
            f"as a gather; {d['ours_mfu_6n']:.0%} by 6N), {d['ratio']:.2f}x a torch.compile GPT-2 of the same "
            f"shape in the same run ({d['torch_compile_tokens_per_s']:,.0f} tokens/s). Host: "
            f"{host_and_date(d)}; {link(page, 'compare_pytorch.json')}.")


def embedded_corpus(page: str) -> str:
    """docs/data_input.md: documents and bytes of each processed component of the embedded corpus."""
    d = load("embedded_corpus.json")
    order = ("massiveweb", "books", "news", "wikipedia", "github")
    parts = [f"{name} {c['train']['documents']} / {c['validation']['documents']}, {c['train']['bytes'] / 1e6:.2f} MB"
             for name in order if (c := d["components"].get(name))]
    return _wrap(f"Processed on Python {d['host']['python']} (train / validation documents, train MB): "
                 f"{'; '.join(parts)}. `books` and `github` follow the interpreter's standard library. "
                 f"{host_and_date(d)}; {link(page, 'embedded_corpus.json')}.")


def isoflop_reproduce(page: str) -> str:
    """docs/scaling.md: the exponents `gopher-jax scaling reproduce` fitted, beside Chinchilla Table 2,
    and the held-out loss of every run of the sweep."""
    d = load("isoflop_reproduce.json")
    v, fits, pct = d["verdict"], d["fits"], f"{d['level']:.0%}"
    goal = next(x["goal_range"] for x in v.values() if x.get("fitted"))
    wall = (f"{d['command_wall_s'] / 3600:.1f} h wall for the command(s) that trained it, "
            if d.get("command_wall_s") else "")
    corpus = d["corpus"]
    parts = ", ".join(f"{n} {c['train_tokens'] / 1e6:.1f}M" for n, c in corpus["components"].items())
    head = _wrap(f"{len(d['runs']) - len(d['missing'])} runs over budgets "
                 + ", ".join(f"{b:.3g}" for b in d["budgets"]) + f" FLOPs (Chinchilla App. F count, last layer "
                 f"included), {d['batch_size']} x {d['seq_len']} tokens per step, on the scaling corpus "
                 f"({corpus['total_train_tokens'] / 1e6:.1f}M byte-level train tokens: {parts}); "
                 f"{wall}{d['train_wall_s'] / 3600:.1f} h summed over runs. Host: {host_and_date(d)}; "
                 f"{link(page, 'isoflop_reproduce.json')}.")

    def fmt(x, interval):
        lo, hi = interval
        return f"{x:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{x:.3f}"

    rows = [f"| approach | a (N_opt ∝ C^a) [{pct} CI] | b (D_opt ∝ C^b) [{pct} CI] | Chinchilla Table 2 a / b "
            f"| CI excludes Kaplan's a = 0.73 | a in [{goal[0]:.2f}, {goal[1]:.2f}] |", "|---|---|---|---|---|---|"]
    for name in ("1", "2", "3"):
        x = v.get(name, {})
        if not x.get("fitted"):
            rows.append(f"| {name} | not fitted: {x.get('why', 'no result')} | | | | |")
            continue
        rows.append(f"| {name} | {fmt(x['a'], x['a_interval'])} | {fmt(x['b'], x['b_interval'])} | "
                    f"{x['chinchilla_a']:.2f} / {x['chinchilla_b']:.2f} | {'yes' if x['excludes_kaplan'] else 'no'} "
                    f"| {'yes' if x['in_goal_range'] else 'no'} |")
    n_of = {r["size"]: r["N"] for r in d["runs"]}
    sizes = sorted(n_of, key=n_of.get)
    grid = ["| budget (FLOPs) | " + " | ".join(f"{z} ({n_of[z] / 1e3:.0f}K)" for z in sizes) + " | parabola vertex N_opt |",
            "|---|" + "---|" * (len(sizes) + 1)]
    for b in d["budgets"]:
        runs = {r["size"]: r for r in d["runs"] if r["budget"] == b}
        best = min((r["eval_loss"] for r in runs.values() if r["eval_loss"] is not None), default=None)
        cells = []
        for z in sizes:
            r = runs.get(z)
            if r is None or r["eval_loss"] is None:
                cells.append("")
                continue
            cells.append(f"**{r['eval_loss']:.4f}**" if r["eval_loss"] == best else f"{r['eval_loss']:.4f}")
        vert = next((vb for vb in fits.get("2", {}).get("budgets", []) if abs(vb["C"] / b - 1) < 0.05), None)
        vtext = "" if vert is None else (f"{vert['N_opt'] / 1e3:.0f}K"
                                         + (" (extrapolated)" if vert.get("extrapolated") else ""))
        grid.append(f"| {b:.3g} | " + " | ".join(cells) + f" | {vtext} |")
    return (head + "\n" + "\n".join(rows) + "\n\nHeld-out loss of every run in nats per token (one token is one byte: the tokenizer is byte-level); bold: the budget's best.\n\n"
            + "\n".join(grid) + "\n")


def _model_size(recipe: str) -> float:
    """Parameters a recipe's name gives ("gopher_1_4b_v4" -> 1.4e9), for ordering the table."""
    m = re.search(r"_(\d+(?:_\d+)?)([mb])_", recipe + "_")
    return float(m.group(1).replace("_", ".")) * (1e9 if m.group(2) == "b" else 1e6) if m else float("inf")


# The TPU recipes (the ones benchmarks/compile_recipes.py compiles), smallest model first.
RECIPES = tuple(sorted((os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REPO, "gin_configs", "parallel",
                                                                                 "*_v*.gin"))), key=_model_size))


def _compile_results() -> list[dict]:
    out = []
    for recipe in RECIPES:
        if os.path.exists(os.path.join(REPO, RESULTS, f"compile_{recipe}.json")):
            out.append(load(f"compile_{recipe}.json"))
    return out


def compile_table(page: str) -> str:
    """gin_configs/parallel/README.md: every recipe's compiled memory per device against plan's."""
    rows = ["| recipe | topology (devices) | mesh | compile GiB/device (of HBM) | plan GiB/device | compile vs plan "
            "| compile s (host RSS GiB) | host, date (results file) |",
            "|---|---|---|---|---|---|---|---|"]
    for d in _compile_results():
        r = d["report"]
        mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1 device"
        rows.append(
            f"| `{d['recipe']}.gin` | {r['topology']} ({r['num_devices']}) | {mesh} "
            f"| {r['bytes_per_device'] / GIB:.2f} of {r['hbm_bytes_per_device'] / GIB:.0f} "
            f"| {r['plan_bytes_per_device'] / GIB:.2f} | {r['memory_gap']:+.1%} "
            f"| {r['compile_s']:.0f} ({d['peak_rss_bytes'] / GIB:.1f}) "
            f"| {host_and_date(d)} ({link(page, 'compile_' + d['recipe'] + '.json')}) |")
    missing = [r for r in RECIPES if r not in {d["recipe"] for d in _compile_results()}]
    note = (f"\nNot yet compiled on record: {', '.join(missing)} "
            f"(`python benchmarks/compile_recipes.py --recipes {','.join(missing)}`).\n" if missing else "")
    return "\n".join(rows) + "\n" + note


def _recipe_facts(d: dict) -> dict:
    """What a compile result says its recipe is: model and run files, topology, devices, mesh, schedule, batch."""
    import ast

    r, rb = d["report"], d["recipe_bindings"]
    b = rb["bindings"]
    models = [f for f in rb["includes"] if f.startswith("gin_configs/models/")]
    runs = [f for f in rb["includes"] if f.startswith("gin_configs/runs/") and not f.endswith("_paper.gin")]
    stages = r["mesh"].get("pipeline", 1)
    if stages > 1:
        schedule = ast.literal_eval(b["pipeline.schedule"]) if "pipeline.schedule" in b else "the code default"
        repeats = int(b.get("pipeline.repeats", "1"))
        schedule += f" (repeats {repeats})" if repeats > 1 else ""
        schedule += f" over {stages} stages"
    else:
        schedule = "none (one pipeline stage)"
    batch = b.get("train.batch_size", "?")
    ramp = ast.literal_eval(b["train.batch_ramp"]) if "train.batch_ramp" in b else ()
    batch += "".join(f" -> {size}" for _, size in ramp)
    return {"model": models[-1] if models else "?", "run": runs[0] if runs else "?", "topology": r["topology"],
            "devices": r["num_devices"], "hbm": r["hbm_bytes_per_device"] / GIB,
            "mesh": " x ".join(f"{k} {v}" for k, v in r["mesh"].items() if v > 1) or "1 device",
            "schedule": schedule, "batch": batch, "microbatches": b.get("train.microbatches", "1"),
            "sha": rb["sha256"][:12]}


def recipe_table(page: str) -> str:
    """gin_configs/parallel/README.md: what each TPU recipe is, as its compile result records it."""
    rows = ["| recipe | model | run file (included) | topology (devices) | mesh | pipeline schedule "
            "| batch (seqs) / microbatches |",
            "|---|---|---|---|---|---|---|"]
    for d in _compile_results():
        f = _recipe_facts(d)
        rows.append(f"| `{d['recipe']}.gin` | `{f['model'][len('gin_configs/'):]}` | `{f['run'][len('gin_configs/'):]}` "
                    f"| {f['topology']} ({f['devices']}) | {f['mesh']} | {f['schedule']} "
                    f"| {f['batch']} / {f['microbatches']} |")
    return "\n".join(rows) + "\n"


def recipe_header(recipe: str) -> Callable[[str], str]:
    """A recipe's gin header: model, run file, topology, mesh, schedule and the memory per device from
    `gopher-jax compile`, all from its compile result (whose bindings hash tests/docs checks against
    the recipe's own, so the header describes the recipe as it is)."""
    def render(page: str) -> str:
        name = f"compile_{recipe}.json"
        if not os.path.exists(os.path.join(REPO, RESULTS, name)):
            return (f"# Not compiled on record yet: python benchmarks/compile_recipes.py --recipes {recipe}\n")
        d = load(name)
        r, f = d["report"], _recipe_facts(d)
        lines = [
            f"Model {f['model']}; run file {f['run']} (included below, so this file alone is the run).",
            f"Topology {f['topology']}: {f['devices']} devices of {f['hbm']:.0f} GiB. Mesh {f['mesh']}. Pipeline "
            f"schedule: {f['schedule']}. Batch {f['batch']} sequences in {f['microbatches']} microbatches.",
            f"Memory per device from `gopher-jax compile`: {r['bytes_per_device'] / GIB:.2f} GiB of {f['hbm']:.0f} "
            f"(plan {r['plan_bytes_per_device'] / GIB:.2f}, {r['memory_gap']:+.1%}); compiled in {r['compile_s']:.0f} s "
            f"on {host_and_date(d)} ({RESULTS}/{name}, recipe bindings sha256 {f['sha']}).",
        ]
        return "".join(textwrap.fill(line, width=102, initial_indent="# ", subsequent_indent="# ",
                                     break_long_words=False, break_on_hyphens=False) + "\n" for line in lines)
    return render


def _schedule_rows(recipe: str) -> tuple[dict, list[dict]]:
    d = load(f"plan_schedules_{recipe}.json")
    rows = []
    for row in d["schedules"]:
        r = row["report"]
        label = row["schedule"] + (f", repeats {row['repeats']}" if row["repeats"] > 1 else "")
        label += f", stages remat '{row['zero_bubble_remat']}'" if row.get("zero_bubble_remat") else ""
        rows.append({"label": label, "placement": r.get("pipeline_placement"), "executed": r["pipeline_efficiency"],
                     "formula": r["pipeline_efficiency_formula"], "gib": r["bytes_per_device"] / GIB,
                     "fits": r["fits"], "hbm": r["hbm_bytes_per_device"] / GIB, "comm_s": r["communication_s"],
                     "step_s": r["predicted_step_s"], "report": r, "compiled": row.get("compiled")})
    return d, rows


def plan_schedules_table(recipe: str) -> Callable[[str], str]:
    """docs/decisions/0002-pipeline.md: `gopher-jax plan` of a pipelined recipe under each schedule."""
    def render(page: str) -> str:
        d, rows = _schedule_rows(recipe)
        r0 = rows[0]["report"]
        compiled = any(row["compiled"] for row in rows)
        out = ["| schedule (placement) | executed (formula) | memory / device | "
               + ("compiled for the topology | " if compiled else "") + "communication | step |",
               "|---|---|---|" + ("---|" if compiled else "") + "---|---|"]
        for row in rows:
            fit = "" if row["fits"] else f": does not fit {row['hbm']:.0f}"
            placement = f" ({row['placement']})" if row["placement"] else ""
            c = row["compiled"]
            aot = "" if not compiled else "| - " if not c else (
                f"| {c['bytes_per_device'] / GIB:.2f} GiB{'' if c['fits'] else ': does not fit'} " if "bytes_per_device" in c
                else f"| temporaries alone {c['temp_bytes_required'] / GIB:.2f} GiB: refused (out of HBM) ")
            out.append(f"| {row['label']}{placement} | {row['executed']:.3f} ({row['formula']:.3f}) "
                       f"| {row['gib']:.2f} GiB{fit} {aot}| {row['comm_s']:.2f} s | {row['step_s']:.1f} s |")
        note = (f"`gopher-jax plan` of `{recipe}.gin` on {d['topology']} with `pipeline.schedule` (and `repeats`) "
                f"overridden: remat '{r0['remat_policy']}', MFU {r0['mfu']}, {r0['pipeline_op_costs']} op costs, "
                f"step = compute + communication (no overlap). Predictions, not TPU measurements"
                + ("; compiled: `gopher-jax compile` of the same config for the topology (XLA:TPU's memory "
                   "analysis, ahead of time on this host)" if any(row["compiled"] for row in rows) else "") + ". "
                f"{host_and_date(d)}; {link(page, f'plan_schedules_{recipe}.json')} "
                f"(`python benchmarks/plan_schedules.py --recipe {recipe}`).")
        return "\n".join(out) + "\n\n" + _wrap(note)
    return render


def plan_schedules_note(recipe: str) -> Callable[[str], str]:
    """The recipe's gin note above `pipeline.schedule`: plan's step time and memory under each schedule."""
    def render(page: str) -> str:
        d, rows = _schedule_rows(recipe)
        r0 = rows[0]["report"]
        parts = [f"{row['label']} {row['step_s']:.1f} s/step, executed {row['executed']:.3f} (formula "
                 f"{row['formula']:.3f}), {row['gib']:.2f} GiB/device" + ("" if row["fits"] else ": does not fit")
                 + ("" if not row["compiled"] else f" (compiled {row['compiled']['bytes_per_device'] / GIB:.2f})"
                    if "bytes_per_device" in row["compiled"] else
                    f" (compiled: temporaries alone {row['compiled']['temp_bytes_required'] / GIB:.2f}, out of HBM)")
                 for row in rows]
        text = (f"`gopher-jax plan` of this recipe under each schedule (remat '{r0['remat_policy']}', MFU {r0['mfu']}, "
                f"{r0['pipeline_op_costs']} op costs, step = compute + communication; {rows[0]['hbm']:.0f} GiB per "
                f"device): {'; '.join(parts)}. {host_and_date(d)} ({RESULTS}/plan_schedules_{recipe}.json).")
        return textwrap.fill(text, width=102, initial_indent="# ", subsequent_indent="# ",
                             break_long_words=False, break_on_hyphens=False) + "\n"
    return render


# The pipelined recipes whose schedules benchmarks/plan_schedules.py compares.
PLANNED = tuple(r for r in RECIPES if os.path.exists(os.path.join(REPO, RESULTS, f"plan_schedules_{r}.json")))

RENDERERS: dict[str, Callable[[str], str]] = {
    "throughput_44m": throughput_44m,
    "embedded_corpus": embedded_corpus,
    "isoflop_reproduce": isoflop_reproduce,
    "compile_table": compile_table,
    "recipe_table": recipe_table,
    **{f"recipe_{r}": recipe_header(r) for r in RECIPES},
    **{f"plan_schedules_{r}": plan_schedules_table(r) for r in PLANNED},
    **{f"plan_schedules_note_{r}": plan_schedules_note(r) for r in PLANNED},
}


# ---------------------------------------------------------------------------------------- the rewrite
def pages() -> list[str]:
    """Repository-relative files that may hold regions: the markdown docs and the gin files."""
    found = ["README.md", "benchmarks/README.md"]
    for pattern in ("docs/**/*.md", "gin_configs/**/*.md", "gin_configs/**/*.gin"):
        found += sorted(glob.glob(pattern, root_dir=REPO, recursive=True))
    return found


def render_text(page: str, text: str) -> str:
    """Returns `text` with each of its regions rewritten; an unknown region name is an error."""
    pattern = GIN_REGION if page.endswith(".gin") else MD_REGION

    def replace(m: re.Match) -> str:
        name, indent = m.group(3), m.group(2)
        if name not in RENDERERS:
            raise KeyError(f"{page}: region figures:{name} has no renderer; known: {', '.join(RENDERERS)}")
        body = "".join(indent + line if line.strip() else line for line in RENDERERS[name](page).splitlines(True))
        return m.group(1) + body + m.group(5)

    return pattern.sub(replace, text)


def regions(page: str, text: str) -> list[str]:
    """The names of the regions in a page."""
    return [m.group(3) for m in (GIN_REGION if page.endswith(".gin") else MD_REGION).finditer(text)]


def stale_regions() -> list[str]:
    """`page: figures:NAME` for each region whose text differs from what render_text writes."""
    stale = []
    for page in pages():
        with open(os.path.join(REPO, page), encoding="utf-8") as f:
            text = f.read()
        if not regions(page, text):
            continue
        new = render_text(page, text)
        if new != text:
            old_regions = dict(_bodies(page, text))
            stale += [f"{page}: figures:{n}" for n, body in _bodies(page, new) if old_regions.get(n) != body]
    return stale


def _bodies(page: str, text: str) -> list[tuple[str, str]]:
    return [(m.group(3), m.group(4)) for m in (GIN_REGION if page.endswith(".gin") else MD_REGION).finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region is stale")
    args = p.parse_args(argv)
    if args.check:
        sys.path.insert(0, REPO)
        from benchmarks.compile_recipes import stale_results   # a recipe changed since its compile
        stale = stale_regions() + stale_results()
        for s in stale:
            print(f"stale: {s} (run python benchmarks/render_docs.py)", file=sys.stderr)
        return 1 if stale else 0
    for page in pages():
        path = os.path.join(REPO, page)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = render_text(page, text)
        if new != text:
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"rewrote {page}: {', '.join(regions(page, new))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
