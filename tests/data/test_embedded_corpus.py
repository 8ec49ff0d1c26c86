"""The embedded corpus is real English prose, split deterministically into train / held-out."""
import collections
import re
import sys

import pytest

from gopher_jax.data import embedded_corpus


@pytest.fixture(scope="module")
def splits():
    return {s: embedded_corpus.documents(s) for s in embedded_corpus.SPLITS}


def test_sizes_and_held_out_fraction(splits):
    train, held_out = splits["train"], splits["validation"]
    assert len(train) > 350 and sum(map(len, train)) > 2_000_000  # Lee news + Wikipedia articles
    assert 0.02 < len(held_out) / (len(train) + len(held_out)) < 0.1
    assert not set(train) & set(held_out)


def test_split_is_deterministic_and_order_independent(splits):
    docs = embedded_corpus.all_documents()
    assert [d.text for d in docs if embedded_corpus.is_held_out(d.id)] == splits["validation"]
    assert embedded_corpus.documents("validation") == splits["validation"]


def test_real_english_without_wiki_markup(splits):
    text = "\n".join(splits["train"])
    words = collections.Counter(re.findall(r"[a-z]+", text.lower()))
    top = {w for w, _ in words.most_common(20)}
    assert {"the", "of", "and", "to", "in", "a"} <= top
    assert words["the"] / sum(words.values()) > 0.04  # natural English, not random tokens
    for markup in ("[[", "]]", "{{", "'''", "<ref"):
        assert markup not in text, markup
    assert any(d.startswith("Anarchism is a political philosophy") for d in splits["train"] + splits["validation"])


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="validation"):
        embedded_corpus.documents("test")


def test_missing_gensim_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # makes `import gensim` raise ImportError
    with pytest.raises(ImportError, match="pip install gensim"):
        embedded_corpus.gensim_test_data_dir()
