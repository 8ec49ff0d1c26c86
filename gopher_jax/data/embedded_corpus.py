"""The embedded default corpus: real text that the installed packages ship, as MassiveText-shaped components.

Every machine that runs `pip install -e .` has these files, so the default run needs no download.
Each stands in for one MassiveText subset (Gopher Table 2); `embedded_mixture` runs them through
the same filters and dedup as real data and writes the `gopher-jax data process` layout + manifest.

| component  | source (installed file)                                                   | stands in because |
|------------|---------------------------------------------------------------------------|-------------------|
| massiveweb | gensim test_data/mini_newsgroup: 147 Usenet posts of 20 Newsgroups (1993), headers stripped as MassiveWeb's text extraction strips HTML | user-written web text, with its noise |
| books      | the standard library's pydoc_data/topics.py: the Python Language Reference, one chapter per document | long-form edited prose |
| news       | gensim test_data/lee_background.cor + lee.cor: Lee et al. (2005) Australian news articles | news articles |
| wikipedia  | gensim test_data/enwiki-latest-pages-articles1...-shortened.bz2: ~100 English Wikipedia articles, markup stripped with gensim's parser | Wikipedia |
| github     | the standard library's own .py sources (json, email, http, logging, collections, concurrent, urllib and a few modules) | source code |
| c4         | none: nothing installed is C4-like, so the mixture leaves it out and renormalises | |

gensim's crime-and-punishment.txt is a 3.8 KB Russian excerpt, not a novel, so it is not used. The
raw documents are cached as JSONL per component (extraction takes a few seconds once); the Python
version is part of the cache key, since `books` and `github` come from its standard library.
"""
from __future__ import annotations

import bz2
import dataclasses
import json
import os
import re
import sys

from gopher_jax.atomic_write import atomic_write

# Bump when the extraction or cleaning changes: it keys every cache built from this corpus.
CORPUS_VERSION = "embedded-v2"
# The MassiveText components this corpus has a stand-in for (see the table above); c4 has none.
COMPONENTS = ("massiveweb", "books", "news", "wikipedia", "github")

_LEE_FILES = ("lee_background.cor", "lee.cor")
_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
_NEWSGROUP_FILE = "mini_newsgroup"
# Standard-library code for `github`: packages (tests excluded) and single modules, ~1.2 MB.
_STDLIB_CODE = ("json", "email", "http", "logging", "collections", "concurrent", "urllib", "csv.py",
                "dataclasses.py", "textwrap.py", "functools.py", "pathlib.py", "shutil.py", "statistics.py",
                "fractions.py", "heapq.py", "bisect.py", "random.py", "string.py", "difflib.py")
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
    missing = [f for f in _LEE_FILES + (_WIKI_FILE, _NEWSGROUP_FILE) if not os.path.isfile(os.path.join(path, f))]
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


def _wikipedia(data_dir: str) -> list[Document]:
    from gensim.corpora import wikicorpus  # slow import; only needed when the cache is cold

    docs = []
    with bz2.open(os.path.join(data_dir, _WIKI_FILE), "rb") as f:
        for title, markup, _ in wikicorpus.extract_pages(f, filter_namespaces=("0",)):
            if markup.lstrip().lower().startswith("#redirect"):
                continue
            text = _clean_wiki(wikicorpus.filter_wiki(markup))
            if len(text) >= _MIN_WIKI_CHARS:
                docs.append(Document(f"enwiki:{title}", text))
    return docs


def _news(data_dir: str) -> list[Document]:
    docs = []
    for name in _LEE_FILES:
        with open(os.path.join(data_dir, name), encoding="latin-1") as f:  # lee.cor has a latin-1 '£'
            for i, line in enumerate(f):
                if line.strip():
                    docs.append(Document(f"{name.split('.')[0]}:{i}", line.strip()))
    return docs


def _massiveweb(data_dir: str) -> list[Document]:
    """The 20 Newsgroups posts inside gensim's mini_newsgroup (a zlib-compressed protocol-0 pickle).

    The pickle is never loaded: pickletools only lists its string constants, so nothing in the file
    can run (tests/reliability/test_no_code_from_data.py forbids unpickling data).
    """
    import pickletools
    import zlib

    with open(os.path.join(data_dir, _NEWSGROUP_FILE), "rb") as f:
        raw = zlib.decompress(f.read())
    docs = []
    for op, arg, _ in pickletools.genops(raw):
        if isinstance(arg, str) and arg.startswith(("Newsgroups:", "From:", "Path:")):
            header, _, body = arg.partition("\n\n")
            group = re.search(r"^Newsgroups:\s*(\S+)", header, flags=re.M)
            body = body.strip()
            if body:
                docs.append(Document(f"newsgroup:{group.group(1) if group else 'unknown'}:{len(docs)}", body))
    return docs


def _books() -> list[Document]:
    from pydoc_data import topics  # the Python Language Reference, as shipped with this interpreter

    return [Document(f"python-reference:{name}", text.strip()) for name, text in sorted(topics.topics.items())
            if len(text.strip()) >= _MIN_WIKI_CHARS]


def _github() -> list[Document]:
    import sysconfig

    lib = sysconfig.get_paths()["stdlib"]
    docs = []
    for entry in _STDLIB_CODE:
        path = os.path.join(lib, entry)
        files = ([os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".py")]
                 if os.path.isdir(path) else [path] if os.path.isfile(path) else [])
        for p in sorted(files):
            if "test" in os.path.relpath(p, lib).split(os.sep)[:-1]:
                continue
            with open(p, encoding="utf-8", errors="replace") as f:
                text = f.read()
            if text.strip():
                docs.append(Document(f"cpython:{os.path.relpath(p, lib)}", text))
    return docs


def extract_component(component: str) -> list[Document]:
    """Reads and cleans one component's source; returns its documents in a fixed order."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown embedded component {component!r}; the embedded corpus has {COMPONENTS}")
    data_dir = gensim_test_data_dir() if component in ("massiveweb", "news", "wikipedia") else ""
    docs = {"massiveweb": lambda: _massiveweb(data_dir), "books": _books, "news": lambda: _news(data_dir),
            "wikipedia": lambda: _wikipedia(data_dir), "github": _github}[component]()
    if not docs:
        raise ValueError(f"embedded component {component!r} yielded no documents from its installed source")
    return docs


def raw_component_path(component: str, cache_dir: str | None = None) -> str:
    """Returns the JSONL ({"id", "text"} per line) of one component's raw documents, extracting it once."""
    path = os.path.join(cache_dir or default_cache_dir(), corpus_key(), "raw", f"{component}.jsonl")
    if not os.path.isfile(path):
        docs = extract_component(component)

        def write(f):
            for d in docs:
                f.write(json.dumps(dataclasses.asdict(d), ensure_ascii=False) + "\n")

        atomic_write(path, write)
    return path


def corpus_key() -> str:
    """Returns the cache key of the raw corpus: CORPUS_VERSION and the Python version (books, github)."""
    return f"{CORPUS_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}"
