"""The embedded default corpus: real text from installed packages, shaped and processed like MassiveText."""
import collections
import json
import os
import re
import sys

import pytest

from gopher_jax.data import embedded_corpus, embedded_mixture
from gopher_jax.data.manifest import read_manifest


@pytest.fixture(scope="module")
def manifest():
    return read_manifest(embedded_mixture.ensure_processed())


def test_components_are_present_with_real_sizes(manifest):
    assert set(manifest.components) == set(embedded_corpus.COMPONENTS)
    train = {c: e.splits["train"] for c, e in manifest.components.items()}
    # Sizes of the installed sources after processing (lower bounds leave room for other package versions).
    assert train["wikipedia"].bytes > 2_000_000 and train["news"].documents > 250
    assert train["github"].bytes > 500_000 and train["books"].documents > 40 and train["massiveweb"].documents > 80
    for c, e in manifest.components.items():
        assert e.splits["validation"].documents > 0, c  # every component reports held-out bits-per-byte


def test_stages_follow_gopher_appendix_a(manifest):
    assert "quality" in manifest.components["massiveweb"].stages
    assert "repetition" in manifest.components["massiveweb"].stages
    for c in ("books", "news", "wikipedia", "github"):
        assert manifest.components[c].stages == ("exact_dedup", "fuzzy_dedup"), c


def test_processing_removed_something_from_web_text(manifest):
    stats = json.load(open(os.path.join(manifest.root, "stats", "massiveweb.json")))
    raw = sum(1 for _ in open(embedded_corpus.raw_component_path("massiveweb")))
    kept = sum(manifest.components["massiveweb"].splits[s].documents for s in ("train", "validation"))
    assert kept < raw, stats  # the quality / repetition filters really ran on the web component


def test_text_is_real_english_and_wikipedia_has_no_markup(manifest):
    text = "\n".join(embedded_mixture.documents("train"))
    words = collections.Counter(re.findall(r"[a-z]+", text.lower()))
    assert {"the", "of", "and", "to", "a"} <= {w for w, _ in words.most_common(25)}
    wiki = "\n".join(d.text for d in embedded_corpus.extract_component("wikipedia"))
    for markup in ("[[", "]]", "{{", "'''"):
        assert markup not in wiki, markup
    assert any(d.startswith("Anarchism is a political philosophy") for d in
               embedded_mixture.documents("train") + embedded_mixture.documents("validation"))


def test_github_is_python_source_and_books_is_the_language_reference():
    code = embedded_corpus.extract_component("github")
    assert all(d.id.startswith("cpython:") and d.id.endswith(".py") for d in code)
    assert any("def " in d.text for d in code)
    books = embedded_corpus.extract_component("books")
    assert any("statement" in d.text for d in books)


def test_splits_are_deterministic(manifest, tmp_path):
    again = read_manifest(embedded_mixture.ensure_processed())
    assert again.to_json() == manifest.to_json()
    assert not set(embedded_mixture.documents("train")) & set(embedded_mixture.documents("validation"))


def test_unknown_component_names_the_choices():
    with pytest.raises(ValueError, match="massiveweb"):
        embedded_corpus.extract_component("c4")


def test_missing_gensim_says_how_to_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "gensim", None)  # makes `import gensim` raise ImportError
    with pytest.raises(ImportError, match="pip install gensim"):
        embedded_corpus.gensim_test_data_dir()
