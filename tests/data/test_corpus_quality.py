"""Gopher quality filter: every rule on both sides of its threshold (Gopher Appendix A.1.1)."""
import pytest

from gopher_jax.data.corpus.quality import QualityConfig, check_quality, measure

FILLER = ("river stone window garden market letter summer winter mountain forest valley "
          "engine doctor teacher pencil bottle castle island harbor meadow").split()


def words(n, start=0):
    return [FILLER[(start + i) % len(FILLER)] for i in range(n)]


def doc(ws):
    return " ".join(ws)


def base(n=100):
    """A document that passes every rule: n words, two stop words, mean length ~5.6."""
    return ["the", "and"] + words(n - 2)


def test_a_plain_document_passes():
    assert check_quality(doc(base())) is None


@pytest.mark.parametrize("n,expected", [(49, "min_words"), (50, None)])
def test_min_words(n, expected):
    assert check_quality(doc(base(n))) == expected


@pytest.mark.parametrize("n,expected", [(100_000, None), (100_001, "max_words")])
def test_max_words(n, expected):
    assert check_quality(doc(base(n))) == expected


@pytest.mark.parametrize("short,expected", [(49, None), (50, "mean_word_length")])
def test_min_mean_word_length(short, expected):
    # "the", "and" + `short` 2-letter and (98 - short) 4-letter words: mean 3.0 at short=49.
    ws = ["the", "and"] + ["ab"] * short + ["abcd"] * (98 - short)
    assert measure(doc(ws))["mean_word_length"] == pytest.approx(3.0 if short == 49 else 2.98)
    assert check_quality(doc(ws)) == expected


@pytest.mark.parametrize("long_,expected", [(14, None), (15, "mean_word_length")])
def test_max_mean_word_length(long_, expected):
    ws = ["the", "and"] + ["a" * 11] * long_ + ["b" * 10] * (98 - long_)  # mean 10.0 at 14
    assert check_quality(doc(ws)) == expected


@pytest.mark.parametrize("k,expected", [(10, None), (11, "hash_ratio")])
def test_hash_ratio(k, expected):
    ws = base()
    ws[2:2 + k] = ["#" + w for w in ws[2:2 + k]]
    assert check_quality(doc(ws)) == expected


@pytest.mark.parametrize("k,expected", [(10, None), (11, "ellipsis_ratio")])
def test_ellipsis_ratio(k, expected):
    ws = base()
    ws[2:2 + k] = [w + ("..." if i % 2 else "…") for i, w in enumerate(ws[2:2 + k])]
    assert check_quality(doc(ws)) == expected


@pytest.mark.parametrize("k,expected", [(18, None), (19, "bullet_lines")])
def test_bullet_lines(k, expected):
    lines = [f"{'- ' if i < k else ''}the and " + doc(words(5, i)) for i in range(20)]  # k/20 bullets
    assert check_quality("\n".join(lines)) == expected


@pytest.mark.parametrize("k,expected", [(3, None), (4, "ellipsis_lines")])
def test_ellipsis_lines(k, expected):
    lines = ["the and " + doc(words(8, i)) + (" more..." if i < k else ".") for i in range(10)]
    assert check_quality("\n".join(lines)) == expected


@pytest.mark.parametrize("k,expected", [(20, None), (21, "alpha_words")])
def test_alpha_words(k, expected):
    ws = base()
    ws[2:2 + k] = ["12345"] * k
    assert check_quality(doc(ws)) == expected


@pytest.mark.parametrize("stops,expected", [(["the"] * 5, "stop_words"), (["the", "with"], None)])
def test_stop_words(stops, expected):
    assert check_quality(doc(stops + words(98))) == expected


def test_stop_words_ignore_case_and_punctuation():
    assert check_quality(doc(["The,", "AND."] + words(98))) is None


def test_thresholds_are_configurable():
    assert check_quality(doc(base(60)), QualityConfig(min_words=61)) == "min_words"


def test_alphabetic_means_any_script_not_digits_or_fractions():
    ws = base()
    ws[2:22] = ["café", "日本語", "½", "²", "12", "x1", "(a)", "--", "ß", "Ωmega"] * 2  # 6 of 10 alphabetic
    assert measure(doc(ws))["alpha_words_fraction"] == pytest.approx((100 - 8) / 100)
