"""Parameter counts against Gopher Table 1 / Chinchilla Table 4, and exact ablation deltas."""
import pytest

from gopher_jax import gin_utils
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.param_count import count_params

# Published sizes (Gopher Table 1; Chinchilla Table 4).
PAPER_SIZES = {
    "gopher_44m": 44e6,
    "gopher_117m": 117e6,
    "gopher_417m": 417e6,
    "gopher_1_4b": 1.4e9,
    "gopher_7_1b": 7.1e9,
    "gopher_280b": 280e9,
    "chinchilla_70b": 70e9,
}


def config_from(*gin_files, params=()):
    gin_utils.parse_gin(list(gin_files), list(params))
    return ModelConfig()


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_paper_config_counts_within_2_percent(name):
    cfg = config_from(f"gin_configs/models/{name}.gin")
    counts = count_params(cfg)
    assert counts["total"] == pytest.approx(PAPER_SIZES[name], rel=0.02)
    # Gopher Table 1 / Chinchilla Table 4 sizes: every row matches 13*L*d^2 + V*d within 1%.
    formula = 13 * cfg.num_layers * cfg.d_model**2 + cfg.vocab_size * cfg.d_model
    assert counts["total"] == pytest.approx(formula, rel=0.01)
    assert counts["vocab_padding"] == 0  # 32,000 is already a multiple of 128


def test_exact_count_of_gopher_44m():
    cfg = config_from("gin_configs/models/gopher_44m.gin")
    L, d, h, k, V, f = cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.vocab_size, cfg.ffw_dim
    per_layer = 4 * d * h * k + 2 * d * f + d * h * k + 2 * d  # q,k,v,o + mlp + rel proj + 2 norm scales
    expected = L * per_layer + V * d + d + 2 * h * k  # + final norm + global u, v
    assert count_params(cfg)["total"] == expected == 43_656_704


def test_tiny_is_a_few_million():
    cfg = config_from("gin_configs/models/tiny.gin")
    assert 2e6 < count_params(cfg)["total"] < 8e6


@pytest.mark.parametrize("ablation", ["swiglu", "parallel_block", "untied", "mqa", "gqa", "layernorm",
                                      "rope", "alibi", "learned"])
def test_ablation_changes_count_by_formula(ablation):
    base = config_from("gin_configs/models/gopher_44m.gin")
    cfg = config_from("gin_configs/models/gopher_44m.gin", f"gin_configs/ablations/{ablation}.gin")
    L, d, h, k, V, f = base.num_layers, base.d_model, base.num_heads, base.head_dim, base.vocab_size, base.ffw_dim
    rel_params = L * d * h * k + 2 * h * k  # Transformer-XL projections + global u, v
    expected_delta = {
        "swiglu": L * d * f,  # one more d x f matrix per layer
        "parallel_block": -L * d,  # one shared norm instead of two
        "untied": V * d,
        "mqa": -2 * L * d * (h - 1) * k,
        "gqa": -2 * L * d * (h - 4) * k,
        "layernorm": (2 * L + 1) * d,  # a shift per norm
        "rope": -rel_params,
        "alibi": -rel_params,
        "learned": -rel_params + base.max_len * d,
    }[ablation]
    assert count_params(cfg)["total"] - count_params(base)["total"] == expected_delta


def test_vocab_padding_keeps_user_vocab():
    cfg = ModelConfig(num_layers=1, d_model=64, num_heads=2, head_dim=32, vocab_size=1000)
    assert cfg.padded_vocab_size == 1024
    assert count_params(cfg)["vocab_padding"] == 24 * 64


def test_bad_kv_heads_names_the_fix():
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=16"):
        ModelConfig(num_kv_heads=3)
    with pytest.raises(ValueError, match="position='sinusoid'"):
        ModelConfig(position="sinusoid")
