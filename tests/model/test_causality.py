"""Causality and packed-document isolation, for every position encoding and block type."""
import numpy as np
import pytest

from tests.model.helpers import POSITIONS, forward, init_params, random_tokens, small_config


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("block", ["sequential", "parallel"])
def test_future_tokens_never_change_past_logits(position, block):
    cfg = small_config(position=position, block=block)
    params = init_params(cfg)
    tokens = np.asarray(random_tokens((2, 16)))
    base = forward(cfg, params, tokens)
    for t in (0, 5, 14):
        changed = tokens.copy()
        changed[:, t + 1:] = (changed[:, t + 1:] + 7) % cfg.vocab_size
        out = forward(cfg, params, changed)
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-3)  # the change did propagate


@pytest.mark.parametrize("position", POSITIONS)
def test_packed_documents_never_see_each_other(position):
    cfg = small_config(position=position)
    params = init_params(cfg)
    tokens = np.asarray(random_tokens((1, 16)))
    segments = np.array([[1] * 6 + [2] * 7 + [0] * 3])
    doc_positions = np.array([list(range(6)) + list(range(7)) + list(range(3))])
    base = forward(cfg, params, tokens, segment_ids=segments, positions=doc_positions)
    other = tokens.copy()
    other[:, :6] = (other[:, :6] + 3) % cfg.vocab_size  # rewrite document 1 entirely
    out = forward(cfg, params, other, segment_ids=segments, positions=doc_positions)
    np.testing.assert_allclose(out[:, 6:13], base[:, 6:13], atol=1e-5)
    assert not np.allclose(out[:, :6], base[:, :6], atol=1e-3)
