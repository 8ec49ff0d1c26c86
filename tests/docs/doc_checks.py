"""Checks of what the docs claim against the code, without running anything.

Each check takes snippets (tests/docs/doc_sources.py) and returns problems, "page:line: what is
wrong", so a test can assert none and the tests of the test can plant a wrong claim and see it named.
"""
from __future__ import annotations

import argparse
import ast
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
# Dotted names in the docs that are not Python symbols, each with what it is.
NOT_SYMBOLS = {
    "gopher_jax.components": "the Beam metrics namespace of the dedup components",
}
# Module basenames too generic to read `name.attr` as a module attribute (`state.params` is a value).
_GENERIC_BASENAMES = {"state", "model", "config", "params", "batch", "args", "cli", "mesh", "step"}


# ---------------------------------------------------------------------------------------------- paths
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
_PATH = re.compile(r"(?<![\w./:@$%~-])((?:\.\./)*[A-Za-z_][\w.-]*(?:/[\w.-]+)+/?|[\w-]+\.(?:py|sh|md))(?![\w/])")


def _looks_like_placeholder(token: str) -> bool:
    parts = token.strip("/").split("/")
    return any(p in ("...", "..") and i > 0 for i, p in enumerate(parts)) or any(
        re.fullmatch(r"[A-Z][A-Z0-9_]*", p) for p in parts)


def path_problems(snippets: list[Snippet]) -> list[str]:
    """Every repository path the docs name must exist; nothing may point into ../shared."""
    problems = []
    for s in snippets:
        if s.kind == "link":
            continue
        text = _URL.sub(" ", s.text)
        if "../shared" in text:
            problems.append(f"{s.where()}: names ../shared, which a clone does not have: {s.text!r}")
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


# ---------------------------------------------------------------------------------------- Python symbols
@functools.lru_cache(maxsize=None)
def _modules_by_basename() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for root in ("gopher_jax", "data_tasks", "benchmarks"):
        for path in glob.glob(os.path.join(REPO, root, "**", "*.py"), recursive=True):
            name = os.path.basename(path)[:-3]
            if name == "__init__":
                name = os.path.basename(os.path.dirname(path))
            index.setdefault(name, []).append(path)
    return index


@functools.lru_cache(maxsize=None)
def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def _defined(body: list[ast.stmt]) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(_defined(node.body))
            for h in getattr(node, "handlers", []):
                names.update(_defined(h.body))
            names.update(_defined(node.orelse))
    return names


def _resolve_in_file(path: str, attrs: list[str]) -> ast.AST | None | bool:
    """The definition attrs name in a module file (True when it cannot be told statically), else None."""
    scope = _defined(_tree(path).body)
    if "__getattr__" in scope:
        return True
    node: ast.AST | None = None
    for i, a in enumerate(attrs):
        if a not in scope:
            if isinstance(node, ast.ClassDef) and node.bases:
                return True   # may be inherited
            return None
        node = scope[a]
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return True
        if i + 1 < len(attrs):
            if not isinstance(node, ast.ClassDef):
                return True   # an attribute of a value: not checked
            scope = _defined(node.body)
    return node


def _module_file(parts: list[str]) -> tuple[str | None, list[str]]:
    """For dotted parts starting at a repository package, the module file and the attributes after it."""
    for k in range(len(parts), 0, -1):
        base = os.path.join(REPO, *parts[:k])
        if os.path.isfile(base + ".py"):
            return base + ".py", parts[k:]
        if os.path.isfile(os.path.join(base, "__init__.py")):
            return os.path.join(base, "__init__.py"), parts[k:]
    return None, parts


def symbol_problems(snippets: list[Snippet]) -> list[str]:
    """Every Python symbol written `module.name`, `package.module.name` or `file.py:name` resolves."""
    problems = []
    for s in snippets:
        if s.kind not in ("inline", "prose"):
            continue
        for m in re.finditer(r"([\w/.-]+\.py):([A-Za-z_]\w*)", s.text):
            path = resolve_repo_path(m.group(1), s.page)
            if path and path.endswith(".py") and _resolve_in_file(os.path.join(REPO, path), [m.group(2)]) is None:
                problems.append(f"{s.where()}: {m.group(1)} defines no {m.group(2)!r}")
        if s.kind != "inline":
            continue
        m = re.fullmatch(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(.*\))?", s.text)
        if not m:
            continue
        parts = m.group(1).split(".")
        if (parts[-1] in _FILE_SUFFIXES or _registered(".".join(parts[:-1])) or _registered(m.group(1))
                or m.group(1) in NOT_SYMBOLS or sweep_spec_field(m.group(1))):
            continue
        problem = _dotted_problem(parts)
        if problem:
            problems.append(f"{s.where()}: {m.group(1)}: {problem}")
        elif m.group(2):
            problems += [f"{s.where()}: {m.group(1)}: {p}" for p in _kwarg_problems(parts, m.group(2))]
    for s in snippets:   # bare calls: `register_massivetext_tasks(vocab, manifest=OUT)`
        m = re.fullmatch(r"([A-Za-z_]\w*)(\(.*\))", s.text) if s.kind == "inline" else None
        if m and m.group(1) in _top_level_functions():
            problems += [f"{s.where()}: {m.group(1)}: {p}"
                         for p in _kwarg_problems([m.group(1)], m.group(2))]
    return problems


def _locate(parts: list[str]) -> tuple[list[str], list[str]]:
    """Candidate module files for dotted parts, and the attribute chain inside them."""
    if parts[0] in ("gopher_jax", "data_tasks", "benchmarks", "tests"):
        path, attrs = _module_file(parts)
        return ([path] if path else []), attrs
    if parts[0] in _GENERIC_BASENAMES:
        return [], parts[1:]
    files = [f for f in _modules_by_basename().get(parts[0], []) if not f.endswith("__init__.py")]
    return files, parts[1:]


def _dotted_problem(parts: list[str]) -> str | None:
    files, attrs = _locate(parts)
    if parts[0] in ("gopher_jax", "data_tasks") and not files:
        return "no such module"
    if not files or not attrs:
        return None
    if any(_resolve_in_file(f, attrs) is not None for f in files):
        return None
    where = ", ".join(os.path.relpath(f, REPO) for f in files)
    return f"{where} defines no {'.'.join(attrs)!r}"


@functools.lru_cache(maxsize=None)
def _top_level_functions() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for files in _modules_by_basename().values():
        for f in files:
            for node in _tree(f).body:
                if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                    index.setdefault(node.name, []).append(f)
    return index


def _kwarg_problems(parts: list[str], call: str) -> list[str]:
    if len(parts) == 1:
        nodes = [_resolve_in_file(f, parts) for f in _top_level_functions()[parts[0]]]
    else:
        files, attrs = _locate(parts)
        nodes = [_resolve_in_file(f, attrs) for f in files]
    funcs = [n for n in nodes if isinstance(n, ast.FunctionDef)]
    if not funcs or any(f.args.kwarg for f in funcs):
        return []
    kwargs = re.findall(r"[(,]\s*([A-Za-z_]\w*)\s*=(?!=)", call)
    accepted = set()
    for f in funcs:
        accepted |= {a.arg for a in f.args.args + f.args.kwonlyargs + f.args.posonlyargs}
    return [f"takes no argument {k!r} (has {sorted(accepted)})" for k in kwargs if k not in accepted]


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
