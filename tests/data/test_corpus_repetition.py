"""Gopher repetition filter: every rule of Table A1 on both sides of its threshold.

Each rule is tested alone (the others' limits set to 1.0) at exactly its paper threshold (kept,
the rules are strict ">") and just above it (removed).
"""
import dataclasses
import json

import pytest

from gopher_jax.data.corpus.repetition import RepetitionConfig, check_repetition, measure

from tests.fixtures.paths import C4

DEFAULT = RepetitionConfig()


def only(rule: str) -> RepetitionConfig:
    """Returns the default config with every limit except `rule`'s disabled (1.0)."""
    off = {f.name: 1.0 for f in dataclasses.fields(RepetitionConfig) if f.name.startswith("max_duplicate_") and "ngram" not in f.name}
    cfg = dataclasses.replace(DEFAULT, **off,
                              max_top_ngram_char_fraction=tuple((n, 1.0) for n, _ in DEFAULT.max_top_ngram_char_fraction),
                              max_duplicate_ngram_char_fraction=tuple((n, 1.0) for n, _ in DEFAULT.max_duplicate_ngram_char_fraction))
    if rule.startswith("top_"):
        n = int(rule[4])
        return dataclasses.replace(cfg, max_top_ngram_char_fraction=tuple(
            (m, t if m != n else dict(DEFAULT.max_top_ngram_char_fraction)[n]) for m, t in cfg.max_top_ngram_char_fraction))
    if rule.startswith("duplicate_") and "gram" in rule:
        n = int(rule.split("_")[1].replace("gram", ""))
        return dataclasses.replace(cfg, max_duplicate_ngram_char_fraction=tuple(
            (m, t if m != n else dict(DEFAULT.max_duplicate_ngram_char_fraction)[n]) for m, t in cfg.max_duplicate_ngram_char_fraction))
    return dataclasses.replace(cfg, **{"max_" + rule: getattr(DEFAULT, "max_" + rule)})


def unique_words(count, offset=0):
    """Returns distinct 5-letter words."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(letters[((offset + i) // 26 ** k) % 26] for k in range(4)) + "q" for i in range(count)]


@pytest.mark.parametrize("dups,expected", [(3, None), (4, "duplicate_line_fraction")])
def test_duplicate_line_fraction(dups, expected):
    lines = [" ".join(unique_words(6, 10 * i)) for i in range(10 - dups)]
    lines += [lines[0]] * dups  # 10 lines, `dups` of them repeats
    text = "\n".join(lines)
    assert measure(text)["duplicate_line_fraction"] == dups / 10
    assert check_repetition(text, only("duplicate_line_fraction")) == expected


@pytest.mark.parametrize("dups,expected", [(3, None), (4, "duplicate_paragraph_fraction")])
def test_duplicate_paragraph_fraction(dups, expected):
    paras = [" ".join(unique_words(6, 10 * i)) for i in range(10 - dups)]
    paras += [paras[0]] * dups
    text = "\n\n".join(paras)
    assert check_repetition(text, only("duplicate_paragraph_fraction")) == expected


@pytest.mark.parametrize("sep,rule", [("\n", "duplicate_line_char_fraction"), ("\n\n", "duplicate_paragraph_char_fraction")])
@pytest.mark.parametrize("dup_chars,expected_ok", [(20, True), (21, False)])
def test_duplicate_char_fractions(sep, rule, dup_chars, expected_ok):
    # 100 characters of lines: one line of `dup_chars` twice, the rest in distinct 1-char lines.
    rep = "x" * dup_chars
    rest = [chr(0x4E00 + i) for i in range(100 - 2 * dup_chars)]
    text = sep.join([rep] + rest + [rep])
    assert measure(text)[rule] == dup_chars / 100
    assert check_repetition(text, only(rule)) == (None if expected_ok else rule)


@pytest.mark.parametrize("n,count_ok", [(2, 10), (3, 6), (4, 4)])
@pytest.mark.parametrize("extra", [0, 1])
def test_top_ngram_char_fraction(n, count_ok, extra):
    # 100 five-letter words: one n-gram repeated `count` times, every other word unique.
    count = count_ok + extra
    gram = unique_words(n, 5000)
    ws, fill = [], iter(unique_words(100))
    for _ in range(count):
        ws += gram + [next(fill)]
    ws += [next(fill) for _ in range(100 - len(ws))]
    rule = f"top_{n}gram_char_fraction"
    limit = dict(DEFAULT.max_top_ngram_char_fraction)[n]
    assert measure(" ".join(ws))[rule] == pytest.approx(count * 5 * n / 500)
    assert (measure(" ".join(ws))[rule] > limit) == bool(extra)
    assert check_repetition(" ".join(ws), only(rule)) == (rule if extra else None)


@pytest.mark.parametrize("n", [5, 6, 7, 8, 9, 10])
@pytest.mark.parametrize("extra", [0, 1])
def test_duplicate_ngram_char_fraction(n, extra):
    # 100 five-letter words with a block of m words occurring twice: m/100 duplicated.
    limit = dict(DEFAULT.max_duplicate_ngram_char_fraction)[n]
    m = round(limit * 100) + extra
    block = unique_words(m, 5000)
    ws = block + unique_words(100 - 2 * m) + block
    rule = f"duplicate_{n}gram_char_fraction"
    assert measure(" ".join(ws))[rule] == m / 100
    assert check_repetition(" ".join(ws), only(rule)) == (rule if extra else None)


def test_overlapping_duplicates_are_not_double_counted():
    ws = unique_words(10) * 3 + unique_words(70, 100)  # 3 copies: 20 of 100 words repeated
    assert measure(" ".join(ws))["duplicate_5gram_char_fraction"] == 0.2


def test_real_documents_and_a_doubled_one():
    with open(C4) as f:
        text = json.loads(f.readline())["text"]
    assert check_repetition(text) is None
    assert check_repetition(text + "\n\n" + text) == "duplicate_line_fraction"


def test_counting_the_first_copy_is_the_stricter_reading():
    ws = unique_words(10) * 2 + unique_words(80, 100)  # a 10-word block twice
    strict = RepetitionConfig(count_first_copy=True)
    assert measure(" ".join(ws))["duplicate_5gram_char_fraction"] == 0.1
    assert measure(" ".join(ws), strict)["duplicate_5gram_char_fraction"] == 0.2
    text = "\n".join(["same line"] * 2 + [f"line {w}" for w in unique_words(8)])
    assert measure(text)["duplicate_line_fraction"] == 0.1
    assert measure(text, strict)["duplicate_line_fraction"] == 0.2
