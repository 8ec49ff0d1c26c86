"""KV-cache decoding == full forward pass at every step, for every position encoding and MHA/GQA/MQA."""
import jax
import numpy as np
import pytest

from gopher_jax import decode
from tests.model.helpers import POSITIONS, forward, init_params, small_config

# Every encoding with MHA; GQA and MQA on the two encodings whose cache path differs most.
CASES = [(p, 0) for p in POSITIONS] + [("relative", 2), ("rope", 1)]


@pytest.mark.parametrize("position,kv_heads", CASES)
def test_cached_logits_match_full_forward(position, kv_heads):
    cfg = small_config(position=position, num_kv_heads=kv_heads, scan_layers=(kv_heads != 2))
    params = init_params(cfg)
    prompts = [[5, 9, 11, 3, 7], [13, 2]]  # different lengths: the second row is left-padded
    steps_logits, steps_tokens = [], []
    out = decode.sample_tokens(cfg, params, prompts, decode.SamplingConfig(max_new_tokens=5, temperature=0.0),
                               on_step=lambda lg, tk: (steps_logits.append(lg), steps_tokens.append(tk)))
    assert [len(o) for o in out] == [5, 5]
    tokens, segs, positions = decode.left_pad(prompts)
    full = np.concatenate([tokens, np.stack(steps_tokens, 1)], axis=1)
    n = full.shape[1]
    segs = np.concatenate([segs, np.ones((2, n - tokens.shape[1]), np.int32)], 1)
    pos = np.concatenate([positions, positions[:, -1:] + 1 + np.arange(n - tokens.shape[1])], 1)
    ref = np.asarray(forward(cfg, params, full, segment_ids=segs, positions=pos))
    width = tokens.shape[1]
    worst = 0.0
    for s, lg in enumerate(steps_logits):
        worst = max(worst, float(np.abs(lg - ref[:, width - 1 + s]).max()))
    assert worst < 1e-4, f"{position} kv={kv_heads}: KV-cache logits differ from the full forward by {worst}"


def test_top_k_and_top_p_filtering():
    import jax.numpy as jnp
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
    k2 = np.asarray(decode.filter_logits(logits, 1.0, 2, 1.0))
    assert np.isfinite(k2[0, :2]).all() and np.isinf(k2[0, 2:]).all()
    p = np.asarray(decode.filter_logits(logits, 1.0, 0, 0.8))  # 0.5 + 0.3 reaches 0.8
    assert np.isfinite(p[0, :2]).all() and np.isinf(p[0, 2:]).all()
    p = np.asarray(decode.filter_logits(logits, 1.0, 0, 0.81))
    assert np.isfinite(p[0, :3]).all() and np.isinf(p[0, 3])


def test_stop_and_sampling_reproducible():
    cfg = small_config(position="rope")
    params = init_params(cfg)
    sc = decode.SamplingConfig(max_new_tokens=6, temperature=1.0, top_k=5, seed=3)
    a = decode.sample_tokens(cfg, params, [[1, 2, 3]], sc)
    assert a == decode.sample_tokens(cfg, params, [[1, 2, 3]], sc)
    stopped = decode.sample_tokens(cfg, params, [[1, 2, 3]], sc, should_stop=lambda r, g: len(g) >= 2)
    assert stopped == [a[0][:2]]
    assert decode.cut_at_stop("hello\nUser: x", ["\nUser:"]) == "hello"


def _numpy_sinusoids(length, dim):
    inv_freq = 1.0 / 10_000.0 ** (np.arange(dim // 2) * 2.0 / dim)
    angles = np.arange(length)[:, None] * inv_freq
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


@pytest.mark.parametrize("scan", [True, False])
def test_relative_position_keys_are_projected_once_per_cache(scan):
    """The prompt call projects every distance's sinusoid through each layer's rel_proj into the
    cache; later tokens read them back instead of projecting again."""
    import jax.numpy as jnp

    from gopher_jax.model.decoder import init_cache

    cfg = small_config(position="relative", scan_layers=scan)
    params = init_params(cfg)
    length = 12
    tokens, segs, positions = decode.left_pad([[0, 5, 9, 11]])
    cache = init_cache(cfg, 1, length)
    _, cache = decode.decode_step(cfg, params, cache, jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(positions))
    layers = [("layers", i) for i in range(cfg.num_layers)] if scan else [(f"layers_{i}", None) for i in range(2)]
    for name, i in layers:
        got = np.asarray(cache[name]["attention"]["relative_keys"])
        proj = np.asarray(params[name]["attention"]["rel_proj"])
        got, proj = (got[i], proj[i]) if i is not None else (got, proj)
        # an independent numpy computation: sinusoids of distances 0..L-1 @ W_{k,R}
        np.testing.assert_allclose(got, np.einsum("re,ehd->rhd", _numpy_sinusoids(length, cfg.d_model), proj),
                                   atol=1e-5)

    def step(c):
        logits, c = decode.decode_step(cfg, params, c, jnp.asarray([[7]], jnp.int32), jnp.ones((1, 1), jnp.int32),
                                       jnp.asarray([[4]], jnp.int32))
        return np.asarray(logits[0, -1]), c

    copy = lambda c: jax.tree.map(jnp.array, c)  # noqa: E731 — decode_step donates its cache
    kept, after = step(copy(cache))
    ref = np.asarray(forward(cfg, params, np.asarray([[0, 5, 9, 11, 7]])))[0, -1]
    np.testing.assert_allclose(kept, ref, atol=1e-4)
    name = layers[0][0]  # and the step leaves them as they were
    np.testing.assert_array_equal(after[name]["attention"]["relative_keys"], cache[name]["attention"]["relative_keys"])
    # A step reads the cached keys: zeroing them changes its logits (a step that projected the
    # sinusoids again would not notice).
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, a: jnp.zeros_like(a) if "relative_keys" in jax.tree_util.keystr(path) else a, copy(cache))
    changed, _ = step(zeroed)
    assert np.abs(changed - kept).max() > 1e-3
