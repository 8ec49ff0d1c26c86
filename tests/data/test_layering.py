"""One-way layering: the library never imports the registrations (data_tasks); registrations import
the library; only command modules (gopher-jax subcommands) import data_tasks."""
import ast
import glob
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command_modules():
    """The `gopher-jax` command modules: they (the CLI) may import the registrations."""
    from gopher_jax.cli import COMMANDS
    return {m.replace(".", "/") + ".py" for m, _ in COMMANDS.values()}


def _imports(path):
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_library_never_imports_data_tasks():
    offenders, commands = {}, _command_modules()
    for path in glob.glob(os.path.join(REPO, "gopher_jax", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, REPO)
        if rel in commands:
            continue
        bad = [m for m in _imports(path) if m.split(".")[0] == "data_tasks"]
        if bad:
            offenders[rel] = bad
    assert not offenders, offenders


def test_registrations_import_the_library_not_the_reverse():
    mods = [m for p in glob.glob(os.path.join(REPO, "data_tasks", "*.py")) for m in _imports(p)]
    assert any(m.startswith("gopher_jax.data") for m in mods)
