"""The repository stands alone: no code, test or benchmark reads a sibling directory of the clone,
and the committed fixtures stay small.

A researcher's clone has nothing beside it, so a path that climbs out of the repository (for example
to a `shared/` directory next to it) works on one machine and fails on every other. `.ci/run` proves
the same thing by running the test command in a copy with nothing beside it; this test names the
offending line without needing that copy.
"""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED_DIRS = ("tests", "gopher_jax", "data_tasks", "benchmarks")
# A line that names such a path only to check for it (a docs checker, this test's plants) carries
# this marker and is skipped.
MARKER = "stands-alone: " + "not a path"
SUFFIXES = (".py", ".gin", ".sh", ".cc", ".md", ".json", ".txt", ".cfg", ".toml", ".yaml", ".yml")
FIXTURE_BUDGET_BYTES = 3_000_000  # issue 25: at most 3 MB of committed fixtures

# A string literal that starts by climbing out of the directory a command runs in ("../x"), or an
# os.path.join(..., "..", "..", "<name>") chain that climbs out of the repository from a file inside it.
# Built from pieces so that this file does not match itself.
_UP = r"\.\." + "/"
_CLIMB = re.compile(r"""(["'`]|\s|^|=)""" + _UP + r"""[A-Za-z_]""")
_SHARED = re.compile(r"""["']\.\.["']\s*,\s*["']""" + "shared" + r"""["']""")


def _files():
    for top in CHECKED_DIRS:
        for root, dirs, names in os.walk(os.path.join(REPO, top)):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", ".pytest_cache")]
            for name in names:
                path = os.path.join(root, name)
                if name.endswith(SUFFIXES) and os.path.abspath(path) != os.path.abspath(__file__):
                    yield path


def sibling_references(path: str) -> list[str]:
    """Returns 'file:line: text' for each line of `path` that refers outside the repository.

    Code and configs resolve a relative path from the directory a command runs in (the repository
    root), so any "../name" in them leaves the clone. A document's relative link resolves from the
    document's own directory: it is flagged only when it climbs above the repository."""
    code = path.endswith((".py", ".sh", ".gin", ".cc"))
    found = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if MARKER in line:
                continue
            hit = bool(_SHARED.search(line)) or ("../" + "shared") in line
            for m in _CLIMB.finditer(line):
                rel = re.split(r"""[\s"'`)\]#]""", line[m.end() - 1 - len(_UP):])[0]
                target = os.path.normpath(os.path.join(os.path.dirname(path), rel))
                hit = hit or code or not target.startswith(REPO + os.sep)
            if hit:
                found.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()[:160]}")
    return found


def test_nothing_refers_to_a_sibling_directory():
    found = [hit for path in _files() for hit in sibling_references(path)]
    assert not found, ("these lines read outside the repository (a clone has nothing beside it; commit a "
                       "small fixture under tests/fixtures/ with its source in SOURCES.md, or take the path "
                       "as a flag):\n" + "\n".join(found))


def test_the_check_catches_a_sibling_path(tmp_path):
    """The check itself can fail: a planted sibling path is found, an in-repository one is not."""
    bad = tmp_path / "bad.py"
    up = ".." + "/"
    bad.write_text('DATA = "' + up + 'shared/corpus/c4.jsonl"\n'
                   'OTHER = os.path.join(HERE, "..", "..", "' + "shared" + '", "data")\n'
                   'FINE = os.path.join(HERE, "fixtures", "c4.jsonl")\n'
                   'CHECKED = "' + up + 'shared"  # ' + MARKER + '\n')
    hits = sibling_references(str(bad))
    assert [h.split(":")[1] for h in hits] == ["1", "2"]


def test_fixtures_are_small_and_sourced():
    root = os.path.join(REPO, "tests", "fixtures")
    sizes = {}
    for r, _, names in os.walk(root):
        for name in names:
            if "__pycache__" not in r:
                sizes[os.path.relpath(os.path.join(r, name), root)] = os.path.getsize(os.path.join(r, name))
    total = sum(sizes.values())
    assert total <= FIXTURE_BUDGET_BYTES, f"tests/fixtures holds {total:,} bytes, over the {FIXTURE_BUDGET_BYTES:,} budget"
    with open(os.path.join(root, "SOURCES.md"), encoding="utf-8") as f:
        sources = f.read()
    data_dirs = {p.split(os.sep)[0] for p in sizes if os.sep in p}
    for d in data_dirs:
        names = sorted(os.path.basename(p) for p in sizes if p.startswith(d + os.sep))
        unlisted = [n for n in names if n.split(".")[0] not in sources and not _listed_as_pattern(n, sources)]
        assert not unlisted, f"tests/fixtures/{d}: {unlisted} not named in tests/fixtures/SOURCES.md"


def _listed_as_pattern(name: str, sources: str) -> bool:
    """True when SOURCES.md names the file through a brace pattern such as pg{11,84}.txt."""
    stem = name.split(".")[0]
    for m in re.finditer(r"([A-Za-z_]*)\{([^}]*)\}", sources):
        prefix, options = m.group(1), m.group(2).split(",")
        if any(stem == prefix + o.strip() for o in options):
            return True
    return False
