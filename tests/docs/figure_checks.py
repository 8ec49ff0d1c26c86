"""Finds the hand-typed figures of the docs: the rule tests/docs/test_docs_figures.py enforces.

A *figure* is a number stated with a unit of speed, memory or time:
  - speed: tokens/s, tok/s, docs/s, shingles/s, KB/s .. TB/s (and KiB/s ..), GFLOP/s, TFLOP/s, steps/s;
    "N% MFU"; "Nx faster" / "Nx slower";
  - memory: KB, MB, GB, TB, KiB, MiB, GiB, TiB (bare "B" is not a unit here: "280B" is a model);
  - time: ns, µs, us, ms, s, sec, seconds, min, minutes, h, hours, s/step;
written as a number or a range ("32-38 ms", "~2 s", "1,250 tokens/s", "**0.36 s**"), or a bare number
in a markdown table column whose header names one of these units (a "filter s" or "MB/s" column).
A unit directly followed by a letter, digit, "+", "=" or "(" is not one ("3MB+P-1", "MB=12"), nor is a
number glued to a word by "-" ("GPT-2 tokens/s"). The rule sees a unit only after its number: a sentence
that names the unit once ("CPU ms per call: 35.5 -> 34.5") is seen through its other figures, if any,
so keep such a paragraph beside its results file anyway.

A figure passes when any of these holds:
  1. it lies inside a generated region (`<!-- figures:NAME -->` .. `<!-- /figures -->`, in gin
     `# figures:NAME` .. `# /figures`), written by benchmarks/render_docs.py from a results JSON
     that records its host and date (tests/docs/test_docs_figures.py checks the regions are current);
  2. its paragraph names a committed results file, `benchmarks/results/<name>.json` (or one of the
     older `benchmarks/<name>.json`), as a path or a link, and that file exists. A paragraph is a run
     of non-blank lines; a table also counts the paragraph just before it and just after it; in a gin
     file it is a run of lines that carry a comment;
  3. it is on NOT_MEASURED below: a figure that states no measurement of this code, with the reason
     (a paper's or a vendor's constant, a configured default or limit, arithmetic from a shape).
     Keep that list short: a measured figure belongs in a results file.
Everything else fails, naming page, line and figure.
"""
from __future__ import annotations

import os
import re

from tests.docs.doc_sources import REPO

NUM = r"~?\d(?:[\d,]*\d)?(?:\.\d+)?"
RANGE = rf"{NUM}(?:\s*(?:-|–|to)\s*{NUM})?"
_SPEED = r"tokens/s|tok/s|docs/s|shingles/s|[KMGT]i?B/s|[GT]FLOP/s|steps/s"
_MEMORY = r"[KMGT]i?B"
_TIME = r"ns|µs|us|ms|s/step|s|secs?|seconds?|mins?|minutes?|h|hours?"
UNIT = rf"(?:{_SPEED}|{_MEMORY}|{_TIME})"
_END = r"(?![\w+=(])"
FIGURE = re.compile(rf"(?<![\w.])(?<![A-Za-z]-){RANGE}\s*(?:{UNIT}{_END}|%\s*MFU\b|[x×]\s+(?:faster|slower)\b)")
HEADER_UNIT = re.compile(rf"(?<![\w/])(?:{UNIT}|%\s*MFU)(?![\w/])")
BARE_NUMBER = re.compile(rf"^\**{RANGE}\**$")
RESULTS_FILE = re.compile(r"benchmarks/(?:results/)?[\w.-]+\.json")
MD_REGION = re.compile(r"<!-- figures:[\w.-]+ -->.*?<!-- /figures -->", re.S)
GIN_REGION = re.compile(r"# figures:[\w.-]+\n.*?# /figures", re.S)

# (page, figure as FIGURE matches it) -> why it is not a measurement of this code.
NOT_MEASURED: dict[tuple[str, str], str] = {
    ("README.md", "3 MB"): "the size limit for committed test data, a rule of the repository",
    ("docs/ablations.md", "120 s"): "the sweep lease's default TTL (a setting)",
    ("docs/reliability.md", "~30 s"): "Cloud TPU's preemption notice (vendor documentation)",
    ("docs/reliability.md", "2 s"): "checkpoint_restore.first_wait_s default (a setting)",
    ("docs/reliability.md", "60 s"): "checkpoint_restore.max_wait_s default (a setting)",
    ("docs/reliability.md", "16 MiB"): "reader.MAX_LINE_BYTES (a constant of the code)",
    ("docs/scale_out.md", "16 GiB"): "TPU v3 HBM per core (hardware)",
    ("docs/scale_out.md", "32 GiB"): "TPU v4 HBM per chip (hardware)",
    ("docs/training.md", "2 MiB"): "the x86 huge page size (hardware)",
    ("docs/interop.md", "5 GiB"): "--max_shard_gb default (a setting)",
    ("docs/evaluation.md", "0.56 TB"): "280B params x 2 bytes (arithmetic)",
    ("docs/evaluation.md", "~3.9 TB"): "280B params x 14 bytes of train state (arithmetic)",
    ("docs/interop.md", "~320 GiB"): "80 x 16384 x 65536 x 4 bytes: the 280B's MLP kernels in fp32 (arithmetic)",
    ("docs/decisions/beam_components.md", "0.2 GB"): "10^6 edges x ~200 bytes (an estimate the page says is one)",
}


