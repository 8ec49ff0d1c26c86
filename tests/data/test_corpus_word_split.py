"""The datatrove-compatible reading of the Gopher filters (corpus.*.word_split = "datatrove").

Compared against the real thing: datatrove's GopherQualityFilter + GopherRepetitionFilter (the
implementation behind FineWeb) and its English word tokenizer (spaCy's), on real web text.
"""
import json
import subprocess
import sys

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
from datatrove.utils.text import split_into_words

from gopher_jax.data.corpus.quality import QualityConfig, check_quality
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.repetition import RepetitionConfig, check_repetition
from gopher_jax.data.corpus.word_split import datatrove_words, split_words

from tests.fixtures.paths import C4, WIKITEXT2


@pytest.fixture(scope="module")
def web_texts():
    """100 real C4 documents and the WikiText-2 fixture articles (109 documents)."""
    with open(C4) as f:
        texts = [json.loads(line)["text"] for line in f]
    texts += [d.text for s, p in expand_inputs([WIKITEXT2]) for d in read_documents(s, p) if d.alive]
    return texts


_DATATROVE_FILTERS = []


def datatrove_keeps(text: str) -> bool:
    """Returns datatrove's decision: its repetition then quality filter (FineWeb's order)."""
    if not _DATATROVE_FILTERS:
        _DATATROVE_FILTERS.extend([GopherRepetitionFilter(), GopherQualityFilter()])
    doc = Document(text=text, id="x")
    return all(f.filter(doc) is True for f in _DATATROVE_FILTERS)


def ours_keeps(text: str, quality: QualityConfig, repetition: RepetitionConfig) -> bool:
    return check_quality(text, quality) is None and check_repetition(text, repetition) is None


def test_datatrove_reading_reproduces_datatrove_decisions(web_texts):
    """>= 98% of keep/drop decisions agree in the datatrove reading (measured: 100% of 622);
    the default whitespace reading agrees on ~80% (WikiText's spaced punctuation, alpha words)."""
    from gopher_jax import gin_utils
    from gopher_jax.data.corpus.config import ProcessConfig
    gin_utils.parse_gin(["gin_configs/data/datatrove_compat.gin"])
    cfg = ProcessConfig.from_gin()
    gin_utils.parse_gin([])  # the default configs below must not see datatrove_compat.gin
    assert cfg.quality.word_split == cfg.repetition.word_split == "datatrove"
    theirs = [datatrove_keeps(t) for t in web_texts]
    compat = [ours_keeps(t, cfg.quality, cfg.repetition) for t in web_texts]
    default = [ours_keeps(t, QualityConfig(), RepetitionConfig()) for t in web_texts]
    agree = sum(a == b for a, b in zip(compat, theirs)) / len(web_texts)
    agree_default = sum(a == b for a, b in zip(default, theirs)) / len(web_texts)
    print(f"\nagreement with datatrove on {len(web_texts)} documents: datatrove reading {agree:.4f}, "
          f"default {agree_default:.4f}; datatrove keeps {sum(theirs)}")
    assert agree >= 0.98
    assert 0 < sum(theirs) < len(web_texts)  # both decisions occur: the comparison means something


def test_words_match_datatrove_tokenizer_on_web_text(web_texts):
    """Token for token: >= 95% of documents split identically (measured 487/500 C4 documents),
    and the total word count is within 0.05% of the real tokenizer's."""
    c4 = web_texts[:100]
    ours = [datatrove_words(t) for t in c4]
    theirs = [split_into_words(t) for t in c4]
    identical = sum(a == b for a, b in zip(ours, theirs))
    n_ours, n_theirs = sum(map(len, ours)), sum(map(len, theirs))
    print(f"\nidentical splits {identical}/{len(c4)}; words {n_ours} vs {n_theirs}")
    assert identical >= 0.95 * len(c4)
    assert abs(n_ours - n_theirs) <= 0.0005 * n_theirs


@pytest.mark.parametrize("text", [
    '"Hello," she said... (don\'t) it\'s 3.5% of $10.50 at 10:30 in the U.S., e.g. co-op and/or a/b',
    "Visit http://example.com/a?b=1, or www.foo.com. Email user@example.com! COVID-19 end.Next",
    "I'm sure you're right; we've 12pm #tag @me — 5°C… “quoted” ‘single’ cannot gonna x--y 2-3",
    "Mr. Smith's dog; Dr. Who; St. Louis. J. K. Rowling, Ph.D. 1st 2nd 90s '90s 10km 5kg ©2020 ★★",
])
def test_words_match_datatrove_tokenizer_on_hard_cases(text):
    assert datatrove_words(text) == split_into_words(text)


def test_whitespace_reading_is_the_default():
    assert QualityConfig().word_split == RepetitionConfig().word_split == "whitespace"
    assert split_words('"Hello," she said.', "whitespace") == ['"Hello,"', "she", "said."]
    assert split_words('"Hello," she said.', "datatrove") == ['"', "Hello", ",", '"', "she", "said", "."]
    with pytest.raises(ValueError, match="word_split='spacy'"):
        QualityConfig(word_split="spacy")
    with pytest.raises(ValueError, match="count_first_copy=True is not datatrove's reading"):
        RepetitionConfig(word_split="datatrove", count_first_copy=True)


def test_datatrove_reading_needs_neither_spacy_nor_datatrove(web_texts):
    """The production path runs with spaCy, datatrove and nltk unimportable, and decides as
    datatrove does."""
    texts = web_texts[:40]
    code = (
        "import json, sys\n"
        "for m in ('spacy', 'datatrove', 'nltk'):\n"
        "    sys.modules[m] = None\n"
        "from gopher_jax.data.corpus.quality import QualityConfig, check_quality\n"
        "from gopher_jax.data.corpus.repetition import RepetitionConfig, check_repetition\n"
        "q = QualityConfig(word_split='datatrove', bullets=('•', '-'))\n"
        "r = RepetitionConfig(word_split='datatrove')\n"
        "texts = json.load(sys.stdin)\n"
        "print(json.dumps([check_quality(t, q) is None and check_repetition(t, r) is None for t in texts]))\n")
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps(texts), capture_output=True,
                         text=True, check=True)
    decisions = json.loads(out.stdout)
    assert decisions == [datatrove_keeps(t) for t in texts]
    assert 0 < sum(decisions) < len(texts)
