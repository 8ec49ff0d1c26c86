"""The data position records the mixture's component order; a reordered mixture on resume is refused by name,
and train.batch_ramp's larger batches continue the same row stream."""
import types

import numpy as np
import pytest

from gopher_jax.data.mixture_input import Component, MixtureBatches


class FakeStore:
    """A packed store of `rows` rows whose tokens name the row (enough for the iterator's bookkeeping)."""

    def __init__(self, rows, base):
        self.rows, self.base = rows, base
        self.meta = types.SimpleNamespace(rows=rows, seq_len=4, vocab_sha256="0" * 64)

    def read(self, rows):
        t = (self.base + np.asarray(rows)[:, None] + np.zeros((1, 4), np.int64)).astype(np.int32)
        return t, np.ones_like(t), None


def _mixture(order, batch=4):
    stores = {"web": (FakeStore(50, 1000), 0.7), "books": (FakeStore(30, 2000), 0.3)}
    return MixtureBatches([Component(n, stores[n][1], stores[n][0]) for n in order], global_batch=batch, seed=0)


def test_reordered_components_are_refused_naming_the_binding():
    first = _mixture(["web", "books"])
    next(first)
    state = first.get_state()
    assert state["order"] == ["web", "books"]
    with pytest.raises(ValueError, match=r"order was \['web', 'books'\], now \['books', 'web'\].*"
                                         r"register_massivetext_tasks.weights"):
        _mixture(["books", "web"]).set_state(state)
    same = _mixture(["web", "books"])
    same.set_state(state)  # the same order continues
    assert np.array_equal(next(same)["targets"], next(first)["targets"])


def test_a_larger_batch_continues_the_same_row_stream():
    """Batch 4 then 8 (a ramp) reads exactly the rows batch 4 x 3 would: the stream is addressed by row."""
    ramped, flat = _mixture(["web", "books"]), _mixture(["web", "books"])
    rows = [next(ramped)["targets"]]
    ramped.set_global_batch(8)
    rows.append(next(ramped)["targets"])
    assert np.array_equal(np.concatenate(rows), np.concatenate([next(flat)["targets"] for _ in range(3)]))
    with pytest.raises(ValueError, match="does not divide"):
        _mixture(["web"]).set_global_batch(0)
