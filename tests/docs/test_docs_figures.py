"""Figures with one source (issue 31): generated regions match their results files, and every measured
speed or memory figure in README.md and docs/*.md is generated or sits beside a link to its results."""
from __future__ import annotations

import glob
import os
import re
import sys

import pytest

from tests.docs.doc_sources import REPO

sys.path.insert(0, REPO)
from benchmarks import render_docs  # noqa: E402

# A measured speed or memory figure: a number with one of these units (configuration values such as
# "16 GiB of HBM" or "timeout 300 s" are written with other units and are not measurements).
MEASURED = re.compile(r"\d[\d,.]*\s*(?:tokens/s|tok/s|docs/s|MB/s|GiB/device|GiB per core|GiB per device"
                      r"|GB/device|s/step|% MFU|x faster)")
RESULTS_LINK = re.compile(r"benchmarks/(?:results/)?[\w./-]+\.json|benchmarks/results")


def test_every_generated_region_matches_its_results_file():
    stale = render_docs.stale_regions()
    assert not stale, f"regions differ from their results files (run python benchmarks/render_docs.py): {stale}"


def test_the_docs_hold_the_regions_they_promise():
    with open(os.path.join(REPO, "README.md")) as f:
        assert render_docs.regions("README.md", f.read()) == ["throughput_44m"]
    with open(os.path.join(REPO, "gin_configs/parallel/README.md")) as f:
        assert render_docs.regions("gin_configs/parallel/README.md", f.read()) == ["compile_table"]
    for path in glob.glob(os.path.join(REPO, "gin_configs/parallel/*_v*.gin")):
        recipe = os.path.basename(path)[:-4]
        with open(path) as f:
            assert render_docs.regions(path, f.read()) == [f"compile_{recipe}"], path


def test_a_hand_edited_figure_is_caught_and_rewritten():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    edited = re.sub(r"(<!-- figures:throughput_44m -->\n)(.*?)(tokens/s)", r"\g<1>gopher_44m trains at 9,999 \3",
                    text, count=1, flags=re.S)
    assert edited != text
    assert render_docs.render_text("README.md", edited) == text


def test_each_rendered_figure_names_host_date_and_results_file():
    text = render_docs.throughput_44m("README.md")
    assert re.search(r"Host: .+, \d{4}-\d\d-\d\d", text, flags=re.S)
    assert "](benchmarks/results/compare_pytorch.json)" in text
    table = render_docs.compile_table("gin_configs/parallel/README.md")
    for row in table.splitlines()[2:]:
        if row.startswith("|"):
            assert re.search(r"\d{4}-\d\d-\d\d \(\[benchmarks/results/compile_\w+\.json\]\(\.\./\.\./benchmarks", row)


def test_a_results_file_without_host_is_refused(tmp_path, monkeypatch):
    (tmp_path / render_docs.RESULTS).mkdir(parents=True)
    (tmp_path / render_docs.RESULTS / "compare_pytorch.json").write_text('{"ratio": 1.0}')
    monkeypatch.setattr(render_docs, "REPO", str(tmp_path))
    with pytest.raises(ValueError, match="no host.cpu_model"):
        render_docs.throughput_44m("README.md")


def _blocks(text: str) -> list[tuple[int, list[str]]]:
    out, cur, start = [], [], 0
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            if not cur:
                start = i
            cur.append(line)
        elif cur:
            out.append((start, cur))
            cur = []
    return out + ([(start, cur)] if cur else [])


def unsourced_figures(page: str, text: str) -> list[str]:
    """Measured figures outside a generated region whose paragraph (or table and the paragraph
    before it) names no results file."""
    text = re.sub(r"<!-- figures:[\w.-]+ -->.*?<!-- /figures -->", lambda m: "\n" * m.group(0).count("\n"),
                  text, flags=re.S)
    problems = []
    blocks = _blocks(text)
    for k, (start, lines) in enumerate(blocks):
        context = "\n".join(lines)
        if lines[0].startswith("|") and k:
            context += "\n" + "\n".join(blocks[k - 1][1])
        if RESULTS_LINK.search(context):
            continue
        problems += [f"{page}:{start + j + 1}: {line.strip()[:120]}"
                     for j, line in enumerate(lines) if MEASURED.search(line)]
    return problems


def test_every_measured_figure_is_generated_or_linked_to_its_results():
    pages = ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=REPO))
    problems = []
    for page in pages:
        with open(os.path.join(REPO, page)) as f:
            problems += unsourced_figures(page, f.read())
    assert not problems, ("figures with no results file beside them (generate them with "
                          "benchmarks/render_docs.py, or link the JSON they come from):\n  " + "\n  ".join(problems))


def test_an_unsourced_figure_is_named():
    page = "gopher_44m trains at 1,250 tokens/s on this VM.\n\nIt trains at 1,121 tokens/s\n" \
           "(benchmarks/results/compare_pytorch.json).\n"
    assert unsourced_figures("docs/x.md", page) == ["docs/x.md:1: gopher_44m trains at 1,250 tokens/s on this VM."]


def test_compile_results_are_for_the_topology_each_recipe_names():
    # A recipe moved to another slice makes its compile result stale: rerun benchmarks/compile_recipes.py.
    from benchmarks import compile_recipes
    import json
    topologies = compile_recipes.recipe_topologies()
    assert set(topologies) == set(render_docs.RECIPES)
    for path in glob.glob(os.path.join(REPO, "benchmarks", "results", "compile_*.json")):
        with open(path) as f:
            result = json.load(f)
        assert result["report"]["topology"] == topologies[result["recipe"]], path
