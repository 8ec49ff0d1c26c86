"""The scaling corpus's raw components, gathered from installed packages into JSONL files.

Documents (one per file) in the order they are taken until the byte budget:
- code: `.py` files of site-packages and the standard library, as written;
- prose: the embedded corpus's English components (Usenet posts, the Python Language Reference,
  news, Wikipedia: embedded_corpus.py), the packages' documentation (READMEs, licences, METADATA
  descriptions, .md/.rst), then the docstrings of the `.py` files `code` did not take.

Each component stops at `max_bytes` (UTF-8 bytes of text, overshooting by at most one document);
files are visited in a hash order (installed_text.sample_key), so a budget smaller than what is
installed samples every package. Each JSONL line is {"id", "package", "text"}, lines sorted by id.
"""
from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import os
from typing import Iterable, Iterator

from tqdm import tqdm

from gopher_jax.atomic_write import atomic_write
from gopher_jax.data import embedded_corpus, installed_text
from gopher_jax.data.installed_text import Root, TextDocument

COMPONENTS = ("code", "prose")
# The embedded corpus's English components; its `github` is standard-library code, which `code` has.
EMBEDDED_PROSE = ("massiveweb", "books", "news", "wikipedia")


class _Budget:
    """Accepts documents until `max_bytes` of text; counts what it took by kind and package."""

    def __init__(self, max_bytes: int, desc: str, progress: bool):
        self.max_bytes, self.bytes = max_bytes, 0
        self.docs: list[dict] = []
        self.kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.packages: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.skipped: collections.Counter = collections.Counter()
        self.bar = tqdm(total=max_bytes, desc=desc, unit="B", unit_scale=True, disable=not progress)

    @property
    def full(self) -> bool:
        return self.bytes >= self.max_bytes

    def take(self, doc: TextDocument, kind: str) -> None:
        """Adds doc, unless it holds SentencePiece's whitespace mark (a docstring may spell it as an
        escape that only `ast` turns into the character): such a text would not decode to itself."""
        if installed_text.WHITESPACE_MARK in doc.text:
            self.skipped["whitespace_mark"] += 1
            return
        n = len(doc.text.encode("utf-8"))
        self.docs.append({"id": doc.id, "package": doc.package, "text": doc.text})
        self.bytes += n
        for counter in (self.kinds[kind], self.packages[doc.package]):
            counter["documents"] += 1
            counter["bytes"] += n
        self.bar.update(min(n, self.max_bytes - self.bar.n))

    def write(self, path: str, roots: list[Root], extra_sources: dict) -> dict:
        """Writes the JSONL (sorted by id); returns the component's record (sources, documents, bytes)."""
        self.bar.close()
        self.docs.sort(key=lambda d: d["id"])

        def write(f):
            for d in self.docs:
                f.write(json.dumps(d, ensure_ascii=False) + "\n")

        atomic_write(path, write)
        by_bytes = lambda items: dict(sorted(((k, dict(v)) for k, v in items), key=lambda kv: -kv[1]["bytes"]))
        return {"sources": {"directories": {r.label: r.path for r in roots}, **extra_sources,
                            "kinds": by_bytes(self.kinds.items()), "packages": by_bytes(self.packages.items())},
                "raw": {"documents": len(self.docs), "bytes": self.bytes, "max_bytes": self.max_bytes,
                        "skipped_files": dict(sorted(self.skipped.items()))}}


def _docstrings_of(path: str) -> tuple[str, str]:
    """Returns (docstrings of the file, why it is skipped or "")."""
    text, why = installed_text.read_text(path)
    return (installed_text.docstrings(text), "") if text is not None else ("", why)


def _mapped(fn, items: list, workers: int) -> Iterator:
    """Yields fn(item) in order, on `workers` processes when > 1 (the caller may stop early: the
    pool ends when the generator is closed)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    # spawn: the parent may hold TensorFlow or JAX threads, which fork would copy half-initialised.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=32)


def gather_code(roots: list[Root], max_bytes: int, path: str, progress: bool = True
                ) -> tuple[dict, list[tuple[Root, str, str]]]:
    """Writes the `code` component to `path`; returns (its record, the .py files it did not visit)."""
    files = installed_text.python_files(roots)
    budget = _Budget(max_bytes, "code", progress)
    used = 0
    for root, rel, file in files:
        text, why = installed_text.read_text(file)
        used += 1
        if text is None:
            budget.skipped[why] += 1
        else:
            budget.take(TextDocument(f"{root.label}:{rel}", installed_text.package_of(root, rel), text), "python files")
        if budget.full:
            break
    record = budget.write(path, roots, {"python_files_installed": len(files), "python_files_visited": used})
    return record, files[used:]


def _documented_prose(roots: list[Root], embedded: Iterable[str]) -> Iterator[tuple[str, TextDocument]]:
    """Yields (kind, document) of the embedded corpus's prose components, then the documentation files."""
    for component in embedded:
        with open(embedded_corpus.raw_component_path(component), encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                yield f"embedded {component}", TextDocument(d["id"], f"embedded:{component}", d["text"])
    for doc in installed_text.doc_files(roots):
        yield "documentation", doc


def gather_prose(roots: list[Root], leftover: list[tuple[Root, str, str]], max_bytes: int, path: str,
                 embedded: Iterable[str] = EMBEDDED_PROSE, progress: bool = True, workers: int = 1) -> dict:
    """Writes the `prose` component to `path` (embedded prose, documentation, then docstrings of the
    `leftover` .py files); returns its record."""
    unknown = sorted(set(embedded) - set(EMBEDDED_PROSE))
    if unknown:
        raise ValueError(f"embedded components {unknown} are not prose; choose from {EMBEDDED_PROSE}")
    budget = _Budget(max_bytes, "prose", progress)
    for kind, doc in _documented_prose(roots, embedded):
        if budget.full:
            break
        budget.take(doc, kind)
    visited = 0
    if not budget.full:
        results = _mapped(_docstrings_of, [f[2] for f in leftover], workers)
        with contextlib.closing(results):  # stops the pool's remaining work once the budget is full
            for (root, rel, _), (text, why) in zip(leftover, results):
                visited += 1
                if why:
                    budget.skipped[why] += 1
                elif text:
                    budget.take(TextDocument(f"docstrings:{root.label}:{rel}", installed_text.package_of(root, rel),
                                             text), "docstrings")
                if budget.full:
                    break
    return budget.write(path, roots, {"embedded_components": list(embedded), "docstring_files_visited": visited})


def gather(roots: list[Root], raw_dir: str, max_bytes: int, embedded: Iterable[str] = EMBEDDED_PROSE,
           progress: bool = True, workers: int = 1) -> dict[str, dict]:
    """Writes raw_dir/{code,prose}.jsonl; returns {component: record} (sources, raw documents and bytes)."""
    if max_bytes <= 0:
        raise ValueError(f"--max_bytes_per_component={max_bytes}: expected a positive number of bytes")
    os.makedirs(raw_dir, exist_ok=True)
    code, leftover = gather_code(roots, max_bytes, os.path.join(raw_dir, "code.jsonl"), progress)
    prose = gather_prose(roots, leftover, max_bytes, os.path.join(raw_dir, "prose.jsonl"), embedded, progress, workers)
    return {"code": code, "prose": prose}
