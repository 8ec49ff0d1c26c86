"""Analytic parameter counts of a `ModelConfig` (no model is built).

The model code's own count (`gopher-jax params`) is the authority; this closed form is what the
scaling laws need (total N for Chinchilla, non-embedding N for Kaplan). tests/scaling/test_params.py
checks it against the papers' 13*L*d^2 + V*d rule for every published size and against the Flax
model's own count for every architecture switch.
"""
from __future__ import annotations

from gopher_jax.model.config import ModelConfig


def param_breakdown(cfg: ModelConfig) -> dict[str, int]:
    """Returns parameter counts by part: embedding, positions, attention, relative, mlp, norms, bias, output."""
    d, hd, kvd = cfg.d_model, cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    ff, layers, vocab = cfg.ffw_dim, cfg.num_layers, cfg.padded_vocab_size
    mlp_mats = 3 if cfg.mlp == "swiglu" else 2
    norms_per_layer = 1 if cfg.block == "parallel" else 2
    # LayerNorm has a learned shift; RMSNorm only a scale unless biases are switched on everywhere.
    norm_size = d * (2 if (cfg.norm == "layernorm" or cfg.use_bias) else 1)
    out = {
        "embedding": vocab * d,
        "positions": cfg.max_len * d if cfg.position == "learned" else 0,
        "attention": layers * (d * hd + 2 * d * kvd + hd * d),
        # Transformer-XL: a d x (heads*head_dim) projection of the sinusoids per layer, plus the
        # u, v biases, which the model shares across layers.
        "relative": layers * d * hd + 2 * hd if cfg.position == "relative" else 0,
        "mlp": layers * mlp_mats * d * ff,
        "norms": (layers * norms_per_layer + 1) * norm_size,
        "bias": layers * (hd + 2 * kvd + d + (mlp_mats - 1) * ff + d) if cfg.use_bias else 0,
        "output": 0 if cfg.tie_embeddings else vocab * d + (vocab if cfg.use_bias else 0),
    }
    return out


def count_params(cfg: ModelConfig, *, embeddings: bool = True) -> int:
    """Returns the total parameter count, or without embedding/position/output tables (Kaplan's N)."""
    parts = param_breakdown(cfg)
    if not embeddings:
        for k in ("embedding", "positions", "output"):
            parts.pop(k)
    return int(sum(parts.values()))
