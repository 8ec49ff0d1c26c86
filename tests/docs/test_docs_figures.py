"""Figures with one source (issue 31).

The rule (tests/docs/figure_checks.py states it in full): in README.md, docs/**/*.md,
gin_configs/**/README.md and the comments of every gin file, a number with a unit of speed
(tokens/s, MB/s, GFLOP/s, "% MFU", "x faster"), memory (KB..TB, KiB..TiB) or time (ms, s, min, h,
s/step), or a bare number in a table column whose header names such a unit, must
  1. lie inside a generated region (benchmarks/render_docs.py writes it from a results JSON that
     records host and date; a region that differs from what the script writes fails here), or
  2. share its paragraph (a table: with the paragraph before and after it; gin: the comment block)
     with the path of an existing results file, benchmarks/results/<name>.json, or
  3. be listed in figure_checks.NOT_MEASURED with the reason it is not a measurement (a paper's or
     vendor's constant, a configured default, arithmetic from a shape); a stale entry fails too.
Compile results are keyed by their recipe: a recipe whose bindings (or included files, or header
topology) changed since its compile makes its result stale, found by comparing hashes, not compiling.
The planted tests at the bottom show each check failing on a wrong input.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import sys

import pytest

from tests.docs import figure_checks
from tests.docs.doc_sources import REPO, read

sys.path.insert(0, REPO)
from benchmarks import compile_recipes, render_docs  # noqa: E402


# ------------------------------------------------------------------------------ generated regions
def test_every_generated_region_matches_its_results_file():
    stale = render_docs.stale_regions()
    assert not stale, f"regions differ from their results files (run python benchmarks/render_docs.py): {stale}"


def test_the_docs_hold_the_regions_they_promise():
    assert render_docs.regions("README.md", read("README.md")) == ["throughput_44m"]
    assert render_docs.regions("gin_configs/parallel/README.md", read("gin_configs/parallel/README.md")) == [
        "recipe_table", "compile_table"]
    for path in glob.glob("gin_configs/parallel/*_v*.gin", root_dir=REPO):
        recipe = os.path.basename(path)[:-4]
        assert render_docs.regions(path, read(path))[:1] == [f"recipe_{recipe}"], path
    assert render_docs.regions("gin_configs/parallel/gopher_280b_v3.gin",
                               read("gin_configs/parallel/gopher_280b_v3.gin"))[1:] == [
        "plan_schedules_note_gopher_280b_v3"]
    assert render_docs.regions("docs/decisions/0002-pipeline.md", read("docs/decisions/0002-pipeline.md")) == [
        "plan_schedules_gopher_280b_v3"]
    assert render_docs.regions("docs/data_input.md", read("docs/data_input.md")) == ["embedded_corpus"]


def test_an_indented_region_keeps_its_indent():
    text = read("docs/decisions/0002-pipeline.md")
    edited = re.sub(r"(  <!-- figures:plan_schedules_gopher_280b_v3 -->\n)(.*?)(  <!-- /figures -->)",
                    r"\1  | gpipe | 9.999 |\n\3", text, flags=re.S)
    assert edited != text
    assert render_docs.render_text("docs/decisions/0002-pipeline.md", edited) == text


def test_a_hand_edited_figure_is_caught_and_rewritten():
    text = read("README.md")
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


# ------------------------------------------------------------------- hand-typed figures (the rule)
def test_every_figure_is_generated_or_beside_its_results_file():
    problems = [p for page in figure_checks.pages() for p in figure_checks.unsourced_figures(page, read(page))]
    assert not problems, (
        "figures with no results file in their paragraph (generate them with benchmarks/render_docs.py, name "
        "the benchmarks/results/*.json they come from, or, if they measure nothing, add them to "
        "tests/docs/figure_checks.NOT_MEASURED with the reason):\n  " + "\n  ".join(problems))


def test_the_not_measured_list_has_no_stale_entries():
    stale = [f"{page}: {fig!r}" for (page, fig) in figure_checks.NOT_MEASURED
             if fig not in {f for _, f, _ in figure_checks.figures(page, read(page))}]
    assert not stale, f"NOT_MEASURED entries whose figure is no longer on the page (remove them): {stale}"


def test_the_rule_sees_figures_in_every_form():
    found = [f for _, f, _ in figure_checks.figures("docs/x.md", (
        "It trains at 1,250 tokens/s and 72% MFU, a step takes 3.27-3.36 s/step, compile ~2 s,\n"
        "kernel 32–38 ms, 4.25 GiB/device, 12.9 MB read at 9.30 MB/s, 435 GFLOP/s, 1.29× faster.\n"
        "Not figures: a 280B model, the formula (P-1)/(3MB+P-1), P=4, MB=12, 128 x 2048, GPT-2 tokens/s.\n"
        "\n"
        "| stage | docs/s | memory | total s |\n"
        "|---|---|---|---|\n"
        "| unicode | 434 | 12 | **1.62** |\n"))]
    assert found == ["1,250 tokens/s", "72% MFU", "3.27-3.36 s/step", "~2 s", "32–38 ms", "4.25 GiB",
                     "12.9 MB", "9.30 MB/s", "435 GFLOP/s", "1.29× faster", "434", "1.62"], found
    gin = "train.microbatches = 12   # step 43.4 s at 4.17 GiB/core\n# figures:x\n# 9 s\n# /figures\n"
    assert [f for _, f, _ in figure_checks.figures("a.gin", gin)] == ["43.4 s", "4.17 GiB"]


def test_an_unsourced_figure_is_named_and_a_sourced_one_passes():
    page = ("gopher_44m trains at 1,250 tokens/s on this VM.\n\n"
            "It trains at 1,121 tokens/s\n(benchmarks/results/compare_pytorch.json).\n\n"
            "A link to a results file that does not exist: 5 s (benchmarks/results/nowhere.json).\n\n"
            "Measured (benchmarks/results/compare_pytorch.json):\n\n| a | s |\n|---|---|\n| x | 3.5 |\n\n"
            "| a | s |\n|---|---|\n| y | 4.5 |\n\nno results file here\n")
    assert figure_checks.unsourced_figures("docs/x.md", page, allowed={}) == [
        "docs/x.md:1: 1,250 tokens/s | gopher_44m trains at 1,250 tokens/s on this VM.",
        "docs/x.md:6: 5 s | A link to a results file that does not exist: 5 s (benchmarks/results/nowhere.json).",
        "docs/x.md:16: 4.5 | | y | 4.5 |"]


def test_a_planted_figure_in_a_real_page_fails_and_the_allowlist_is_exact():
    text = read("docs/reliability.md") + "\nThe restore now takes 12.5 s on this host.\n"
    assert [p.split(": ", 1)[1] for p in figure_checks.unsourced_figures("docs/reliability.md", text)] == [
        "12.5 s | The restore now takes 12.5 s on this host."]
    # An allowed figure is allowed on its page only.
    assert figure_checks.unsourced_figures("docs/other.md", "Cloud TPU gives ~30 s.\n") == [
        "docs/other.md:1: ~30 s | Cloud TPU gives ~30 s."]
    # A gin comment is checked too, and a figure inside a generated region is not.
    gin = read("gin_configs/parallel/gopher_1_4b_v4.gin") + "train.steps = 5   # about 20 s per step here\n"
    assert [p.split(": ", 1)[1] for p in figure_checks.unsourced_figures("gin_configs/x.gin", gin)] == [
        "20 s | about 20 s per step here"]


# ------------------------------------------------------------- compile results keyed by their recipe
def test_compile_results_match_their_recipes():
    assert set(compile_recipes.recipe_topologies()) == set(render_docs.RECIPES)
    stale = compile_recipes.stale_results()
    assert not stale, "compile results older than their recipes:\n  " + "\n  ".join(stale)


def _copy_recipes_and_results(dst) -> str:
    shutil.copytree(os.path.join(REPO, "gin_configs"), dst / "gin_configs")
    os.makedirs(dst / "benchmarks" / "results")
    for pattern in ("compile_*.json", "plan_schedules_*.json"):
        for path in glob.glob(os.path.join(REPO, "benchmarks", "results", pattern)):
            shutil.copy(path, dst / "benchmarks" / "results")
    return str(dst)


def _edit(root: str, rel: str, old: str | None, new: str) -> None:
    path = os.path.join(root, rel)
    with open(path) as f:
        text = f.read()
    text = text + new if old is None else text.replace(old, new, 1)
    with open(path, "w") as f:
        f.write(text)


def test_a_changed_recipe_makes_its_compile_result_stale(tmp_path):
    root = _copy_recipes_and_results(tmp_path)
    assert compile_recipes.stale_results(root) == []
    # Comments are not bindings: a re-rendered header or a reworded note changes nothing.
    _edit(root, "gin_configs/parallel/chinchilla_70b_v4.gin", None, "# a new note\n")
    _edit(root, "gin_configs/parallel/gopher_1_4b_v4.gin", None, "train.microbatches = 16\n")   # own binding
    _edit(root, "gin_configs/models/gopher_7_1b.gin", None, "ModelConfig.num_layers = 30\n")  # included file
    _edit(root, "gin_configs/parallel/gopher_280b_v3.gin", "--topology=4xv3:32x32", "--topology=2xv3:32x32")
    stale = compile_recipes.stale_results(root)
    assert len(stale) == 4, stale
    assert "compile_gopher_1_4b_v4.json" in stale[0] and "train.microbatches: 8 -> 16" in stale[0]
    assert "compile_gopher_280b_v3.json: compiled for 4xv3:32x32, the recipe names 2xv3:32x32" in stale[1]
    assert "compile_gopher_7_1b_v4.json" in stale[2] and "ModelConfig.num_layers: 32 -> 30" in stale[2]
    assert all("rerun python benchmarks/compile_recipes.py --recipes" in s for s in stale[:3])
    # plan's per-schedule results are keyed the same way
    assert stale[3].startswith("benchmarks/results/plan_schedules_gopher_280b_v3.json: compiled for 4xv3:32x32")
    assert stale[3].endswith("(rerun python benchmarks/plan_schedules.py --recipe gopher_280b_v3)")


def test_a_changed_schedule_makes_both_280b_results_stale(tmp_path):
    root = _copy_recipes_and_results(tmp_path)
    now = compile_recipes.recipe_bindings("gopher_280b_v3")["bindings"]["pipeline.schedule"]
    other = "'gpipe'" if now != "'gpipe'" else "'1f1b'"
    _edit(root, "gin_configs/parallel/gopher_280b_v3.gin", f"pipeline.schedule = {now}", f"pipeline.schedule = {other}")
    stale = compile_recipes.stale_results(root)
    assert [s.split(":")[0] for s in stale] == ["benchmarks/results/compile_gopher_280b_v3.json",
                                                "benchmarks/results/plan_schedules_gopher_280b_v3.json"]
    assert all(f"pipeline.schedule: {now} -> {other}" in s for s in stale)


def test_a_compile_result_without_a_bindings_hash_is_stale(tmp_path):
    root = _copy_recipes_and_results(tmp_path)
    path = os.path.join(root, "benchmarks", "results", "compile_gopher_1_4b_v4.json")
    with open(path) as f:
        result = json.load(f)
    del result["recipe_bindings"]
    with open(path, "w") as f:
        json.dump(result, f)
    assert compile_recipes.stale_results(root) == [
        "benchmarks/results/compile_gopher_1_4b_v4.json: records no recipe bindings hash "
        "(rerun python benchmarks/compile_recipes.py --recipes gopher_1_4b_v4)"]


def test_the_recipe_headers_say_what_each_recipe_is():
    # model, run file, topology, mesh, schedule and compile memory, from the compile result
    for recipe in render_docs.RECIPES:
        with open(os.path.join(REPO, "benchmarks", "results", f"compile_{recipe}.json")) as f:
            result = json.load(f)
        header = render_docs.recipe_header(recipe)(f"gin_configs/parallel/{recipe}.gin").replace("\n# ", " ")
        bindings = result["recipe_bindings"]
        for needed in (bindings["includes"][0], f"Topology {result['report']['topology']}", "Mesh ",
                       "Pipeline schedule: ", "Memory per device from `gopher-jax compile`: "
                       f"{result['report']['bytes_per_device'] / 2**30:.2f} GiB", f"compile_{recipe}.json",
                       bindings["sha256"][:12]):
            assert needed in header, (recipe, needed, header)
    # The 280B's schedule is the one its gin binds now (its compile result is current, checked above).
    header = render_docs.recipe_header("gopher_280b_v3")("gin_configs/parallel/gopher_280b_v3.gin")
    schedule = compile_recipes.recipe_bindings("gopher_280b_v3")["bindings"]["pipeline.schedule"].strip("'")
    assert f"Pipeline schedule: {schedule}" in header.replace("\n# ", " ")
