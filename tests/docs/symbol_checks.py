"""Python symbols the docs name (`module.name`, `package.module.name`, `file.py:name`, and the keyword
arguments of a call written `f(a, kw=...)`) resolve in the repository's sources, read with ast."""
from __future__ import annotations

import ast
import functools
import glob
import os
import re

from tests.docs.doc_checks import _FILE_SUFFIXES, _registered, sweep_spec_field
from tests.docs.doc_sources import REPO, Snippet, resolve_repo_path

# Dotted names in the docs that are not Python symbols, each with what it is.
NOT_SYMBOLS = {
    "gopher_jax.components": "the Beam metrics namespace of the dedup components",
}
# Module basenames too generic to read `name.attr` as a module attribute (`state.params` is a value).
_GENERIC_BASENAMES = {"state", "model", "config", "params", "batch", "args", "cli", "mesh", "step"}


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
    if len(attrs) == 1 and any(_string_constant(f, attrs[0]) for f in files):
        return None   # a key the module writes, e.g. `communication.interleaved_weights` of plan --json
    where = ", ".join(os.path.relpath(f, REPO) for f in files)
    return f"{where} defines no {'.'.join(attrs)!r}"


def _string_constant(path: str, text: str) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == text for n in ast.walk(_tree(path)))


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
