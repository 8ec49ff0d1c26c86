"""Unicode repair with ftfy (MT-NLG §3.1): mojibake, HTML entities, line breaks, control chars."""
from __future__ import annotations

import functools
import re

import ftfy
from ftfy import fixes

from gopher_jax.data.corpus.documents import Doc

# ftfy already repairs text line by line; a line of printable ASCII without '&' has nothing
# ftfy would change except line breaks, so only the other lines are handed to it (~10x faster
# on books, same output: tests/data/test_corpus_unicode.py checks it against plain ftfy).
_NEEDS_FTFY = re.compile(r"[^\t\n\x20-\x7e]|&")


@functools.lru_cache(maxsize=1)
def _config() -> ftfy.TextFixerConfig:
    return ftfy.TextFixerConfig()


def fix_text(text: str) -> str:
    """Returns ftfy.fix_text(text), computed only on the lines that can change."""
    text = fixes.fix_line_breaks(text)
    if not _NEEDS_FTFY.search(text):
        return text
    config = _config()
    return "".join(ftfy.fix_text(line, config) if _NEEDS_FTFY.search(line) else line
                   for line in text.splitlines(keepends=True))


def repair_unicode(doc: Doc) -> Doc:
    """Returns doc with ftfy-fixed text, recording "unicode:fixed" when the text changed."""
    fixed = fix_text(doc.text)
    if fixed == doc.text:
        return doc
    if not fixed.strip():
        return doc.changed(fixed, "unicode:fixed").dropped("unicode:empty_after_repair")
    return doc.changed(fixed, "unicode:fixed")
