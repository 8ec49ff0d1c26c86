"""The Gopher quality filter (Rae et al. 2021, Appendix A.1.1 "Quality filtering")."""
from __future__ import annotations

import dataclasses
import re

import gin

from gopher_jax.data.corpus.documents import Doc

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


# Whitespace-delimited tokens with an ASCII letter (one match per token, at C speed), and
# tokens without one, which are few and checked with str.isalpha (accents, other scripts).
_ASCII_ALPHA_TOKEN = re.compile(r"\S*[A-Za-z]\S*")
_OTHER_TOKEN = re.compile(r"(?<!\S)[^\sA-Za-z]+(?!\S)")


def _alpha_words(text: str) -> int:
    others = _OTHER_TOKEN.findall(text)
    return len(_ASCII_ALPHA_TOKEN.findall(text)) + sum(any(c.isalpha() for c in w) for w in others)


def _word_metrics(text: str, words: list[str], config: QualityConfig) -> dict[str, float]:
    n = len(words)
    return {
        "mean_word_length": sum(map(len, words)) / n if n else 0.0,
        "hash_to_word_ratio": text.count("#") / n if n else 0.0,
        "ellipsis_to_word_ratio": (text.count("...") + text.count("…")) / n if n else 0.0,
    }


def _line_metrics(text: str, config: QualityConfig) -> dict[str, float]:
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = max(len(lines), 1)
    return {
        "bullet_lines_fraction": sum(line.startswith(config.bullets) for line in lines) / n_lines,
        "ellipsis_lines_fraction": sum(line.endswith(("...", "…")) for line in lines) / n_lines,
    }


def _vocab_metrics(text: str, words: list[str], config: QualityConfig) -> dict[str, float]:
    n = len(words)
    # Stop words are counted on distinct tokens: far fewer than words in a long document.
    bare = {w.strip(_PUNCT).lower() for w in set(words)}
    return {
        "alpha_words_fraction": _alpha_words(text) / n if n else 0.0,
        "stop_words": len(bare.intersection(config.stop_words)),
    }


def measure(text: str, config: QualityConfig = QualityConfig()) -> dict[str, float]:
    """Returns every quantity the quality rules compare against their thresholds."""
    words = text.split()
    return {"words": len(words), **_word_metrics(text, words, config), **_line_metrics(text, config),
            **_vocab_metrics(text, words, config)}


def check_quality(text: str, config: QualityConfig = QualityConfig()) -> str | None:
    """Returns the name of the first failed quality rule, or None when the document is kept."""
    c = config
    words = text.split()
    # Cheapest first, returning at the first failure (most rejected pages fail early).
    if len(words) < c.min_words:
        return "min_words"
    if len(words) > c.max_words:
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
    m = _vocab_metrics(text, words, c)
    if m["alpha_words_fraction"] < c.min_alpha_words_fraction:
        return "alpha_words"
    if m["stop_words"] < c.min_stop_words:
        return "stop_words"
    return None


def filter_quality(doc: Doc, config: QualityConfig) -> Doc:
    """Returns doc, dropped as "quality:<rule>" when a rule fails."""
    rule = check_quality(doc.text, config)
    return doc if rule is None else doc.dropped(f"quality:{rule}")
