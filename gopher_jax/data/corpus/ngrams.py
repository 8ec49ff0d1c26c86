"""Stable, vectorised word and n-gram hashing shared by dedup and decontamination.

Hashes must be identical in every process (Beam workers included), so Python's salted `hash`
is never used: a word's hash is a polynomial hash of its code points (mod 2^64, computed for all
words of a batch at once with numpy prefix sums) finished with splitmix64, and n-grams are combined
with numpy uint64 arithmetic. Words are found without making a Python string per word: a batch's
lower-cased text becomes one array of code points, and words are the runs of word characters
(a per-code-point table), exactly the words of `normalized_words`.
"""
from __future__ import annotations

import re

import numpy as np

WORD_RE = re.compile(r"\w+")
_MAX_N = 64
# Polynomial word hash: an odd base (invertible mod 2^64) and its inverse.
_BASE = 0x100000001B3
_BASE_INV = pow(_BASE, -1, 2**64)


def normalized_words(text: str) -> list[str]:
    """Returns the lower-cased alphanumeric words of text (punctuation and spacing ignored)."""
    low = text.lower()
    if len(low) == len(text):  # the usual case: lower-casing maps characters one to one
        return WORD_RE.findall(low)
    # Rare expanding lower-casing (e.g. "İ"): lower word by word so spans still line up.
    return [m.group().lower() for m in WORD_RE.finditer(text)]


def word_spans(text: str) -> list[tuple[int, int]]:
    """Returns the (start, end) character offsets of each word of `normalized_words(text)`."""
    low = text.lower()
    return [m.span() for m in WORD_RE.finditer(low if len(low) == len(text) else text)]


_power_tables: dict[int, np.ndarray] = {}


def _powers(base: int, count: int) -> np.ndarray:
    """Returns [base^0, base^1, ..., base^(count-1)] mod 2^64 as uint64 (cached, grown by doubling)."""
    table = _power_tables.get(base)
    if table is None or len(table) < count:
        size = max(count, 2 * len(table) if table is not None else 1 << 20)
        steps = np.full(size, base, dtype=np.uint64)
        steps[0] = 1
        table = _power_tables[base] = np.cumprod(steps, dtype=np.uint64)
    return table[:count]


# Which code points of the Basic Multilingual Plane are word characters (others: looked up when seen).
_IS_WORD_BMP = np.array([WORD_RE.match(chr(i)) is not None for i in range(0x10000)])


