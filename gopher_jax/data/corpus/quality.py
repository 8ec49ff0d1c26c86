"""The Gopher quality filter (Rae et al. 2021, Appendix A.1.1 "Quality filtering")."""
from __future__ import annotations

import dataclasses

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


def measure(text: str, config: QualityConfig = QualityConfig()) -> dict[str, float]:
    """Returns every quantity the quality rules compare against their thresholds."""
    words = text.split()
    n = len(words)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    n_lines = max(len(lines), 1)
    bare = {w.strip(_PUNCT).lower() for w in words}
    return {
        "words": n,
        "mean_word_length": sum(len(w) for w in words) / n if n else 0.0,
        "hash_to_word_ratio": text.count("#") / n if n else 0.0,
        "ellipsis_to_word_ratio": (text.count("...") + text.count("…")) / n if n else 0.0,
        "bullet_lines_fraction": sum(line.startswith(config.bullets) for line in lines) / n_lines,
        "ellipsis_lines_fraction": sum(line.endswith(("...", "…")) for line in lines) / n_lines,
        "alpha_words_fraction": sum(any(c.isalpha() for c in w) for w in words) / n if n else 0.0,
        "stop_words": len(bare.intersection(config.stop_words)),
    }


def check_quality(text: str, config: QualityConfig = QualityConfig()) -> str | None:
    """Returns the name of the first failed quality rule, or None when the document is kept."""
    m = measure(text, config)
    c = config
    rules = (
        ("min_words", m["words"] < c.min_words),
        ("max_words", m["words"] > c.max_words),
        ("mean_word_length", not c.min_mean_word_length <= m["mean_word_length"] <= c.max_mean_word_length),
        ("hash_ratio", m["hash_to_word_ratio"] > c.max_hash_to_word_ratio),
        ("ellipsis_ratio", m["ellipsis_to_word_ratio"] > c.max_ellipsis_to_word_ratio),
        ("bullet_lines", m["bullet_lines_fraction"] > c.max_bullet_lines_fraction),
        ("ellipsis_lines", m["ellipsis_lines_fraction"] > c.max_ellipsis_lines_fraction),
        ("alpha_words", m["alpha_words_fraction"] < c.min_alpha_words_fraction),
        ("stop_words", m["stop_words"] < c.min_stop_words),
    )
    return next((name for name, failed in rules if failed), None)


def filter_quality(doc: Doc, config: QualityConfig) -> Doc:
    """Returns doc, dropped as "quality:<rule>" when a rule fails."""
    rule = check_quality(doc.text, config)
    return doc if rule is None else doc.dropped(f"quality:{rule}")
