"""Generated document pairs with a known word n-gram Jaccard, for measuring dedup quality."""
from __future__ import annotations

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
