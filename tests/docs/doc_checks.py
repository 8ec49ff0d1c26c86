"""Checks of what the docs claim against the code, without running anything: paths, commands and
flags, gin bindings, links (Python symbols: tests/docs/symbol_checks.py).

Each check takes snippets (tests/docs/doc_sources.py) and returns problems, "page:line: what is
wrong", so a test can assert none and the tests of the test can plant a wrong claim and see it named.
"""
from __future__ import annotations

import argparse
import functools
import glob
import importlib
import os
import re

from tests.docs.doc_sources import (FILE_EXTS, REPO, TOP_DIRS, Snippet, commands_in, headings_slugs,
                                    resolve_repo_path)

# Words that end a dotted token when it is a file name, not a Python attribute or gin parameter.
_FILE_SUFFIXES = {"py", "gin", "md", "json", "jsonl", "png", "txt", "log", "csv", "model", "cor", "bz2",
                  "gz", "sh", "cc", "yaml", "toml", "cfg", "html", "vocab", "so", "zst", "parquet", "tfrecord"}
# Flags of programs other than gopher-jax that the docs name inline.
EXTERNAL_FLAGS = {
    "--setup_file", "--sdk_container_image", "--experiments",  # Beam pipeline options (after `--`)
    "--model", "--model_args", "--tasks", "--include_package", "--num_fewshot",  # lm-eval's CLI (gopher-jax-lm-eval)
    "--node-count", "--node-prefix", "--worker", "--runtime-version",  # gcloud, as launch_tpu.sh calls it
}
# ---------------------------------------------------------------------------------------------- paths
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
_PATH = re.compile(r"(?<![\w./:@$%~-])((?:\.\./)*[A-Za-z_][\w.-]*(?:/[\w.-]+)+/?|[\w-]+\.(?:py|sh|md))(?![\w/])")


def _looks_like_placeholder(token: str) -> bool:
    parts = token.strip("/").split("/")
    return any(p in ("...", "..") and i > 0 for i, p in enumerate(parts)) or any(
        re.fullmatch(r"[A-Z][A-Z0-9_]*", p) for p in parts)


_SIBLING_SHARED = ".." + "/shared"  # spelled in two parts: tests/test_repository_stands_alone.py reads this file


def path_problems(snippets: list[Snippet]) -> list[str]:
    """Every repository path the docs name must exist; nothing may point into a sibling shared/ directory."""
    problems = []
    for s in snippets:
        if s.kind == "link":
            continue
        text = _URL.sub(" ", s.text)
        if _SIBLING_SHARED in text:
            problems.append(f"{s.where()}: names {_SIBLING_SHARED}, which a clone does not have: {s.text!r}")
            continue
        for m in _PATH.finditer(text):
            token = m.group(1).rstrip(".")
            head = token.split("/")[0]
            is_file = token.endswith(FILE_EXTS)
            if re.match(r"\.?[{<]", text[m.end():m.end() + 2]) or token.endswith("/s") or _installed_module(head):
                continue   # cpu_attention.{py,cc}; a unit (docs/s); a path inside an installed package
            if "/" not in token:
                # A bare .py may be any library's module; a bare .md or .sh must be one of ours.
                if not token.endswith((".sh", ".md")) or _basename_exists(token):
                    continue
                problems.append(f"{s.where()}: no file named {token!r} in the repository")
                continue
            if not (head in TOP_DIRS or is_file) or _looks_like_placeholder(token):
                continue
            if head == "runs" and token.count("/") >= 2:   # a run's workdir, e.g. runs/tiny/config.gin
                continue
            if resolve_repo_path(token, s.page) is None:
                problems.append(f"{s.where()}: path {token!r} does not exist")
    return problems


@functools.lru_cache(maxsize=None)
def _basenames() -> frozenset[str]:
    names = set()
    for d, dirs, files in os.walk(REPO):
        dirs[:] = [x for x in dirs if not x.startswith(".") and x not in ("node_modules", "__pycache__")]
        names.update(files)
    return frozenset(names)


@functools.lru_cache(maxsize=None)
def _installed_module(name: str) -> bool:
    """Whether name is an importable top-level module from outside the repository (pydoc_data, ...)."""
    import importlib.util
    if name in TOP_DIRS or not name.isidentifier():
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    return spec is not None and not (spec.origin or "").startswith(REPO)


def _basename_exists(name: str) -> bool:
    return name in _basenames()


