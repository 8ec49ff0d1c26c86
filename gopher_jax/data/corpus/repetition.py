"""The Gopher repetition filter (Rae et al. 2021, Appendix A.1.1 and Table A1).

Definitions (the paper gives thresholds, not formulas; ours follow the common reproduction):
- "duplicate" lines/paragraphs/n-grams are occurrences after the first (the first copy is not
  counted), so a document repeated twice scores 0.5, not 1.0. Gopher's wording ("characters
  contained within all duplicate n-grams") also reads as counting every copy:
  `RepetitionConfig.count_first_copy=True` selects that stricter reading;
- line and paragraph character fractions are over the characters of the non-blank lines or
  paragraphs; n-gram fractions are over the characters of the words (whitespace excluded);
- overlapping duplicate n-grams are not double counted (words are marked, then summed);
- the most frequent n-gram counts only if it occurs at least twice.
"""
from __future__ import annotations

import collections
import dataclasses
import re

import gin
import numpy as np

from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.ngrams import mix64

_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class RepetitionConfig:
    """Thresholds of the Gopher repetition filter; every default is from Gopher Table A1."""

    max_duplicate_line_fraction: float = 0.30
    max_duplicate_paragraph_fraction: float = 0.30
    max_duplicate_line_char_fraction: float = 0.20
    max_duplicate_paragraph_char_fraction: float = 0.20
    # n -> max fraction of characters in the most frequent n-gram
    max_top_ngram_char_fraction: tuple[tuple[int, float], ...] = ((2, 0.20), (3, 0.18), (4, 0.16))
    # n -> max fraction of characters in duplicate n-grams
    max_duplicate_ngram_char_fraction: tuple[tuple[int, float], ...] = (
        (5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))
    count_first_copy: bool = False  # ours: count the first occurrence of a repeat too (stricter)


def _duplicates(items: list[str], count_first_copy: bool = False) -> tuple[int, int]:
    """Returns (number of repeated items, their characters), first occurrences excluded unless
    count_first_copy."""
    counts = collections.Counter(items)
    if count_first_copy:
        reps = [(c, len(it)) for it, c in counts.items() if c > 1]
    else:
        reps = [(c - 1, len(it)) for it, c in counts.items() if c > 1]
    return sum(c for c, _ in reps), sum(c * n for c, n in reps)


def _ngram_codes(ids: np.ndarray, max_n: int) -> dict[int, np.ndarray]:
    """Returns {n: hash of the n-gram starting at each position} for n = 1..max_n, incrementally."""
    codes, acc = {}, np.zeros(len(ids), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for n in range(1, min(max_n, len(ids)) + 1):
            acc = mix64(acc[: len(ids) - n + 1] + ids[n - 1:] + np.uint64(n))
            codes[n] = acc
    return codes


def _groups(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (first position of each distinct code, its count, group of each position).

    Same as np.unique(return_index, return_inverse, return_counts) but with an unstable (2x
    faster) sort: the first position comes from a segmented minimum instead of stability.
    """
    order = np.argsort(codes)
    sorted_codes = codes[order]
    starts = np.concatenate([[0], np.nonzero(sorted_codes[1:] != sorted_codes[:-1])[0] + 1])
    first = np.minimum.reduceat(order, starts)
    counts = np.diff(np.append(starts, len(codes)))
    group = np.empty(len(codes), dtype=np.int64)
    group[order] = np.repeat(np.arange(len(starts)), counts)
    return first, counts, group


def _ngram_fractions(words: list[str], config: RepetitionConfig) -> dict[str, float]:
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.uint64)
    lengths = np.array(list(map(len, words)), dtype=np.int64)
    total = max(int(lengths.sum()), 1)
    csum = np.concatenate([[0], np.cumsum(lengths)])
    ns = [n for n, _ in config.max_top_ngram_char_fraction + config.max_duplicate_ngram_char_fraction]
    codes = _ngram_codes(ids, max(ns, default=0))
    out = {}
    for n, _ in config.max_top_ngram_char_fraction:
        frac = 0.0
        if n in codes:
            first, counts, _ = _groups(codes[n])
            top = counts.max()
            if top >= 2:
                chars = csum[first + n] - csum[first]  # characters of each distinct n-gram
                frac = float((counts * chars)[counts == top].max()) / total
        out[f"top_{n}gram_char_fraction"] = frac
    for n, _ in config.max_duplicate_ngram_char_fraction:
        frac = 0.0
        if n in codes:
            first, counts, inv = _groups(codes[n])
            if config.count_first_copy:
                repeat_starts = np.nonzero(counts[inv] > 1)[0]
            else:
                repeat_starts = np.nonzero(first[inv] != np.arange(len(inv)))[0]
            if len(repeat_starts):
                cover = np.zeros(len(words) + 1, dtype=np.int64)
                np.add.at(cover, repeat_starts, 1)
                np.add.at(cover, repeat_starts + n, -1)
                covered = np.cumsum(cover[:-1]) > 0
                frac = float(lengths[covered].sum()) / total
        out[f"duplicate_{n}gram_char_fraction"] = frac
    return out


def measure(text: str, config: RepetitionConfig = RepetitionConfig()) -> dict[str, float]:
    """Returns every quantity the repetition rules compare against their thresholds."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    paragraphs = [p.strip() for p in _PARAGRAPH_SPLIT.split(text) if p.strip()]
    n_line, c_line = _duplicates(lines, config.count_first_copy)
    n_par, c_par = _duplicates(paragraphs, config.count_first_copy)
    out = {
        "duplicate_line_fraction": n_line / max(len(lines), 1),
        "duplicate_paragraph_fraction": n_par / max(len(paragraphs), 1),
        "duplicate_line_char_fraction": c_line / max(sum(map(len, lines)), 1),
        "duplicate_paragraph_char_fraction": c_par / max(sum(map(len, paragraphs)), 1),
    }
    out.update(_ngram_fractions(text.split(), config))
    return out


def check_repetition(text: str, config: RepetitionConfig = RepetitionConfig()) -> str | None:
    """Returns the name of the first failed repetition rule, or None when the document is kept."""
    m = measure(text, config)
    c = config
    limits = [("duplicate_line_fraction", c.max_duplicate_line_fraction),
              ("duplicate_paragraph_fraction", c.max_duplicate_paragraph_fraction),
              ("duplicate_line_char_fraction", c.max_duplicate_line_char_fraction),
              ("duplicate_paragraph_char_fraction", c.max_duplicate_paragraph_char_fraction)]
    limits += [(f"top_{n}gram_char_fraction", t) for n, t in c.max_top_ngram_char_fraction]
    limits += [(f"duplicate_{n}gram_char_fraction", t) for n, t in c.max_duplicate_ngram_char_fraction]
    return next((name for name, limit in limits if m[name] > limit), None)


def filter_repetition(doc: Doc, config: RepetitionConfig) -> Doc:
    """Returns doc, dropped as "repetition:<rule>" when a rule fails."""
    rule = check_repetition(doc.text, config)
    return doc if rule is None else doc.dropped(f"repetition:{rule}")
