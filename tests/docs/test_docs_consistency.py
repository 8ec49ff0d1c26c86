"""The docs say only true things: paths, commands, flags, gin bindings, symbols and links (issue 31).

Reads README.md, benchmarks/README.md, docs/**/*.md, gin_configs/**/README.md and the comments of
every gin file, and checks each claim against the code without running anything
(tests/docs/test_docs_commands.py runs the commands). The planted tests at the bottom show that each
check fails on a wrong claim.
"""
from __future__ import annotations

import pytest

from tests.docs import doc_checks, doc_sources, symbol_checks


@pytest.fixture(scope="module")
def snippets():
    return doc_sources.all_snippets()


def _report(problems: list[str]) -> str:
    return f"{len(problems)} wrong statement(s) in the docs:\n  " + "\n  ".join(problems)


def test_the_parser_sees_the_docs(snippets):
    # Guards the checks below against passing because the parser found nothing to check.
    pages = {s.page for s in snippets}
    assert {"README.md", "docs/scale_out.md", "gin_configs/parallel/README.md"} <= pages
    assert any(p.endswith(".gin") for p in pages)
    assert len(doc_sources.commands_in(snippets)) > 60
    assert len(doc_checks.binding_keys(snippets)) > 60


def test_every_repository_path_exists(snippets):
    assert not (p := doc_checks.path_problems(snippets)), _report(p)


def test_every_link_stays_in_the_repository_and_resolves(snippets):
    assert not (p := doc_checks.link_problems(snippets)), _report(p)


def test_every_command_and_flag_is_accepted_by_its_parser(snippets):
    assert not (p := doc_checks.command_problems(snippets)), _report(p)


def test_every_inline_flag_belongs_to_some_command(snippets):
    assert not (p := doc_checks.inline_flag_problems(snippets)), _report(p)


def test_every_gin_binding_names_a_real_parameter(snippets):
    assert not (p := doc_checks.binding_problems(snippets)), _report(p)


def test_every_python_symbol_resolves(snippets):
    assert not (p := symbol_checks.symbol_problems(snippets)), _report(p)


def test_the_readme_lists_every_schedule_extra_and_package():
    # Enumerations drift when code grows: each one the README gives is compared with the code's own.
    import ast
    import os
    from gopher_jax.parallel.pipeline.schedule import SCHEDULES
    readme = doc_sources.read("README.md")
    missing = [s for s in SCHEDULES if f"`{s}`" not in readme]
    assert not missing, f"README.md's pipeline.schedule list lacks {missing} (gopher_jax/parallel/pipeline/schedule.py)"
    tree = ast.parse(doc_sources.read("setup.py"))
    extras = next(ast.literal_eval(n.value) for n in ast.walk(tree)
                  if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "EXTRAS")
    missing = [e for e in extras if f"[{e}]" not in readme]
    assert not missing, f"README.md's layout names no extra {missing} (setup.py EXTRAS)"
    layout = readme[readme.index("## Layout"):]
    packages = [d for d in sorted(os.listdir(os.path.join(doc_sources.REPO, "gopher_jax")))
                if os.path.isfile(os.path.join(doc_sources.REPO, "gopher_jax", d, "__init__.py"))]
    missing = [d for d in packages if not re_search_line(layout, rf"^  {d}/")]
    assert not missing, f"README.md's layout draws no gopher_jax/{missing} at the package level"


def re_search_line(text: str, pattern: str) -> bool:
    import re
    return re.search(pattern, text, flags=re.M) is not None


