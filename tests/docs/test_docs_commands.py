"""Every command in a code block of README.md and docs/*.md is executed (issue 27 item 3).

Each command is first parsed by its real parser, with placeholders (RUN, DIR, /tmp/out, ...) bound
to files of this test. Then, by kind:
- `./launch_tpu.sh ...` runs with `--dry-run` against a fake `gcloud`; a TPU recipe it trains is
  validated on the slice the command names (`--accelerator`).
- `gopher-jax plan` runs; `gopher-jax compile` is replaced by `plan` + the trainer's config
  validation on its topology (a TPU compile takes minutes: benchmarks/compile_recipes.py).
- `gopher-jax train` parses its gin and passes the trainer's validation on its devices (a TPU recipe
  on its topology, else on this host's 8 CPU devices). Training itself runs in
  tests/train/test_train_cli.py; here it would cost minutes of compile and data set-up.
- `scaling`, `data process`, `eval`, `sample` run in-process against fixtures: a small checkpoint
  (tests/eval/conftest.py:write_run), the committed corpus and eval fixtures, synthetic runs.csv.
- SKIPPED_BY_DESIGN below: parsed only, each with its reason.
"""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.docs.doc_checks import match_command
from tests.docs.doc_sources import REPO, Command, commands_in, markdown_snippets


def doc_commands() -> list[Command]:
    """The commands written in code blocks of README.md and docs/*.md (not messages they print)."""
    pages = ["README.md"] + sorted(glob.glob("docs/*.md", root_dir=REPO))
    snippets = [s for p in pages for s in markdown_snippets(p) if s.kind == "block"]
    return [c for c in commands_in(snippets) if not (len(c.words) > 1 and c.words[1].endswith(":"))]


# (page, a fragment of the command) -> why it is parsed but not run. Keep it short.
SKIPPED_BY_DESIGN = {
    ("docs/data_input.md", "gopher-jax data process --runner=dataflow"): "needs Dataflow and a gs:// bucket",
    ("docs/data_input.md", "gopher-jax data pack --manifest=gs://"): "needs a gs:// bucket",
    ("docs/data_input.md", "gopher-jax data train-tokenizer"): "trains a 32k SentencePiece model: minutes "
                                                              "(tests/data/test_tokenizer.py trains small ones)",
    ("docs/data_input.md", "gopher-jax eval --workdir runs/mt --task seqio"): "needs the run's seqio mixture "
                                                                              "(tests/eval covers --task seqio)",
    ("docs/evaluation.md", "gopher-jax eval --workdir RUN --task seqio"): "needs a registered seqio task",
    ("docs/interop.md", "gopher-jax import"): "needs a local Hugging Face model (tests/interop builds one)",
    ("docs/interop.md", "gopher-jax export"): "needs a run with its tokenizer (tests/interop exports one)",
    ("docs/scaling.md", "gopher-jax scaling plot"): "needs curves from a sweep (tests/scaling plots them)",
    ("docs/scaling.md", "gopher-jax scaling reproduce"): "builds the scaling corpus and trains the whole IsoFLOP "
                                                         "sweep (about an hour on 2 cores); tests/scaling/"
                                                         "test_reproduce.py runs its plan, fit and report",
}
# Commands that elide their arguments (`...`) are synopses (their flags are checked by
# test_docs_consistency.py); commands on a cluster runner or a gs:// bucket are parsed only.
SYNOPSIS = re.compile(r"--runner[ =](dataflow|flink|spark|portable)|gs://")
# Commands that run here: the cheap ones, and one of each eval / sample path.
RUN_HERE = [
    ("docs/scale_out.md", "gopher-jax plan"),
    ("docs/scaling.md", "gopher-jax scaling flops"),
    ("docs/scaling.md", "gopher-jax scaling optimal"),
    ("docs/scaling.md", "gopher-jax scaling fit"),
    ("docs/scaling.md", "gopher-jax scaling sweep"),
    ("docs/data_pipeline.md", "gopher-jax data process --input tests/fixtures/corpus"),
    ("docs/data_pipeline.md", "gopher-jax data process --input x.jsonl"),
    ("docs/data_pipeline.md", "gopher-jax data process --gin_file gin_configs/data/gopher.gin --input web="),
    ("docs/data_input.md", "gopher-jax data process --input massiveweb=raw/web"),
    ("docs/evaluation.md", "gopher-jax eval --workdir RUN --task lambada"),
    ("docs/evaluation.md", "--mesh data=2,fsdp=2,tensor=2"),
    ("docs/evaluation.md", "gopher-jax sample --workdir RUN --prompt"),
]
# Kinds of command parsed (flags, choices, required arguments) but not run here, and why.
PARSED_ONLY = {
    "eval": "the same path as the evals in RUN_HERE; each compiles its scorer anew (~10 s on 2 shared cores)",
    "sample": "the same path as the sample in RUN_HERE",
    "compare": "needs a finished sweep (tests/sweep/ compares a trained one)",
}
# Arguments shortened so a documented command runs in seconds (same code path, fewer items).
SHORTER = {"--limit": "4", "--max_new_tokens": "4", "--bootstrap": "0"}
EXTRA_ARGS = {"scaling fit": ["--bootstrap=0"], "eval": ["--limit=4"]}