# ------------------------------------------------------------------------------------------- commands
@functools.lru_cache(maxsize=None)
def gopher_jax_parser(command: str) -> argparse.ArgumentParser | None:
    """The argparse parser `gopher-jax COMMAND` builds (the module's add_arguments); None when the
    command's module is missing (`gopher-jax` then answers "not implemented")."""
    from gopher_jax.cli import COMMANDS
    try:
        module = importlib.import_module(COMMANDS[command][0])
    except ModuleNotFoundError as e:
        if e.name and COMMANDS[command][0].startswith(e.name):
            return None
        raise
    parser = argparse.ArgumentParser(prog=f"gopher-jax {command}")
    module.add_arguments(parser)
    return parser


@functools.lru_cache(maxsize=None)
def launch_flags() -> frozenset[str]:
    """The flags launch_tpu.sh's argument loop accepts (its `case` patterns)."""
    with open(os.path.join(REPO, "launch_tpu.sh")) as f:
        return frozenset(re.findall(r"^\s*(--[\w-]+)(?:=\*)?\)", f.read(), flags=re.M))


def match_command(words: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Returns the gopher-jax command that words[1:] start with, and the words after it."""
    from gopher_jax.cli import COMMANDS
    for n in (2, 1):
        if len(words) > n and " ".join(words[1:1 + n]) in COMMANDS:
            return " ".join(words[1:1 + n]), list(words[1 + n:])
    return None, list(words[1:])


def _flag_names(words: list[str]) -> list[str]:
    names = []
    for w in words:
        if w == "--":
            break
        for alt in w.replace("\\|", "|").split("|"):   # `[--md|--csv|--json]`: each alternative
            if alt.startswith("--") and len(alt) > 2 and alt != "--...":
                names.append(alt.split("=", 1)[0])
    return names


def command_problems(snippets: list[Snippet]) -> list[str]:
    """Every `gopher-jax` subcommand exists and each of its --flags is one its parser accepts."""
    problems = []
    for cmd in commands_in(snippets):
        words = cmd.words
        if cmd.program == "./launch_tpu.sh":
            for name in _flag_names(list(words[1:])):
                if name not in launch_flags():
                    problems.append(f"{cmd.where}: launch_tpu.sh has no flag {name} ({cmd.text!r})")
            if "--" not in words:
                continue
            words = tuple(words[words.index("--") + 1:])
            if not words or words[0] != "gopher-jax":
                continue
        problems += _gopher_jax_problems(cmd.where, cmd.text, words)
    return problems


def _gopher_jax_problems(where: str, text: str, words: tuple[str, ...]) -> list[str]:
    if len(words) < 2 or not re.match(r"[a-z]", words[1]):   # `gopher-jax COMMAND --help`, `gopher-jax --help`
        return []
    if any(w.endswith(":") for w in words[1:3]):   # a message it prints: "gopher-jax train: restoring ..."
        return []
    if "|" in words[1]:   # `gopher-jax plan|compile --gin_file=...`: each alternative
        return [p for alt in words[1].split("|")
                for p in _gopher_jax_problems(where, text, (words[0], alt, *words[2:]))]
    command, rest = match_command(words)
    if command is None:
        return [f"{where}: gopher-jax has no command {' '.join(words[1:3])!r} ({text!r})"]
    parser = gopher_jax_parser(command)
    if parser is None:
        return [f"{where}: `gopher-jax {command}` is in the command table but its module is missing"]
    options = parser._option_string_actions
    return [f"{where}: `gopher-jax {command}` has no flag {name} ({text!r})"
            for name in _flag_names(rest) if name not in options]


@functools.lru_cache(maxsize=None)
def benchmark_flags() -> frozenset[str]:
    """The flags benchmarks/*.py declare (add_argument("--x", ...))."""
    flags = set()
    for path in glob.glob(os.path.join(REPO, "benchmarks", "*.py")):
        with open(path, encoding="utf-8") as f:
            flags.update(re.findall(r"add_argument\(\s*[\"'](--[\w-]+)", f.read()))
    return frozenset(flags)


def all_known_flags() -> set[str]:
    from gopher_jax.cli import COMMANDS
    flags = set(launch_flags()) | EXTERNAL_FLAGS | benchmark_flags()
    for command in COMMANDS:
        parser = gopher_jax_parser(command)
        flags |= set(parser._option_string_actions) if parser else set()
    return flags


def inline_flag_problems(snippets: list[Snippet]) -> list[str]:
    """A --flag written alone in inline code must be a flag of some gopher-jax command or launch_tpu.sh."""
    known = all_known_flags()
    problems = []
    for s in snippets:
        m = re.fullmatch(r"(--[a-z][\w-]*)(=\S*)?", s.text) if s.kind == "inline" else None
        if m and m.group(1) not in known and not m.group(1).startswith("--xla_"):
            problems.append(f"{s.where()}: no gopher-jax command or launch_tpu.sh takes {m.group(1)}")
    return problems


# ------------------------------------------------------------------------------------------ gin bindings
@functools.lru_cache(maxsize=None)
def import_configurables() -> None:
    """Imports every module of the package (and data_tasks) that declares a gin configurable."""
    for root in ("gopher_jax", "data_tasks"):
        for path in sorted(glob.glob(os.path.join(REPO, root, "**", "*.py"), recursive=True)):
            with open(path, encoding="utf-8") as f:
                if "gin.configurable" not in f.read():
                    continue
            importlib.import_module(os.path.relpath(path[:-3], REPO).replace(os.sep, "."))


def _registered(selector: str) -> bool:
    import gin
    return bool(gin.config._REGISTRY.matching_selectors(selector))


def sweep_spec_field(key: str) -> bool:
    """Whether key is a field of a sweep spec (`sweep.axes`, ...): gin syntax, but no configurable."""
    if not key.startswith("sweep.") or key.count(".") != 1:
        return False
    try:
        from gopher_jax.sweep.spec import _SPEC_FIELDS
    except ImportError:
        return False
    return key.split(".", 1)[1] in _SPEC_FIELDS


def gin_binding_error(key: str) -> str | None:
    """None if `configurable.param` names a real parameter of a registered configurable (or a sweep
    spec field, gopher_jax/sweep/spec.py), else why not."""
    import gin
    import_configurables()
    if sweep_spec_field(key):
        return None
    try:
        gin.bind_parameter(key, None)
    except Exception as e:  # gin raises ValueError / KeyError with the reason
        return str(e).splitlines()[0]
    finally:
        gin.clear_config()
    return None


_BINDING = re.compile(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)\s*=(?!=)")
_GIN_PARAM = re.compile(r"--gin_param[= ]\s*['\"]?([A-Za-z_][\w.]*)\s*=")


def binding_keys(snippets: list[Snippet]) -> list[tuple[Snippet, str, bool]]:
    """(snippet, `configurable.param`, strict) for each gin binding the snippets write.

    Strict keys are written as bindings (`x.y = v` in gin code or gin comments, --gin_param values):
    their configurable must exist. A bare `x.y` in inline code is checked only when `x` is a
    registered configurable (it may be a Python attribute otherwise).
    """
    import_configurables()
    out = []
    for s in snippets:
        text = s.text
        if s.kind == "block":
            for m in _GIN_PARAM.finditer(text):
                out.append((s, m.group(1), True))
            m = re.match(r"([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)+)\s*=(?!=)\s*\S", text)
            if m and not text.startswith(("gopher-jax", "./", "python", "XLA_FLAGS")):
                out.append((s, m.group(1), True))
        elif s.kind == "inline":
            for m in _GIN_PARAM.finditer(text):
                out.append((s, m.group(1), True))
            if text.startswith("-"):
                continue
            for m in _BINDING.finditer(text):
                out.append((s, m.group(1), _registered(m.group(1).rsplit(".", 1)[0])))
            m = re.fullmatch(r"([A-Za-z_]\w*)\.([a-z_]\w*(?:/[a-z_]\w*)*)", text)
            if m and _registered(m.group(1)):
                out += [(s, f"{m.group(1)}.{p}", True) for p in m.group(2).split("/")]
        elif s.kind == "prose" and s.page.endswith(".gin"):
            for m in _BINDING.finditer(text):
                if "." in m.group(1) and m.group(1).split(".")[-1] not in _FILE_SUFFIXES:
                    out.append((s, m.group(1), True))
    return out


def binding_problems(snippets: list[Snippet]) -> list[str]:
    """Every gin binding written in the docs names a real parameter of a registered configurable."""
    problems = []
    for s, key, strict in binding_keys(snippets):
        if not strict and not _registered(key.rsplit(".", 1)[0]):
            continue
        error = gin_binding_error(key)
        if error:
            problems.append(f"{s.where()}: gin binding {key!r}: {error}")
    return problems


# ---------------------------------------------------------------------------------------------- links
def link_problems(snippets: list[Snippet]) -> list[str]:
    """Every relative link resolves to a file of the repository (and a heading, for #anchors)."""
    problems = []
    for s in snippets:
        if s.kind != "link" or re.match(r"[a-z][a-z0-9+.-]*:", s.text):
            continue
        target, _, anchor = s.text.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(s.page), target)) if target else s.page
        if path.startswith(".."):
            problems.append(f"{s.where()}: link {s.text!r} points outside the repository")
            continue
        if not os.path.exists(os.path.join(REPO, path)):
            problems.append(f"{s.where()}: link {s.text!r}: {path} does not exist")
            continue
        if anchor and path.endswith(".md") and anchor not in headings_slugs(path):
            problems.append(f"{s.where()}: link {s.text!r}: {path} has no heading #{anchor}")
    return problems
