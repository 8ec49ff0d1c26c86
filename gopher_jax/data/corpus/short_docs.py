"""MT-NLG's short-document rules (Smith et al. 2022, §3.1 "Text Extraction and Filtering")."""
from __future__ import annotations

import dataclasses

import gin

from gopher_jax.data.corpus.documents import Doc


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class ShortDocConfig:
    """Thresholds of the MT-NLG short-document rules (defaults: MT-NLG §3.1)."""

    min_chars: int = 512  # MT-NLG: drop documents with fewer than 512 characters
    javascript_max_chars: int = 256  # MT-NLG: drop < 256 characters that contain "javascript"
    javascript_word: str = "javascript"  # matched case-insensitively


def check_short(text: str, config: ShortDocConfig) -> str | None:
    """Returns the name of the first failed rule, or None when the document is kept."""
    n = len(text)
    # Checked first so the more specific reason is recorded (it implies the length rule).
    if n < config.javascript_max_chars and config.javascript_word in text.lower():
        return "javascript"
    if n < config.min_chars:
        return "min_chars"
    return None


def filter_short(doc: Doc, config: ShortDocConfig) -> Doc:
    """Returns doc, dropped as "short_docs:<rule>" when a rule fails."""
    rule = check_short(doc.text, config)
    return doc if rule is None else doc.dropped(f"short_docs:{rule}")