def _key(cmd: Command) -> tuple[str, str]:
    return cmd.where.split(":")[0], " ".join(cmd.words)


def _listed(cmd: Command, table) -> str | None:
    page, text = _key(cmd)
    for (p, fragment), value in (table.items() if isinstance(table, dict) else ((k, k) for k in table)):
        if p == page and fragment in text:
            return value
    return None


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Placeholder -> file of this test: a checkpoint, synthetic scaling runs, output folders."""
    from gopher_jax.scaling.runs import write_csv
    from gopher_jax.scaling.synthetic import isoflop_runs
    from tests.eval.conftest import write_run
    from tests.fixtures.paths import CORPUS, EVAL

    tmp = tmp_path_factory.mktemp("doc_commands")
    run = write_run(str(tmp / "run"))
    write_csv(isoflop_runs(budgets=(6e18, 1e19, 3e19), sizes_per_budget=5), str(tmp / "runs.csv"))
    return {"RUN": run, "runs/mt": run, "runs/tiny": str(tmp / "tiny"), "DIR": str(tmp / "dir"),
            "/tmp/out": str(tmp / "out"), "/tmp/o": str(tmp / "o"), "/tmp/stats.json": str(tmp / "stats.json"),
            "/tmp/isoflop_tiny": str(tmp / "isoflop"), "processed": str(tmp / "processed"),
            "runs.csv": str(tmp / "runs.csv"), "runs/positions": str(tmp / "positions"), "x.jsonl": os.path.join(CORPUS, "c4_sample_100.jsonl"),
            "raw/web": os.path.join(CORPUS, "c4_sample_100.jsonl"), "raw/books": os.path.join(CORPUS, "gutenberg"),
            "raw/news": os.path.join(CORPUS, "wikitext2"), "/data/web": os.path.join(CORPUS, "c4_sample_100.jsonl"),
            "EVAL_DIR": EVAL, "lambada_openai.jsonl": os.path.join(EVAL, "lambada_openai.jsonl")}


def bind(words: list[str], places: dict) -> list[str]:
    """The words with placeholders bound (also inside --flag=VALUE and NAME=VALUE) and SHORTER applied."""
    out = []
    for i, w in enumerate(words):
        flag, eq, value = w.partition("=")
        if eq and (value in places or value.split("=")[-1] in places):
            head, _, last = value.rpartition("=")
            w = f"{flag}={head + '=' if head else ''}{places[last]}"
        elif w in places:
            w = places[w]
        if i and words[i - 1] in SHORTER:
            w = SHORTER[words[i - 1]]
        elif flag in SHORTER and eq:
            w = f"{flag}={SHORTER[flag]}"
        out.append(w)
    return out


def parse(words: list[str]):
    """Parses `gopher-jax ...` words with the command's own parser; returns (command, namespace)."""
    import argparse
    import importlib
    from gopher_jax.cli import COMMANDS
    command, rest = match_command(tuple(words))
    assert command, f"not a gopher-jax command: {words}"
    parser = argparse.ArgumentParser(prog=f"gopher-jax {command}")
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    try:
        return command, parser.parse_args(rest)
    except SystemExit as e:
        raise AssertionError(f"`{' '.join(words)}` does not parse (exit {e.code})") from None


