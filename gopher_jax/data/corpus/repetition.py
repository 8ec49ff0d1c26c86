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

`RepetitionConfig.word_split="datatrove"` follows datatrove's GopherRepetitionFilter instead
(docs/data_pipeline.md lists each difference): its words (punctuation marks are words),
paragraphs split at 2+ newlines and lines at newlines, every character fraction over the whole
text's characters, the most frequent n-gram counted even if it occurs once, and duplicate n-grams
found by datatrove's left-to-right scan that jumps past each repeat.
"""
from __future__ import annotations

import collections
import dataclasses
import re

import gin
import numpy as np

from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.ngrams import mix64, word_hashes
from gopher_jax.data.corpus.word_split import WORD_SPLITS, split_words

_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")
_DATATROVE_PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
_DATATROVE_LINE_SPLIT = re.compile(r"\n+")


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
    word_split: str = "whitespace"  # "whitespace" | "datatrove" (datatrove's reading, see above)

    def __post_init__(self):
        if self.word_split not in WORD_SPLITS:
            raise ValueError(f"RepetitionConfig.word_split={self.word_split!r}: expected one of {WORD_SPLITS}")
        if self.word_split == "datatrove" and self.count_first_copy:
            raise ValueError("RepetitionConfig: count_first_copy=True is not datatrove's reading; "
                             "use it with word_split='whitespace'")


def _duplicates(items: list[str], count_first_copy: bool = False) -> tuple[int, int]:
    """Returns (number of repeated items, their characters), first occurrences excluded unless
    count_first_copy."""
    counts = collections.Counter(items)
    if count_first_copy:
        reps = [(c, len(it)) for it, c in counts.items() if c > 1]
    else:
        reps = [(c - 1, len(it)) for it, c in counts.items() if c > 1]
    return sum(c for c, _ in reps), sum(c * n for c, n in reps)


class _NgramCodes:
    """Hashes of the n-gram starting at each position, built incrementally (n-1 -> n) on demand."""

    def __init__(self, ids: np.ndarray):
        self.ids, self.n, self.acc, self.by_n = ids, 0, np.zeros(len(ids), dtype=np.uint64), {}

    def get(self, n: int) -> np.ndarray | None:
        """Returns the codes of n-grams (None when the text has fewer than n words)."""
        ids = self.ids
        with np.errstate(over="ignore"):
            while self.n < min(n, len(ids)):
                self.n += 1
                self.acc = mix64(self.acc[: len(ids) - self.n + 1] + ids[self.n - 1:] + np.uint64(self.n))
                self.by_n[self.n] = self.acc
        return self.by_n.get(n)


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


def _scanned_repeat_chars(group: np.ndarray, counts: np.ndarray, chars: np.ndarray, n: int) -> int:
    """Returns the characters of repeated n-grams found as datatrove scans: left to right, an
    n-gram seen before is a repeat and the scan jumps n words past it.

    Only positions whose n-gram occurs twice or more can be repeats; the scan visits every other
    position one step at a time, so it jumps straight between those positions here.
    """
    candidates = np.flatnonzero(counts[group] > 1)
    seen, resume, total = set(), 0, 0
    for p, g, c in zip(candidates.tolist(), group[candidates].tolist(), chars[candidates].tolist()):
        if p < resume:  # jumped over
            continue
        if g in seen:
            total += c
            resume = p + n
        else:
            seen.add(g)
            resume = p + 1
    return total


def _covered_chars(starts: np.ndarray, n: int, lengths: np.ndarray) -> float:
    """Returns the characters of the words covered by n-grams starting at `starts` (each word once)."""
    if not len(starts):
        return 0.0
    cover = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.add.at(cover, starts, 1)
    np.add.at(cover, starts + n, -1)
    return float(lengths[np.cumsum(cover[:-1]) > 0].sum())


def _ngram_fractions(words: list[str], config: RepetitionConfig, text_chars: int | None = None,
                     decide: bool = False) -> dict[str, float]:
    """Returns the n-gram fractions; datatrove's reading when text_chars (its denominator) is given.

    Duplicate n-grams are measured in increasing n. Words covered by repeated (n+1)-grams are
    covered by repeated n-grams too, so a fraction never grows with n: once one is 0, all larger
    ones are 0; with decide=True (only the keep/drop decision is wanted), once one is under every
    larger n's threshold, it stands in for them as an upper bound (datatrove's reading: the
    characters covered by n-grams occurring twice or more, for the smallest n, bound them all).
    """
    datatrove = text_chars is not None
    ids = word_hashes(words)  # equal words, equal ids (64-bit hashes: collisions ~2^-64)
    lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
    total = max(text_chars if datatrove else int(lengths.sum()), 1)
    csum = np.concatenate([[0], np.cumsum(lengths)])
    codes = _NgramCodes(ids)
    out = {}
    for n, _ in config.max_top_ngram_char_fraction:
        frac, grams = 0.0, codes.get(n)
        if grams is not None:
            first, counts, _ = _groups(grams)
            top = counts.max()
            if datatrove:  # the first-seen most frequent n-gram, joined with spaces, even if once
                g = np.argmin(np.where(counts == top, first, len(words)))
                frac = float(top * (csum[first[g] + n] - csum[first[g]] + n - 1)) / total
            elif top >= 2:
                chars = csum[first + n] - csum[first]  # characters of each distinct n-gram
                frac = float((counts * chars)[counts == top].max()) / total
        out[f"top_{n}gram_char_fraction"] = frac
    dups = sorted(config.max_duplicate_ngram_char_fraction)
    if datatrove and decide and dups:
        # datatrove's scan counts disjoint windows of n-grams that occur twice or more, so its
        # count is at most the characters of the words such n-grams cover, which shrink with n.
        n = dups[0][0]
        grams = codes.get(n)
        bound = 0.0
        if grams is not None:
            _, counts, inv = _groups(grams)
            bound = _covered_chars(np.nonzero(counts[inv] > 1)[0], n, lengths) / total
        if bound <= min(t for _, t in dups):
            out.update({f"duplicate_{m}gram_char_fraction": bound for m, _ in dups})
            return out
    for i, (n, _) in enumerate(dups):
        frac, grams, repeats = 0.0, codes.get(n), False
        if grams is not None and datatrove:
            _, counts, inv = _groups(grams)
            repeats = counts.max() > 1
            frac = _scanned_repeat_chars(inv, counts, csum[n:] - csum[:-n], n) / total
        elif grams is not None:
            first, counts, inv = _groups(grams)
            if config.count_first_copy:
                repeat_starts = np.nonzero(counts[inv] > 1)[0]
            else:
                repeat_starts = np.nonzero(first[inv] != np.arange(len(inv)))[0]
            if len(repeat_starts):
                repeats = True
                frac = _covered_chars(repeat_starts, n, lengths) / total
        out[f"duplicate_{n}gram_char_fraction"] = frac
        rest = dups[i + 1:]
        if not repeats or (decide and not datatrove and all(frac <= t for _, t in rest)):
            out.update({f"duplicate_{m}gram_char_fraction": frac for m, _ in rest})
            break
    return out


def _measure_datatrove(text: str, config: RepetitionConfig, decide: bool = False) -> dict[str, float]:
    paragraphs = _DATATROVE_PARAGRAPH_SPLIT.split(text.strip())
    lines = _DATATROVE_LINE_SPLIT.split(text)
    n_line, c_line = _duplicates(lines)
    n_par, c_par = _duplicates(paragraphs)
    chars = max(len(text), 1)
    out = {
        "duplicate_line_fraction": n_line / len(lines),
        "duplicate_paragraph_fraction": n_par / len(paragraphs),
        "duplicate_line_char_fraction": c_line / chars,
        "duplicate_paragraph_char_fraction": c_par / chars,
    }
    out.update(_ngram_fractions(split_words(text, "datatrove"), config, text_chars=chars, decide=decide))
    return out


def measure(text: str, config: RepetitionConfig = RepetitionConfig(), decide: bool = False) -> dict[str, float]:
    """Returns every quantity the repetition rules compare against their thresholds.

    decide=True may return an upper bound instead of a duplicate n-gram fraction that cannot
    change the decision (see `_ngram_fractions`).
    """
    if config.word_split == "datatrove":
        return _measure_datatrove(text, config, decide)
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
    out.update(_ngram_fractions(text.split(), config, decide=decide))
    return out


def check_repetition(text: str, config: RepetitionConfig = RepetitionConfig()) -> str | None:
    """Returns the name of the first failed repetition rule, or None when the document is kept."""
    m = measure(text, config, decide=True)
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
