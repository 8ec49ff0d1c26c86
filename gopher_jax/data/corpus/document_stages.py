"""Applying the per-document stages (unicode .. repetition) to one document."""
from __future__ import annotations

import dataclasses

from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.langid import filter_language
from gopher_jax.data.corpus.quality import filter_quality
from gopher_jax.data.corpus.repetition import filter_repetition
from gopher_jax.data.corpus.short_docs import filter_short
from gopher_jax.data.corpus.unicode_repair import repair_unicode


def apply_document_stages(doc: Doc, config: ProcessConfig) -> Doc:
    """Returns doc after the selected per-document stages; stops at the first drop."""
    doc = dataclasses.replace(doc, priority=config.dedup.priority(doc.source))
    stages = config.stages
    steps = (
        ("unicode", repair_unicode),
        ("langid", lambda d: filter_language(d, config.langid)),
        ("short_docs", lambda d: filter_short(d, config.short_docs)),
        ("quality", lambda d: filter_quality(d, config.quality)),
        ("repetition", lambda d: filter_repetition(d, config.repetition)),
    )
    for name, step in steps:
        if not doc.alive:
            break
        if name in stages:
            doc = step(doc)
    return doc
