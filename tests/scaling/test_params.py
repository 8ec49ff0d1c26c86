"""Analytic parameter counts against the papers' 13*L*d^2 + V*d rule and architecture switches."""
import glob
import os

import pytest

from gopher_jax.gin_utils import GIN_CONFIGS
from gopher_jax.model.config import ModelConfig
from gopher_jax.scaling.model_zoo import load_config, nearest_config
from gopher_jax.scaling.params import count_params, param_breakdown

PAPER_MODELS = ["gopher_44m", "gopher_117m", "gopher_417m", "gopher_1_4b", "gopher_7_1b", "gopher_280b",
                "chinchilla_70b"]


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_models_match_13_l_d2(name):
    cfg = load_config(os.path.join(GIN_CONFIGS, "models", f"{name}.gin"))
    rule = 13 * cfg.num_layers * cfg.d_model ** 2 + cfg.vocab_size * cfg.d_model
    assert count_params(cfg) == pytest.approx(rule, rel=0.01)


def test_published_sizes():
    counts = {os.path.basename(g)[:-4]: n for g, n in
              ((g, count_params(load_config(g))) for g in glob.glob(os.path.join(GIN_CONFIGS, "models", "*.gin")))}
    assert counts["gopher_280b"] / 1e9 == pytest.approx(279.7, abs=0.05)
    assert counts["chinchilla_70b"] / 1e9 == pytest.approx(70.1, abs=0.05)
    assert counts["gopher_44m"] / 1e6 == pytest.approx(43.7, abs=0.05)


def test_switches_change_counts_as_expected():
    base = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=256, max_len=64)
    d, L = 64, 2
    assert count_params(base.replace(tie_embeddings=False)) - count_params(base) == 256 * d
    assert count_params(base.replace(mlp="swiglu")) - count_params(base) == L * d * 4 * d
    # MQA: K and V shrink from 4 heads to 1 (2 * d * 3 * 16 fewer per layer)
    assert count_params(base) - count_params(base.replace(num_kv_heads=1)) == L * 2 * d * 3 * 16
    rope = base.replace(position="rope")
    assert param_breakdown(rope)["relative"] == 0
    assert param_breakdown(base)["relative"] == L * d * 64 + 2 * 64
    assert param_breakdown(base.replace(position="learned"))["positions"] == 64 * d
    assert count_params(base, embeddings=False) == count_params(base) - 256 * d


def test_nearest_config():
    near = nearest_config(67e9)
    assert near["gin_file"] == "gin_configs/models/chinchilla_70b.gin"
    assert nearest_config(5e6)["gin_file"] == "gin_configs/models/tiny.gin"


VARIANTS = {"relative": {}, "rope": dict(position="rope"), "alibi": dict(position="alibi"),
            "learned": dict(position="learned"), "swiglu": dict(mlp="swiglu"), "gqa": dict(num_kv_heads=2),
            "mqa": dict(num_kv_heads=1), "untied": dict(tie_embeddings=False), "layernorm": dict(norm="layernorm"),
            "bias": dict(use_bias=True), "parallel": dict(block="parallel"), "d_ff": dict(d_ff=100),
            "all": dict(use_bias=True, tie_embeddings=False, norm="layernorm", mlp="swiglu", num_kv_heads=2)}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_analytic_count_equals_the_flax_model(name):
    import jax
    import jax.numpy as jnp

    from gopher_jax.model.decoder import Decoder

    cfg = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=300, max_len=32,
                      **VARIANTS[name])
    shapes = jax.eval_shape(lambda: Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))
    assert count_params(cfg) == sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))
