"""Generated document pairs with a known word n-gram Jaccard, for measuring dedup quality."""
from __future__ import annotations

import fractions
import math

import numpy as np


def random_words(rng: np.random.Generator, count: int, vocab: int = 50_000) -> list[str]:
    """Returns `count` words drawn from a vocabulary of made-up lower-case words."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    ids = rng.integers(0, vocab, size=count)
    return ["".join(letters[(i // 26 ** np.arange(4)) % 26]) + "x" for i in ids]


def pair_with_jaccard(rng: np.random.Generator, target: float, words: int = 300, n: int = 13) -> tuple[str, str, float]:
    """Returns (text a, text b, exact n-gram Jaccard of a and b) with Jaccard close to target.

    b is a with its last k words replaced by fresh words: a and b each have words - n + 1
    n-grams, of which words - n + 1 - k are shared, so J = (m - k) / (m + k), m = words - n + 1.
    """
    m = words - n + 1
    k = int(round(m * (1 - target) / (1 + target)))
    a = random_words(rng, words)
    b = a[: words - k] + random_words(rng, k, vocab=10_000_000)
    return " ".join(a), " ".join(b), (m - k) / (m + k)


def pair_with_exact_jaccard(rng: np.random.Generator, target: float, min_words: int = 250,
                            n: int = 13) -> tuple[str, str, float]:
    """Returns (text a, text b, their n-gram Jaccard), which equals target exactly.

    With m n-grams per text and the last k words of b replaced, J = (m - k) / (m + k); for
    target = p / q (lowest terms) that is m = k (q + p) / (q - p), so m and k are the smallest
    multiples of (q + p, q - p) / gcd giving at least min_words words.
    """
    frac = fractions.Fraction(target).limit_denominator(1000)
    if not 0 < frac < 1:
        raise ValueError(f"target Jaccard {target} must be in (0, 1)")
    p, q = frac.numerator, frac.denominator
    g = math.gcd(q + p, q - p)
    m_unit, k_unit = (q + p) // g, (q - p) // g
    t = max(1, -(-(min_words - n + 1) // m_unit))
    m, k = m_unit * t, k_unit * t
    words = m + n - 1
    a = random_words(rng, words)
    b = a[: words - k] + random_words(rng, k, vocab=10_000_000)
    return " ".join(a), " ".join(b), (m - k) / (m + k)