def blank_regions(page: str, text: str) -> str:
    """`text` with its generated regions blanked (line count kept)."""
    region = GIN_REGION if page.endswith(".gin") else MD_REGION
    return region.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _paragraphs(lines: list[str]) -> list[tuple[int, int]]:
    """[start, end) line ranges of the runs of non-blank lines."""
    out, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            out.append((start, i))
            start = None
    return out


def _table_figures(rows: list[str]) -> list[tuple[int, int, str]]:
    """(row index, its offset in the row, cell) for the bare numbers in columns whose header names a unit."""
    def cells(row: str) -> list[str]:
        return [c.strip() for c in row.strip().strip("|").split("|")]

    header = cells(rows[0])
    unit_cols = {j for j, h in enumerate(header) if HEADER_UNIT.search(h)}
    out = []
    for i, row in enumerate(rows[2:], start=2):
        for j, cell in enumerate(cells(row)):
            if j in unit_cols and BARE_NUMBER.match(cell):
                out.append((i, row.index(f" {cell} ") if f" {cell} " in row else 0, cell.strip("*")))
    return out


def _source_lines(page: str, text: str) -> list[str]:
    """The lines whose figures count: every line of a markdown page; the comment of each gin line
    (other lines blank)."""
    text = blank_regions(page, text)
    if not page.endswith(".gin"):
        return text.splitlines()
    return [line.split("#", 1)[1] if "#" in line else "" for line in text.splitlines()]


def figures(page: str, text: str) -> list[tuple[int, str, str]]:
    """(line number, figure, line) for every figure outside the generated regions."""
    lines = _source_lines(page, text)
    found = {(i + 1, m.start(), m.group(0).strip()) for i, line in enumerate(lines) for m in FIGURE.finditer(line)}
    for start, end in _paragraphs(lines):
        if lines[start].lstrip().startswith("|") and end - start > 2 and set(lines[start + 1]) <= set("|-: "):
            found |= {(start + i + 1, at, cell) for i, at, cell in _table_figures(lines[start:end])}
    return [(no, fig, lines[no - 1]) for no, _, fig in sorted(found)]


def _sourced(paragraph: str, repo: str) -> bool:
    return any(os.path.isfile(os.path.join(repo, m.group(0))) for m in RESULTS_FILE.finditer(paragraph))


def unsourced_figures(page: str, text: str, repo: str = REPO,
                      allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """`page:line: figure | line` for each figure that fails the rule above."""
    allowed = NOT_MEASURED if allowed is None else allowed
    lines = _source_lines(page, text)
    paragraphs = _paragraphs(lines)
    ok_lines: set[int] = set()
    for k, (start, end) in enumerate(paragraphs):
        context = lines[start:end]
        if lines[start].lstrip().startswith("|"):   # a table: with the paragraphs around it
            if k:
                context = lines[paragraphs[k - 1][0]:paragraphs[k - 1][1]] + context
            if k + 1 < len(paragraphs):
                context += lines[paragraphs[k + 1][0]:paragraphs[k + 1][1]]
        if _sourced("\n".join(context), repo):
            ok_lines.update(range(start + 1, end + 1))
    return [f"{page}:{no}: {fig} | {line.strip()[:110]}" for no, fig, line in figures(page, text)
            if no not in ok_lines and (page, fig) not in allowed]


def pages() -> list[str]:
    """The pages the rule covers: README.md, docs/**/*.md, gin_configs/**/README.md, every gin file."""
    import glob
    found = ["README.md"]
    found += sorted(glob.glob("docs/**/*.md", root_dir=REPO, recursive=True))
    found += sorted(glob.glob("gin_configs/**/README.md", root_dir=REPO, recursive=True))
    found += sorted(glob.glob("gin_configs/**/*.gin", root_dir=REPO, recursive=True))
    return found
