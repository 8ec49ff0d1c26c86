"""A seeded random permutation of [0, n) evaluated one index at a time, in O(1) memory and time.

`permute(i, n, key)` is a bijection of [0, n) for every key: a 4-round Feistel network on the
smallest even-bit power-of-two domain >= n, with cycle-walking back into [0, n). It lets the
training input read "row number k of epoch e" without materialising an n-element permutation,
so resuming at any position costs the same and needs no shuffle buffer (Grain's index shuffle and
T5X-on-ArrayRecord use the same idea). Written here rather than imported because it is ~30 lines of
numpy, while Grain would add a dependency for this one function.
"""
from __future__ import annotations

import numpy as np

_ROUNDS = 4
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a fast, well-distributed 64-bit hash (uint64 in, uint64 out)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _feistel(x: np.ndarray, half_bits: int, key: int) -> np.ndarray:
    mask = np.uint64((1 << half_bits) - 1)
    left, right = x >> np.uint64(half_bits), x & mask
    for r in range(_ROUNDS):
        salt = np.uint64((key * 0x9E3779B97F4A7C15 + r * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        f = _mix(right ^ salt) & mask
        left, right = right, left ^ f
    return (left << np.uint64(half_bits)) | right


def permute(index, n: int, key: int) -> np.ndarray:
    """Returns the images of `index` (int or array, each in [0, n)) under the permutation `key` of [0, n)."""
    if n < 1:
        raise ValueError(f"cannot permute an empty range (n={n})")
    idx = np.asarray(index, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise ValueError(f"indices must be in [0, {n}); got min {idx.min()}, max {idx.max()}")
    if n == 1:
        return np.zeros_like(idx)
    half_bits = max(1, ((n - 1).bit_length() + 1) // 2)
    key = int(key) & 0xFFFFFFFFFFFFFFFF
    shape = idx.shape
    with np.errstate(over="ignore"):
        x = _feistel(idx.reshape(-1).astype(np.uint64), half_bits, key)
        # Cycle-walking: the domain is < 4n, so on average fewer than 4 passes.
        out = x >= np.uint64(n)
        while out.any():
            x[out] = _feistel(x[out], half_bits, key)
            out = x >= np.uint64(n)
    return x.astype(np.int64).reshape(shape)


def epoch_key(seed: int, stream: int, epoch: int) -> int:
    """Returns the permutation key of one (seed, stream, epoch): a new order every epoch."""
    with np.errstate(over="ignore"):
        k = _mix(np.uint64(seed & 0xFFFFFFFF) << np.uint64(32) | np.uint64(stream & 0xFFFFFFFF))
        return int(_mix(k ^ _mix(np.uint64(epoch))))
