"""What the user-facing docs say, parsed: the pages, their code, commands, links and named paths.

Shared by tests/docs/test_docs_consistency.py (checks each claim without running anything) and
tests/docs/test_docs_commands.py (runs the commands). Pages: README.md, docs/**/*.md,
gin_configs/**/README.md, benchmarks/README.md, and the comment lines of every gin file.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOP_DIRS = ("gopher_jax", "tests", "docs", "gin_configs", "benchmarks", "data_tasks")
FILE_EXTS = (".py", ".gin", ".md", ".sh", ".cc", ".json", ".png", ".toml", ".cfg")


@dataclasses.dataclass(frozen=True)
class Snippet:
    """One piece of a page: inline code, a code-block line (continuations joined) or a link."""
    page: str      # repository-relative path of the page
    line: int      # 1-based line of the page where it starts
    text: str
    kind: str      # "inline" | "block" | "link" | "prose"

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def doc_pages() -> list[str]:
    """Returns the repository-relative markdown pages the docs tests read."""
    pages = ["README.md", "benchmarks/README.md"]
    pages += sorted(glob.glob("docs/**/*.md", root_dir=REPO, recursive=True))
    pages += sorted(glob.glob("gin_configs/**/README.md", root_dir=REPO, recursive=True))
    return [p for p in pages if os.path.isfile(os.path.join(REPO, p))]


def gin_files() -> list[str]:
    """Returns the repository-relative gin files."""
    return sorted(glob.glob("gin_configs/**/*.gin", root_dir=REPO, recursive=True))


def read(page: str) -> str:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
        return f.read()


def _join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for no, text in lines:
        if pending is not None:
            no, text = pending[0], pending[1] + " " + text.strip()
        if text.rstrip().endswith("\\"):
            pending = (no, text.rstrip()[:-1])
            continue
        pending = None
        out.append((no, text))
    if pending is not None:
        out.append(pending)
    return out


def markdown_snippets(page: str, text: str | None = None) -> list[Snippet]:
    """Splits a markdown page into code-block lines, inline code spans, links and prose lines."""
    text = read(page) if text is None else text
    out: list[Snippet] = []
    block: list[tuple[int, str]] = []
    fenced = False
    prev_blank = True
    indented: list[tuple[int, str]] = []

    def flush(buf: list[tuple[int, str]]) -> None:
        for no, line in _join_continuations(buf):
            out.append(Snippet(page, no, line.strip(), "block"))
        buf.clear()

    for no, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            if fenced:
                flush(block)
            fenced = not fenced
            continue
        if fenced:
            block.append((no, line))
            continue
        # An indented block: 4 spaces after a blank line (or continuing one), not a list item's text.
        if line.startswith("    ") and (prev_blank or indented) and not re.match(r"\s*([-*]|\d+\.)\s", line):
            indented.append((no, line))
            prev_blank = False
            continue
        if indented:
            flush(indented)
        prev_blank = not line.strip() or line.startswith("#")   # a heading may be followed by a code block
        for m in re.finditer(r"(`+)(.+?)\1", line):
            out.append(Snippet(page, no, m.group(2).strip(), "inline"))
        for m in re.finditer(r"\]\(([^)\s]+)\)", line):
            out.append(Snippet(page, no, m.group(1), "link"))
        out.append(Snippet(page, no, re.sub(r"(`+).+?\1", " ", line), "prose"))
    flush(block)
    flush(indented)
    return out


def gin_comment_snippets(path: str) -> list[Snippet]:
    """Returns each comment of a gin file (the text after '#') as prose, and its backticked spans."""
    out: list[Snippet] = []
    for no, line in enumerate(read(path).splitlines(), start=1):
        if "#" not in line:
            continue
        comment = line.split("#", 1)[1]
        kind = "block" if _COMMAND_START.search(comment) else "prose"
        out.append(Snippet(path, no, comment.strip(), kind))
        for m in re.finditer(r"`([^`]+)`", comment):
            out.append(Snippet(path, no, m.group(1).strip(), "inline"))
    # Commands written over several comment lines, e.g. "#   gopher-jax compile ... \"
    return _join_gin_commands(out)


def _join_gin_commands(snippets: list[Snippet]) -> list[Snippet]:
    out: list[Snippet] = []
    for s in snippets:
        if out and out[-1].kind == "block" and out[-1].text.endswith("\\") and s.kind in ("block", "prose"):
            prev = out.pop()
            out.append(Snippet(prev.page, prev.line, prev.text[:-1] + " " + s.text, "block"))
            continue
        out.append(s)
    return out


def all_snippets() -> list[Snippet]:
    """Every snippet of every page the docs tests read."""
    out: list[Snippet] = []
    for page in doc_pages():
        out += markdown_snippets(page)
    for path in gin_files():
        out += gin_comment_snippets(path)
    return out


@dataclasses.dataclass(frozen=True)
class Command:
    """A documented `gopher-jax ...` or `./launch_tpu.sh ...` command line, split into words."""
    where: str
    text: str
    words: tuple[str, ...]   # from the program name on; optional "[...]" parts kept, brackets removed
    program: str             # "gopher-jax" | "./launch_tpu.sh"
    optional: frozenset[int]   # indices of the words that were inside [...] or (a | b) alternatives

    def required_words(self) -> list[str]:
        """The command without its optional parts."""
        return [w for i, w in enumerate(self.words) if i not in self.optional]


_COMMAND_START = re.compile(r"(?:^|[\s;&(])((?:gopher-jax|\./launch_tpu\.sh)(?=\s|$))")


def _split_optional(text: str) -> tuple[list[str], set[int]]:
    """shlex-splits a command; returns its words and the indices of those inside [...] or (a | b)."""
    try:
        raw = shlex.split(text, comments=True)
    except ValueError:
        raw = text.split()
    words, optional, depth = [], set(), 0
    for w in raw:
        if w in ("|", "\\|"):
            continue
        lead = len(w) - len(w.lstrip("[("))
        inner = w[lead:]
        trail = 0
        if "=[" not in inner and "=(" not in inner:  # a value such as --gin_param=x=[1] keeps its brackets
            trail = len(inner) - len(inner.rstrip("])"))
            inner = inner[:len(inner) - trail]
        depth += lead
        if inner:
            if depth > 0:
                optional.add(len(words))
            words.append(inner)
        depth = max(depth - trail, 0)
    return words, optional


def commands_in(snippets: list[Snippet]) -> list[Command]:
    """Returns the commands written in code blocks, inline code and gin comments."""
    out = []
    for s in snippets:
        if s.kind not in ("block", "inline"):
            continue
        m = _COMMAND_START.search(s.text)
        if not m:
            continue
        text = s.text[m.start(1):]
        text = re.split(r"\s+#\s", text)[0]       # a trailing comment
        text = re.split(r"\s(?:&&|;|\|\|)\s", text)[0]  # the first command of a chain
        words, optional = _split_optional(text)
        if len(words) < 2 and s.kind == "inline":
            continue
        out.append(Command(s.where(), text, tuple(words), words[0], frozenset(optional)))
    return out


def resolve_repo_path(token: str, page: str) -> str | None:
    """Returns the existing repository path a doc token names (tried against the page's folder,
    the root, gin_configs/, gopher_jax/ and its packages), or None."""
    bases = [os.path.dirname(page), "", "gin_configs", "gopher_jax", "docs"]
    bases += sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "gopher_jax", "*/")))
    for base in bases:
        cand = os.path.normpath(os.path.join(base, token))
        if os.path.exists(os.path.join(REPO, cand)):
            return cand
    return None


def headings_slugs(page: str) -> set[str]:
    """GitHub's anchors for a page's headings (lower-case, punctuation dropped, spaces to '-')."""
    slugs = set()
    fenced = False
    for line in read(page).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        title = re.sub(r"[^\w\- ]", "", title)
        slugs.add(title.replace(" ", "-"))
    return slugs
