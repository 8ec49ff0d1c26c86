"""FLOPs of a `ModelConfig`: Chinchilla's Appendix F count, the model FLOPs behind MFU, and 6*N*D.

A pure function of the config and the sequence length, used by MFU (gopher_jax/train/mfu.py: the
loop, metrics.jsonl, the benchmarks and `plan`), by `gopher-jax params` / `gopher-jax scaling
flops`, and by the IsoFLOP sweep generator. Counts, by name (`METHODS`):
  'chinchilla'    App. F as printed (below): the scaling-law yardstick;
  'model_causal'  the FLOPs the model must do, the numerator of MFU: App. F with each causal
                  T x T term over the T(T+1)/2 (query, key) pairs the mask keeps, and no FLOPs for
                  the embedding lookup (a gather; App. F counts a 2*T*V*d matmul). Recomputation
                  (remat) is not counted: it is hardware work, not model work (PaLM App. B);
  '6nd'           6 * all parameters (Chinchilla's approximation);
  'kaplan'        6 * non-embedding parameters + 6 * layers * T * d_attn (Kaplan Sec. 2.1).

Chinchilla App. F counts, per sequence of T tokens (forward pass):
  embeddings        2 * T * V * d
  attention/layer   QKV 2*3*T*d*(H*k); logits 2*T*T*(H*k); softmax 3*H*T*T;
                    reduction 2*T*T*(H*k); projection 2*T*(H*k)*d
  dense/layer       2 * T * 2 * d * f
  final logits      2 * T * d * V
and the backward pass as twice the forward. Beyond the paper's dense MHA/GELU model this counts:
  * MQA/GQA: the K and V projections shrink to kv_heads * k columns (logits do not change);
  * SwiGLU: three d x f matrices instead of two;
  * Transformer-XL relative positions: the per-layer projection of T sinusoids,
    2*T*d*(H*k), and the position logits (q+v).R^T, 2*T*T*(H*k).
Like the paper it ignores norms, activations, RoPE rotations and ALiBi biases; 'chinchilla' counts
the full T x T score matrix (the causal mask ignored), 'model_causal' the T(T+1)/2 kept pairs.
V is the padded vocabulary the hardware multiplies.
"""
from __future__ import annotations

from gopher_jax.model.config import ModelConfig
from gopher_jax.scaling import constants as K
from gopher_jax.scaling.params import count_params

METHODS = ("chinchilla", "model_causal", "6nd", "kaplan")
FORWARD_COUNTS = ("chinchilla", "model_causal")  # the counts forward_breakdown gives term by term


def forward_breakdown(cfg: ModelConfig, seq_len: int, method: str = "chinchilla") -> dict[str, float]:
    """Returns forward-pass FLOPs per sequence of `seq_len` tokens, by App. F term (layers summed).

    method='chinchilla' is App. F as printed; 'model_causal' counts each T x T term (logits,
    softmax, reduction, relative-position logits) over the T(T+1)/2 pairs a causal mask keeps and
    the embedding lookup as 0 (a gather)."""
    if seq_len <= 0:
        raise ValueError(f"seq_len={seq_len} must be a positive number of tokens")
    if method not in FORWARD_COUNTS:
        raise ValueError(f"forward FLOP count method={method!r} is not one of {FORWARD_COUNTS}")
    causal = method == "model_causal"
    t, d, v, layers = seq_len, cfg.d_model, cfg.padded_vocab_size, cfg.num_layers
    pairs = t * (t + 1) / 2 if causal else t * t  # (query, key) pairs scored per head
    hk, kvk = cfg.num_heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    mlp_mats = 3 if cfg.mlp == "swiglu" else 2
    per_layer = {
        "attention_qkv": 2 * t * d * (hk + 2 * kvk),
        "attention_logits": 2 * pairs * hk,
        "attention_softmax": K.SOFTMAX_FLOPS_PER_SCORE * cfg.num_heads * pairs,
        "attention_reduction": 2 * pairs * hk,
        "attention_projection": 2 * t * hk * d,
        "relative_position": (2 * t * d * hk + 2 * pairs * hk) if cfg.position == "relative" else 0,
        "dense": 2 * t * mlp_mats * d * cfg.ffw_dim,
    }
    out = {"embeddings": 0 if causal else 2 * t * v * d}
    out.update({k: layers * x for k, x in per_layer.items()})
    out["logits"] = 2 * t * d * v
    return {k: float(x) for k, x in out.items()}


def forward_flops(cfg: ModelConfig, seq_len: int, method: str = "chinchilla") -> float:
    """Returns forward FLOPs for one sequence of `seq_len` tokens (App. F, or 'model_causal')."""
    return sum(forward_breakdown(cfg, seq_len, method).values())


def flops_per_token(cfg: ModelConfig, seq_len: int, method: str = "chinchilla") -> float:
    """Returns training FLOPs (forward + backward) per token.

    method: 'chinchilla' (App. F, backward = 2x forward), 'model_causal' (the MFU count: App. F with
    causal T x T terms and the embedding as a gather, backward = 2x forward), '6nd' (6 * total
    parameters, Chinchilla's approximation), or 'kaplan' (6 * non-embedding parameters + 6 * layers *
    T * d_attn, Kaplan Sec. 2.1).
    """
    if method in FORWARD_COUNTS:
        return (1 + K.BACKWARD_FORWARD_RATIO) * forward_flops(cfg, seq_len, method) / seq_len
    if method == "6nd":
        return 6.0 * count_params(cfg)
    if method == "kaplan":
        d_attn = cfg.num_heads * cfg.head_dim
        return 6.0 * count_params(cfg, embeddings=False) + 6.0 * cfg.num_layers * seq_len * d_attn
    raise ValueError(f"FLOP counting method={method!r} is not one of {METHODS}")


def flops_per_run(cfg: ModelConfig, seq_len: int, tokens: float, method: str = "chinchilla") -> float:
    """Returns training FLOPs of a run over `tokens` tokens of `seq_len`-token sequences."""
    return flops_per_token(cfg, seq_len, method) * float(tokens)


def tokens_for_budget(cfg: ModelConfig, seq_len: int, flops: float, method: str = "chinchilla") -> float:
    """Returns how many training tokens a FLOP budget buys for this config."""
    return float(flops) / flops_per_token(cfg, seq_len, method)