def _word_mask(cps: np.ndarray) -> np.ndarray:
    """Returns for each code point whether it is a word character (matches WORD_RE)."""
    mask = _IS_WORD_BMP[np.minimum(cps, 0xFFFF)]
    astral = np.flatnonzero(cps > 0xFFFF)  # emoji, rare scripts: few, checked one by one
    if len(astral):
        mask[astral] = [WORD_RE.match(chr(c)) is not None for c in cps[astral].tolist()]
    return mask


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _hash_runs(cps: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Returns the hash of each run cps[start:end] (a polynomial hash, independent of position)."""
    total = len(cps)
    with np.errstate(over="ignore"):
        # prefix[i] = sum_{j<i} (cp_j + 1) B^(total-1-j); a run's part, times B^-(total-end), is
        # its own polynomial hash sum_j (cp_j + 1) B^(end-1-j), wherever the run sits.
        weighted = (cps.astype(np.uint64) + np.uint64(1)) * _powers(_BASE, total)[::-1]
        prefix = np.concatenate(([np.uint64(0)], np.cumsum(weighted, dtype=np.uint64)))
        poly = (prefix[ends] - prefix[starts]) * _powers(_BASE_INV, total + 1)[total - ends]
        return mix64(poly ^ (ends - starts).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))


def word_hashes(words: list[str]) -> np.ndarray:
    """Returns a stable uint64 hash per word (non-empty words without spaces, e.g. `normalized_words`)."""
    if not words:
        return np.empty(0, dtype=np.uint64)
    cps = _code_points(" ".join(words))
    ends = np.append(np.flatnonzero(cps == 32), len(cps))
    return _hash_runs(cps, np.concatenate(([0], ends[:-1] + 1)), ends)


def word_hashes_batch(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Returns (the hashes of every text's `normalized_words`, concatenated; words per text).

    Equal to concatenating `word_hashes(normalized_words(t))`, without a string per word.
    """
    # Texts joined by a space (no word crosses it); the rare text whose lower-casing changes its
    # length contributes its normalised words instead, joined by spaces (same words, same hashes).
    parts, spelled_out = [], []
    for i, t in enumerate(texts):
        low = t.lower()
        if len(low) != len(t):
            low = " ".join(normalized_words(t))
            spelled_out.append(i)
        parts.append(low)
    cps = _code_points(" ".join(parts))
    mask = _word_mask(cps)
    text_ends = np.cumsum([len(p) + 1 for p in parts])  # where each text's span (and space) ends
    for i in spelled_out:  # its words are exactly the runs between spaces
        lo, hi = text_ends[i] - len(parts[i]) - 1, text_ends[i] - 1
        mask[lo:hi] = cps[lo:hi] != 32
    mask = mask.view(np.int8)
    edges = np.diff(mask, prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    counts = np.diff(np.searchsorted(starts, text_ends), prepend=0)
    return _hash_runs(cps, starts, ends), counts


def mix64(x: np.ndarray) -> np.ndarray:
    """Returns splitmix64's finaliser of x: a bijection on uint64 with good avalanche."""
    # uint64 array arithmetic wraps modulo 2^64 silently, which is what we want.
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """Returns one uint64 hash per word n-gram (position-sensitive), in order.

    A sequence shorter than n yields a single hash of the whole sequence (so short documents
    still have a shingle); an empty one yields none.
    """
    return ngram_hashes_batch([hashes], n)[0]


def ngram_hashes_batch(seqs: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Returns `ngram_hashes(s, n)` for every word-hash sequence, vectorised across sequences."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    flat = np.concatenate(seqs).astype(np.uint64, copy=False) if seqs else np.empty(0, np.uint64)
    return _ngram_hashes_flat(flat, lengths, n)


def _ngram_hashes_flat(all_hashes: np.ndarray, lengths: np.ndarray, n: int) -> list[np.ndarray]:
    """Returns the n-gram hashes of each sequence; the sequences are all_hashes cut at lengths."""
    if not 1 <= n <= _MAX_N:
        raise ValueError(f"n-gram size {n} must be in 1..{_MAX_N}")
    out: list[np.ndarray] = [np.empty(0, dtype=np.uint64)] * len(lengths)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    # Sequences of length >= n: roll over their concatenation, then keep in-document windows.
    long_idx = np.nonzero(lengths >= n)[0]
    if len(long_idx):
        if len(long_idx) == len(lengths):
            flat = all_hashes
        else:
            flat = np.concatenate([all_hashes[offsets[i]:offsets[i + 1]] for i in long_idx])
        count = len(flat) - n + 1
        acc = np.zeros(count, dtype=np.uint64)
        for j in range(n):
            acc = mix64(acc + flat[j:j + count] * _MULTIPLIERS[j])
        per_doc = lengths[long_idx] - n + 1
        doc_starts = np.concatenate([[0], np.cumsum(lengths[long_idx])[:-1]])
        within = np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
        grams = acc[np.repeat(doc_starts, per_doc) + within]
        for i, part in zip(long_idx, np.split(grams, np.cumsum(per_doc)[:-1])):
            out[i] = part
    # Shorter non-empty sequences hash whole, grouped by length so each group is one matrix.
    for m in np.unique(lengths[(lengths > 0) & (lengths < n)]):
        idx = np.nonzero(lengths == m)[0]
        mat = np.stack([all_hashes[offsets[i]:offsets[i + 1]] for i in idx])
        acc = np.zeros(len(idx), dtype=np.uint64)
        for j in range(int(m)):
            acc = mix64(acc + mat[:, j] * _MULTIPLIERS[j])
        for row, i in enumerate(idx):
            out[i] = acc[row:row + 1]
    return out


# Odd per-offset multipliers (fixed forever: changing them changes every stored hash).
_MULTIPLIERS = mix64(np.arange(1, _MAX_N + 1, dtype=np.uint64)) | np.uint64(1)


def shingles(text: str, n: int) -> np.ndarray:
    """Returns the sorted unique n-gram hashes of text's normalised words."""
    return shingles_batch([text], n)[0]


def shingles_batch(texts: list[str], n: int, unique: bool = True) -> list[np.ndarray]:
    """Returns `shingles(t, n)` for every text, hashing all texts' n-grams in one vectorised pass.

    unique=False skips sorting out repeats (MinHash does not need it; Jaccard does).
    """
    flat, counts = word_hashes_batch(texts)  # one numpy pass for the batch
    grams = _ngram_hashes_flat(flat, counts.astype(np.int64), n)
    return [unique_sorted(g) for g in grams] if unique else grams


def unique_sorted(a: np.ndarray) -> np.ndarray:
    """Returns the sorted distinct values of a 1-D array (np.unique without its overheads)."""
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Returns |a & b| / |a | b| for two sorted unique hash arrays (0 when both are empty)."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)