# --- tests of the test: each check names a planted wrong statement, and passes its corrected form ---
PLANTED = """# A planted page

Train with `gopher-jax train --gin_file=gin_configs/models/tiny.gin --stepz=3 --workdir=runs/x`.

```bash
gopher-jax plan --gin_file=gin_configs/parallel/gopher_1_4b_v4.gin --topolgy=v4:2x2x1
./launch_tpu.sh --name=x --zone=z --acelerator=v4-8 -- gopher-jax train --workdir=gs://b/r
```

The recipe is `gin_configs/models/tinyy.gin`; numbers in [the reference](OUTSIDE_LINK).
Bind `train.stepz = 3` or `--gin_param='ModelConfig.num_layerz=2'`; see `loop._this_hosts_data_state`,
`gopher_jax/train/loop.py:no_such_function` and `register_massivetext_tasks(vocab, paths=OUT)`.
""".replace(
    "OUTSIDE_LINK", "../" * 3 + "shared/REFERENCE.md")  # built here: tests/test_repository_stands_alone.py reads this file

CORRECTED = """# A planted page

Train with `gopher-jax train --gin_file=gin_configs/models/tiny.gin --resume --workdir=runs/x`.

```bash
gopher-jax plan --gin_file=gin_configs/parallel/gopher_1_4b_v4.gin --topology=v4:2x2x1
./launch_tpu.sh --name=x --zone=z --accelerator=v4-8 --dry-run -- gopher-jax train --workdir=gs://b/r
```

The recipe is `gin_configs/models/tiny.gin`; the design in [training](../training.md#pipeline-parallelism).
Bind `train.steps = 3` or `--gin_param='ModelConfig.num_layers=2'`; see `loop.train`,
`gopher_jax/train/loop.py:train` and `register_massivetext_tasks(vocab, manifest=OUT)`.
"""


def _planted(text: str):
    return doc_sources.markdown_snippets("docs/decisions/planted.md", text)


def test_a_wrong_flag_is_named():
    problems = doc_checks.command_problems(_planted(PLANTED))
    assert any("gopher-jax train` has no flag --stepz" in p for p in problems), problems
    assert any("gopher-jax plan` has no flag --topolgy" in p for p in problems), problems
    assert any("launch_tpu.sh has no flag --acelerator" in p for p in problems), problems
    assert not doc_checks.command_problems(_planted(CORRECTED))


def test_a_wrong_path_and_an_outside_link_are_named():
    snippets = _planted(PLANTED)
    assert any("'gin_configs/models/tinyy.gin' does not exist" in p
               for p in doc_checks.path_problems(snippets))
    assert any("points outside the repository" in p for p in doc_checks.link_problems(snippets))
    assert not doc_checks.path_problems(_planted(CORRECTED))
    assert not doc_checks.link_problems(_planted(CORRECTED))


def test_a_wrong_binding_is_named():
    problems = doc_checks.binding_problems(_planted(PLANTED))
    assert any("'train.stepz'" in p and "stepz" in p for p in problems), problems
    assert any("'ModelConfig.num_layerz'" in p for p in problems), problems
    assert not doc_checks.binding_problems(_planted(CORRECTED))


def test_a_wrong_symbol_or_keyword_is_named():
    problems = symbol_checks.symbol_problems(_planted(PLANTED))
    assert any("_this_hosts_data_state" in p for p in problems), problems
    assert any("no 'no_such_function'" in p for p in problems), problems
    assert any("takes no argument 'paths'" in p for p in problems), problems
    assert not symbol_checks.symbol_problems(_planted(CORRECTED))


def test_a_wrong_binding_in_a_gin_comment_is_named(tmp_path, monkeypatch):
    gin_text = ("# Pairs with: gopher-jax plan --gin_file=gin_configs/parallel/cpu8.gin --topolgy=v4:2x2x1\n"
                "# The alternative: MeshConfig.dcn_pipelin=1, train.microbatches=3\n"
                "MeshConfig.data = 2\n")
    page = tmp_path / "planted.gin"
    page.write_text(gin_text)
    monkeypatch.setattr(doc_sources, "REPO", str(tmp_path))
    snippets = doc_sources.gin_comment_snippets("planted.gin")
    assert any("--topolgy" in p for p in doc_checks.command_problems(snippets))
    assert any("dcn_pipelin" in p for p in doc_checks.binding_problems(snippets))
