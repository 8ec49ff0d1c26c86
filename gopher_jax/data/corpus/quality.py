"""The Gopher quality filter (Rae et al. 2021, Appendix A.1.1 "Quality filtering").

`QualityConfig.word_split` picks what a word is: "whitespace" (default; the paper's plain
reading) or "datatrove" (datatrove/FineWeb's: spaCy-rule tokens, so punctuation marks are words;
word count and mean length then count only words with a non-punctuation character, stop words
match case-sensitively, and line fractions are over all lines, blank ones included).
docs/data_pipeline.md compares the two rule by rule.
"""
from __future__ import annotations

import dataclasses
import re

import gin

from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.word_split import WORD_SPLITS, split_words, word_stats

_PUNCT = "\"'.,;:!?()[]{}<>«»“”‘’*_-–—/\\"


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the Gopher quality filter; every default is from Gopher Appendix A.1.1."""

    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 10.0
    max_hash_to_word_ratio: float = 0.1  # '#' symbols per word
    max_ellipsis_to_word_ratio: float = 0.1  # '...' and '…' per word
    max_bullet_lines_fraction: float = 0.9  # lines starting with a bullet point
    max_ellipsis_lines_fraction: float = 0.3  # lines ending with an ellipsis
    min_alpha_words_fraction: float = 0.8  # words with at least one alphabetic character
    min_stop_words: int = 2  # distinct stop words present
    stop_words: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")
    bullets: tuple[str, ...] = ("•", "●", "◦", "‣", "▪", "*", "-")  # Gopher names none; common set
    word_split: str = "whitespace"  # "whitespace" | "datatrove" (word_split.py, datatrove_compat.gin)

    def __post_init__(self):
        if self.word_split not in WORD_SPLITS:
            raise ValueError(f"QualityConfig.word_split={self.word_split!r}: expected one of {WORD_SPLITS}")


# Whitespace-delimited tokens without an ASCII letter (one match per token, at C speed): few, and
# checked with str.isalpha (accents, other scripts); every other token has a letter.
_OTHER_TOKEN = re.compile(r"(?<!\S)[^\sA-Za-z]+(?!\S)")




def _alpha_words(text: str, words: list[str], config: QualityConfig) -> int:
    if config.word_split == "datatrove":
        return word_stats(words)[2]
    others = _OTHER_TOKEN.findall(text)
    return len(words) - len(others) + sum(any(c.isalpha() for c in w) for w in others)


def _counted_words(words: list[str], config: QualityConfig) -> tuple[int, int]:
    """Returns (number, characters) of the words the word-count and mean-length rules count
    (datatrove: only words with a non-punctuation character)."""
    if config.word_split == "datatrove":
        return word_stats(words)[:2]
    return len(words), sum(map(len, words))


def _word_metrics(text: str, words: list[str], config: QualityConfig) -> dict[str, float]:
    n = len(words)
    counted, chars = _counted_words(words, config)
    return {
        "mean_word_length": chars / counted if counted else 0.0,
        "hash_to_word_ratio": text.count("#") / n if n else 0.0,
        "ellipsis_to_word_ratio": (text.count("...") + text.count("…")) / n if n else 0.0,
    }


def _line_metrics(text: str, config: QualityConfig) -> dict[str, float]:
    if config.word_split == "datatrove":  # every line counts, blank ones too
        lines = [line.strip() for line in text.splitlines()]
    else:
        lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = max(len(lines), 1)
    return {
        "bullet_lines_fraction": sum(line.startswith(config.bullets) for line in lines) / n_lines,
        "ellipsis_lines_fraction": sum(line.endswith(("...", "…")) for line in lines) / n_lines,
    }


def _stop_words(words: list[str], config: QualityConfig, enough: int | None = None) -> int:
    """Returns how many distinct stop words occur (at least `enough` when that many is enough)."""
    # Counted on distinct tokens: far fewer than words in a long document.
    distinct = set(words)
    found = len(distinct.intersection(config.stop_words))
    if config.word_split == "datatrove" or (enough is not None and found >= enough):
        return found  # datatrove: punctuation is split off already, and case matters there
    # Exact tokens are a subset of the bare ones, so only the rare shortfall needs this pass.
    return len({w.strip(_PUNCT).lower() for w in distinct}.intersection(config.stop_words))


def _vocab_metrics(text: str, words: list[str], config: QualityConfig) -> dict[str, float]:
    n = len(words)
    return {
        "alpha_words_fraction": _alpha_words(text, words, config) / n if n else 0.0,
        "stop_words": _stop_words(words, config),
    }


def measure(text: str, config: QualityConfig = QualityConfig()) -> dict[str, float]:
    """Returns every quantity the quality rules compare against their thresholds."""
    words = split_words(text, config.word_split)
    return {"words": _counted_words(words, config)[0], **_word_metrics(text, words, config),
            **_line_metrics(text, config), **_vocab_metrics(text, words, config)}


def check_quality(text: str, config: QualityConfig = QualityConfig()) -> str | None:
    """Returns the name of the first failed quality rule, or None when the document is kept."""
    c = config
    words = split_words(text, c.word_split)
    n_counted = len(words) if c.word_split == "whitespace" else _counted_words(words, c)[0]
    # Cheapest first, returning at the first failure (most rejected pages fail early).
    if n_counted < c.min_words:
        return "min_words"
    if n_counted > c.max_words:
        return "max_words"
    m = _word_metrics(text, words, c)
    if not c.min_mean_word_length <= m["mean_word_length"] <= c.max_mean_word_length:
        return "mean_word_length"
    if m["hash_to_word_ratio"] > c.max_hash_to_word_ratio:
        return "hash_ratio"
    if m["ellipsis_to_word_ratio"] > c.max_ellipsis_to_word_ratio:
        return "ellipsis_ratio"
    m = _line_metrics(text, c)
    if m["bullet_lines_fraction"] > c.max_bullet_lines_fraction:
        return "bullet_lines"
    if m["ellipsis_lines_fraction"] > c.max_ellipsis_lines_fraction:
        return "ellipsis_lines"
    if (_alpha_words(text, words, c) / len(words) if words else 0.0) < c.min_alpha_words_fraction:
        return "alpha_words"
    if _stop_words(words, c, enough=c.min_stop_words) < c.min_stop_words:
        return "stop_words"
    return None


def filter_quality(doc: Doc, config: QualityConfig) -> Doc:
    """Returns doc, dropped as "quality:<rule>" when a rule fails."""
    rule = check_quality(doc.text, config)
    return doc if rule is None else doc.dropped(f"quality:{rule}")