def gopher_jax(words: list[str]) -> int:
    from gopher_jax.cli import main
    return main(list(words[1:]))


# ---------------------------------------------------------------------------------- TPU recipes
def accelerator_topology(accelerator: str) -> str:
    """libtpu's topology for a Cloud TPU accelerator type (v4-N / v5p-N count TensorCores, 2 per chip)."""
    gen, cores = accelerator.split("-")
    chips = int(cores) // 2 if gen in ("v2", "v3", "v4", "v5p") else int(cores)
    dims = {1: "1x1x1", 2: "1x2x1", 4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4",
            128: "4x4x8", 256: "4x8x8", 512: "8x8x8", 1024: "8x8x16"}[chips]
    if gen in ("v2", "v3"):
        side = int(chips ** 0.5)
        return f"{gen}:{side}x{chips // side}"
    return f"{'v5' if gen == 'v5p' else gen}:{dims}"


def validate_on(gin_files: list[str], gin_params: list[str], topology: str | None) -> None:
    """The trainer's config validation (gopher_jax/train/validate.py) on a TPU topology or on this host."""
    import jax
    from gopher_jax.plan import configs
    from gopher_jax.plan.topology import parse_topology
    from gopher_jax.train.validate import validate
    model, _, train, mesh, rules = configs.load(gin_files, gin_params)
    if topology is None:
        validate(model, train, mesh, rules, num_devices=jax.device_count())
        return
    topo = parse_topology(topology)
    hosts = max(1, topo.num_chips // 4)   # TPU VM hosts hold 4 chips (v2/v3: 4 chips, 8 cores)
    validate(model, train, mesh, rules, num_devices=topo.num_devices, num_processes=hosts)


def recipe_topology(recipe: str) -> str:
    """The topology a TPU recipe names in its header (`--topology=...` of its plan command)."""
    with open(os.path.join(REPO, recipe)) as f:
        found = re.findall(r"--topology=(\S+)", f.read())
    assert found, f"{recipe}: its header names no --topology"
    return found[0]


def _gin(args) -> tuple[list[str], list[str]]:
    return list(args.gin_file), list(args.gin_param)


def _tpu_recipe(gin_files: list[str]) -> str | None:
    for f in gin_files:
        if re.search(r"parallel/\w+_v\d\w*\.gin$", f):
            return f
    return None


FAKE_GCLOUD = f"#!{sys.executable}\nimport sys\nprint('fake gcloud', *sys.argv[1:])\n"


def run_launch(cmd: Command, tmp_path) -> None:
    """launch_tpu.sh --dry-run, then the trained recipe validated on the named accelerator's topology."""
    words = cmd.required_words()
    split = words.index("--")
    launch, inner = words[:split], words[split + 1:]
    if "--dry-run" not in launch:
        launch.append("--dry-run")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", os.path.join(REPO, "launch_tpu.sh"), *launch[1:], "--", *inner],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{cmd.where}: {cmd.text}\n{proc.stderr[-2000:]}"
    if inner[:1] != ["gopher-jax"]:
        return   # e.g. `-- pip install ...`: the dry run above is the whole check
    _, args = parse(inner)
    accel = next(w.split("=", 1)[1] for w in launch if w.startswith("--accelerator="))
    gin_files, gin_params = _gin(args)
    if _tpu_recipe(gin_files):
        validate_on(gin_files, gin_params, accelerator_topology(accel))


# ---------------------------------------------------------------------------------------- tests
COMMANDS = doc_commands()


def test_the_collector_finds_the_documented_commands():
    pages = {c.where.split(":")[0] for c in COMMANDS}
    assert {"README.md", "docs/scale_out.md", "docs/evaluation.md", "docs/scaling.md"} <= pages
    assert len(COMMANDS) > 40


def test_the_lists_name_only_documented_commands():
    # A stale entry (its command left the docs) would silently stop covering anything.
    for table in (SKIPPED_BY_DESIGN, RUN_HERE):
        for page, fragment in (table if isinstance(table, list) else table.keys()):
            assert any(_key(c)[0] == page and fragment in _key(c)[1] for c in COMMANDS), (page, fragment)


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.where for c in COMMANDS])
def test_documented_command(cmd: Command, places, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("GOPHER_JAX_EVAL_DIR", places["EVAL_DIR"])   # tasks' default files: the fixtures
    if cmd.program == "./launch_tpu.sh":
        run_launch(cmd, tmp_path)
        return
    words = bind(cmd.required_words(), places)
    if "..." in words or any(w.endswith("=...") for w in words):
        return   # a synopsis with elided arguments: its flags are checked by test_docs_consistency.py
    command, args = parse(words)
    if _listed(cmd, SKIPPED_BY_DESIGN) or SYNOPSIS.search(cmd.text):
        return
    if command == "plan":
        words += [] if "--pipeline_costs" in " ".join(words) else ["--pipeline_costs=analytic"]
        assert gopher_jax(words) == 0, cmd.text
    elif command == "compile":
        plan = ["gopher-jax", "plan", *[f"--gin_file={f}" for f in args.gin_file],
                *[f"--gin_param={p}" for p in args.gin_param], f"--topology={args.topology}",
                "--pipeline_costs=analytic"]
        assert gopher_jax(plan) == 0, cmd.text
        validate_on(*_gin(args), args.topology)
    elif command == "train":
        gin_files, gin_params = _gin(args)
        if not gin_files or any(f.startswith(("RUN", places["RUN"])) for f in gin_files):
            return   # continues an existing run's own config.gin: nothing to validate beyond parsing
        recipe = _tpu_recipe(gin_files)
        validate_on(gin_files, gin_params, recipe_topology(recipe) if recipe else None)
    elif command == "sweep":   # validates every arm and writes the plan; training is tests/sweep/'s
        words += [] if "--dry-run" in words else ["--dry-run"]
        assert gopher_jax(words) == 0, cmd.text
    elif command == "scaling sweep":
        words = [w for w in words if w not in ("--run", "--collect", "--fit")]
        words += [] if "--dry-run" in words else ["--dry-run"]
        assert gopher_jax(words) == 0, cmd.text
    elif _listed(cmd, RUN_HERE):
        words += [w for w in EXTRA_ARGS.get(command, []) if w.split("=")[0] not in " ".join(words)]
        assert gopher_jax(words) == 0, cmd.text
    elif command in PARSED_ONLY:
        return
    else:
        pytest.fail(f"{cmd.where}: `{cmd.text}` is neither run, validated nor listed in SKIPPED_BY_DESIGN")


def test_a_slice_the_recipe_does_not_divide_is_refused():
    # docs/data_input.md once launched gopher_1_4b_v4.gin on v4-64: batch 128 / 8 microbatches = 16 rows
    # over 32 data shards. The validation above must refuse it.
    from gopher_jax.train.validate import ConfigError
    with pytest.raises(ConfigError):
        validate_on(["gin_configs/parallel/gopher_1_4b_v4.gin"], [], accelerator_topology("v4-64"))
