"""The embedded default corpus: real English prose that the installed `gensim` wheel ships.

Sources (all in `gensim/test/test_data/`):
  - `lee_background.cor` and `lee.cor`: the Lee et al. (2005) corpus of Australian news articles
    (350 documents, one per line, latin-1 encoded).
  - `enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`: a shortened English
    Wikipedia dump (~100 full articles); the wiki markup is stripped with gensim's own parser.

Together this is ~3.5 MB of text (~1M tokens at a 4k vocabulary): enough for the tiny model to learn
real structure in a few hundred steps, so "held-out loss below unigram entropy" means something.

The train / held-out split is by a hash of each document's id (source + index), so it is
deterministic, independent of document order, and stable when sources are added.
The extracted documents are cached as JSONL in the cache dir (extraction takes ~3 s; reading ~0.1 s).
"""
from __future__ import annotations

import bz2
import dataclasses
import hashlib
import json
import os
import re

from gopher_jax.atomic_write import atomic_write

# Bump when the extraction or cleaning changes: it keys every cache built from this corpus.
CORPUS_VERSION = "embedded-v1"
# Fraction of documents held out for evaluation (by hash, see module docstring).
HELD_OUT_FRACTION = 0.05
TRAIN = "train"
HELD_OUT = "validation"
SPLITS = (TRAIN, HELD_OUT)

_LEE_FILES = ("lee_background.cor", "lee.cor")
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Articles shorter than this (after cleaning) are stubs or disambiguation lists, not prose.
_MIN_WIKI_CHARS = 500


@dataclasses.dataclass(frozen=True)
class Document:
    id: str  # "source:index", e.g. "lee_background:17" or "enwiki:Anarchism"
    text: str


def default_cache_dir() -> str:
    """Returns the cache dir: $GOPHER_JAX_CACHE_DIR, else ~/.cache/gopher_jax."""
    return os.environ.get("GOPHER_JAX_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "gopher_jax")


def gensim_test_data_dir() -> str:
    """Returns the folder of text files the gensim wheel ships; raises ImportError if gensim is missing."""
    try:
        import gensim  # noqa: F401  (only its data files are used)
    except ImportError as e:
        raise ImportError(
            "the embedded default corpus is read from the `gensim` package's test data, but gensim is "
            "not installed: run `pip install gensim` (it is in setup.py's install_requires), or pass "
            "your own text/jsonl files instead of the embedded corpus.") from e
    path = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data")
    missing = [f for f in _LEE_FILES + (_WIKI_FILE,) if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise FileNotFoundError(
            f"gensim {gensim.__version__} at {path} does not ship {missing}; install a gensim wheel that "
            "includes its test data (e.g. `pip install --force-reinstall gensim==4.4.0`).")
    return path


def _clean_wiki(text: str) -> str:
    """Turns gensim.filter_wiki output into plain prose: no bold/italic quotes, plain headings."""
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^\s*=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _extract() -> list[Document]:
    """Reads and cleans every source; returns documents in a fixed order, exact duplicates removed."""
    from gensim.corpora import wikicorpus  # slow import; only needed when the cache is cold

    data_dir = gensim_test_data_dir()
    docs: list[Document] = []
    for name in _LEE_FILES:
        with open(os.path.join(data_dir, name), encoding="latin-1") as f:  # lee.cor has a latin-1 '£'
            for i, line in enumerate(f):
                if line.strip():
                    docs.append(Document(f"{name.split('.')[0]}:{i}", line.strip()))
    with bz2.open(os.path.join(data_dir, _WIKI_FILE), "rb") as f:
        for title, markup, _ in wikicorpus.extract_pages(f, filter_namespaces=("0",)):
            if markup.lstrip().lower().startswith("#redirect"):
                continue
            text = _clean_wiki(wikicorpus.filter_wiki(markup))
            if len(text) >= _MIN_WIKI_CHARS:
                docs.append(Document(f"enwiki:{title}", text))
    seen: set[str] = set()
    unique = []
    for d in docs:  # lee_background.cor repeats a few articles verbatim
        if d.text not in seen:
            seen.add(d.text)
            unique.append(d)
    return unique


def all_documents(cache_dir: str | None = None) -> list[Document]:
    """Returns every embedded document (train and held-out), extracting once and caching as JSONL."""
    path = os.path.join(cache_dir or default_cache_dir(), f"{CORPUS_VERSION}.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return [Document(**json.loads(line)) for line in f]
    docs = _extract()

    def write(f):
        for d in docs:
            f.write(json.dumps(dataclasses.asdict(d), ensure_ascii=False) + "\n")

    atomic_write(path, write)
    return docs


def is_held_out(doc_id: str) -> bool:
    """Returns True if the document with this id belongs to the held-out split."""
    h = int.from_bytes(hashlib.sha256(f"{CORPUS_VERSION}/{doc_id}".encode()).digest()[:8], "big")
    return (h % 10_000) < HELD_OUT_FRACTION * 10_000


def documents(split: str = TRAIN, cache_dir: str | None = None) -> list[str]:
    """Returns the texts of one split ("train" or "validation") in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown embedded-corpus split {split!r}; use one of {SPLITS}")
    want_held_out = split == HELD_OUT
    return [d.text for d in all_documents(cache_dir) if is_held_out(d.id) == want_held_out]


def tf_dataset(split: str, shuffle_files: bool = False, seed: int | None = None,
               cache_dir: str | None = None):
    """Returns a tf.data.Dataset of {"text": tf.string} for one split (the seqio FunctionDataSource fn).

    With shuffle_files the document order is shuffled (seeded, a new order each epoch), so the
    task-level shuffle buffer of chunks can stay small (fast first batch) and still mix articles.
    """
    import tensorflow as tf  # only here: the rest of this module must not pay for TensorFlow

    texts = documents(split, cache_dir=cache_dir)
    ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts, dtype=tf.string)})
    if shuffle_files:
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return ds
