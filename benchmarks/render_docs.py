"""Rewrites the generated figure regions of the docs from the committed results under benchmarks/results/.

    python benchmarks/render_docs.py           # rewrite every region
    python benchmarks/render_docs.py --check   # change nothing; exit 1 naming each region that differs

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

MD_REGION = re.compile(r"(<!-- figures:([\w.-]+) -->\n)(.*?)(<!-- /figures -->)", re.S)
GIN_REGION = re.compile(r"(# figures:([\w.-]+)\n)(.*?)(# /figures)", re.S)


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


def compile_header(recipe: str) -> Callable[[str], str]:
    """A recipe's gin header line: memory per core from `gopher-jax compile`, with host and date."""
    def render(page: str) -> str:
        name = f"compile_{recipe}.json"
        if not os.path.exists(os.path.join(REPO, RESULTS, name)):
            return (f"# Memory per device from `gopher-jax compile`: not on record yet "
                    f"(python benchmarks/compile_recipes.py --recipes {recipe}).\n")
        d = load(name)
        r = d["report"]
        return (f"# Memory per device from `gopher-jax compile` ({r['topology']}): {r['bytes_per_device'] / GIB:.2f} GiB "
                f"of {r['hbm_bytes_per_device'] / GIB:.0f} (plan {r['plan_bytes_per_device'] / GIB:.2f}, "
                f"{r['memory_gap']:+.1%});\n# compiled in {r['compile_s']:.0f} s on {host_and_date(d)} "
                f"({RESULTS}/{name}).\n")
    return render


RENDERERS: dict[str, Callable[[str], str]] = {
    "throughput_44m": throughput_44m,
    "compile_table": compile_table,
    **{f"compile_{r}": compile_header(r) for r in RECIPES},
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
        name = m.group(2)
        if name not in RENDERERS:
            raise KeyError(f"{page}: region figures:{name} has no renderer; known: {', '.join(RENDERERS)}")
        return m.group(1) + RENDERERS[name](page) + m.group(4)

    return pattern.sub(replace, text)


def regions(page: str, text: str) -> list[str]:
    """The names of the regions in a page."""
    return [m.group(2) for m in (GIN_REGION if page.endswith(".gin") else MD_REGION).finditer(text)]


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
    return [(m.group(2), m.group(3)) for m in (GIN_REGION if page.endswith(".gin") else MD_REGION).finditer(text)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region is stale")
    args = p.parse_args(argv)
    if args.check:
        stale = stale_regions()
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
