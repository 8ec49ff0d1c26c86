"""Exact deduplication on a normalised-text hash (Gopher A.1.1: exact, then fuzzy)."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Iterable

from gopher_jax.data.corpus.documents import Doc

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Returns the form two texts must share to be exact duplicates: NFKC, lower case, one space."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def text_key(text: str) -> str:
    """Returns the hex blake2b digest of the normalised text (the exact-dedup group key)."""
    return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).hexdigest()


def resolve_group(docs: Iterable[Doc]) -> list[Doc]:
    """Returns the group with all but the lowest-rank document dropped as exact duplicates."""
    docs = sorted(docs, key=lambda d: d.rank)
    return docs[:1] + [d.dropped("exact_dedup:duplicate") for d in docs[1:]]


def exact_dedup(docs: list[Doc]) -> list[Doc]:
    """Returns docs (same order) with exact duplicates of a lower-rank document dropped."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(docs):
        if d.alive:
            groups.setdefault(text_key(d.text), []).append(i)
    out = list(docs)
    for idx in groups.values():
        if len(idx) > 1:
            for i, d in zip(sorted(idx, key=lambda i: docs[i].rank), resolve_group(docs[i] for i in idx)):
                out[i] = d
    return out
