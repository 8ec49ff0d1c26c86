"""Reading jsonl and plain-text shards into `Doc`s; malformed input becomes a counted drop.

Bad input never raises: an undecodable or non-JSON line, a record without a string `text`, an
empty text, or a line longer than MAX_LINE_BYTES becomes a `Doc` dropped as "bad_input:<what>",
so the stats still add up.
"""
from __future__ import annotations

import bz2
import glob
import gzip
import json
import os
import re
from typing import Iterator

from gopher_jax.data.corpus.documents import Doc

JSONL_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
TEXT_SUFFIXES = (".txt", ".txt.gz", ".txt.bz2")
# A WikiText top-level heading " = Title = " starts a new article (sub-headings use "= =").
_WIKITEXT_HEADING = re.compile(r"^ = [^=].* = $", re.MULTILINE)
# A jsonl line longer than this is dropped as "bad_input:giant_line" without holding it in memory
# (a missing newline can turn a whole shard into one line). Gopher's longest kept documents are
# 100,000 words, well under 16 MiB.
MAX_LINE_BYTES = 16 << 20
_CHUNK = 1 << 20


def _open(path: str):
    if "://" in path:  # gs://, s3://, hdfs://: Beam's filesystems (decompress by suffix)
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.open(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".bz2"):
        return bz2.open(path, "rb")
    return open(path, "rb")


def is_supported(path: str) -> bool:
    return path.endswith(JSONL_SUFFIXES + TEXT_SUFFIXES)


def expand_inputs(specs: list[str]) -> list[tuple[str, str]]:
    """Returns sorted (source, path) pairs for files, directories or globs, optionally "NAME=SPEC".

    The source (dataset name) is NAME if given; for a directory, the first path component below
    it (so corpus/gutenberg/*.txt is source "gutenberg"); else the file name without suffix.
    Raises FileNotFoundError naming a spec that matches no supported file.
    """
    out = []
    for spec in specs:
        name, pattern = ("", spec)
        if "=" in spec and not os.path.exists(spec):
            name, pattern = spec.split("=", 1)
        if "://" in pattern:
            from apache_beam.io.filesystems import FileSystems
            paths = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
        elif os.path.isdir(pattern):
            paths = [os.path.join(d, f) for d, _, fs in os.walk(pattern) for f in fs]
        else:
            paths = glob.glob(pattern)
        paths = sorted(p for p in paths if is_supported(p))
        if not paths:
            raise FileNotFoundError(
                f"input {spec!r} matches no file ending in {JSONL_SUFFIXES + TEXT_SUFFIXES}; "
                "pass a file, a directory or a quoted glob, optionally as NAME=PATH")
        for p in paths:
            if name:
                src = name
            elif os.path.isdir(pattern):
                src = _stem(os.path.relpath(p, pattern).split(os.sep)[0])
            else:
                src = _stem(p)
            out.append((src, p))
    return sorted(set(out), key=lambda sp: (sp[1], sp[0]))


def _stem(path: str) -> str:
    base = os.path.basename(path)
    for suf in sorted(JSONL_SUFFIXES + TEXT_SUFFIXES, key=len, reverse=True):
        if base.endswith(suf):
            return base[: -len(suf)]
    return base


def read_documents(source: str, path: str, text_split: str = "auto") -> Iterator[Doc]:
    """Yields every document of one file, malformed ones included as dropped Docs."""
    if path.endswith(JSONL_SUFFIXES):
        yield from _read_jsonl(source, path)
    elif path.endswith(TEXT_SUFFIXES):
        yield from _read_text(source, path, text_split)
    else:
        raise ValueError(f"unsupported input file {path!r}: expected one of {JSONL_SUFFIXES + TEXT_SUFFIXES}")


def _doc_id(source: str, path: str, index: int) -> str:
    # The parent directory keeps ids unique when two shards share a base name.
    parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{source}/{parent}/{os.path.basename(path)}:{index:09d}"


def _lines(f, limit: int) -> Iterator[tuple[bytes | None, int]]:
    """Yields (line, length in bytes); line is None when longer than `limit` (skipped in chunks)."""
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw, len(raw)
            continue
        n = len(raw)
        while not raw.endswith(b"\n"):  # skip the rest of the giant line without keeping it
            raw = f.readline(_CHUNK)
            if not raw:
                break
            n += len(raw)
        yield None, n


def _read_jsonl(source: str, path: str) -> Iterator[Doc]:
    with _open(path) as f:
        for i, (raw, size) in enumerate(_lines(f, MAX_LINE_BYTES)):
            doc_id = _doc_id(source, path, i)
            bad = Doc(id=doc_id, source=source, text="", chars_in=size)
            if raw is None:
                yield bad.dropped("bad_input:giant_line")
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield bad.dropped("bad_input:invalid_utf8")
                continue
            if not line.strip():
                yield bad.dropped("bad_input:blank_line")
                continue
            try:
                record = json.loads(line)
            except ValueError:
                yield bad.dropped("bad_input:invalid_json")
                continue
            if not isinstance(record, dict):
                yield bad.dropped("bad_input:not_an_object")
                continue
            text = record.pop("text", None)
            if not isinstance(text, str):
                yield bad.dropped("bad_input:missing_text")
                continue
            doc = Doc(id=doc_id, source=source, text=text, fields=record, chars_in=len(text))
            yield doc if text.strip() else doc.dropped("bad_input:empty_text")


def split_text(text: str, mode: str = "auto") -> list[str]:
    """Returns the documents of a plain-text file.

    mode "file": the whole file is one document (a book); "wikitext": one document per
    WikiText top-level article; "auto": wikitext if the file has WikiText headings, else file.
    """
    if mode not in ("auto", "file", "wikitext"):
        raise ValueError(f"text_split={mode!r}: expected 'auto', 'file' or 'wikitext'")
    starts = [m.start() for m in _WIKITEXT_HEADING.finditer(text)] if mode != "file" else []
    if not starts:
        return [text]
    bounds = ([0] if starts[0] > 0 and text[: starts[0]].strip() else []) + starts + [len(text)]
    return [text[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def _read_text(source: str, path: str, mode: str) -> Iterator[Doc]:
    with _open(path) as f:
        raw = f.read()
    try:
        text, changes = raw.decode("utf-8"), ()
    except UnicodeDecodeError:
        # One bad byte should not lose a whole book: replace it and record the change.
        text, changes = raw.decode("utf-8", errors="replace"), ("read:invalid_utf8_replaced",)
    for i, piece in enumerate(split_text(text, mode)):
        doc = Doc(id=_doc_id(source, path, i), source=source, text=piece, changes=changes, chars_in=len(piece))
        yield doc if piece.strip() else doc.dropped("bad_input:empty_text")
