"""FLOP counts against hand counts (Chinchilla App. F), written out term by term."""
import pytest

from gopher_jax.model.config import ModelConfig
from gopher_jax.scaling.flops import flops_per_run, flops_per_token, forward_breakdown, forward_flops
from gopher_jax.scaling.params import count_params


def test_gopher_44m_hand_count():
    # gopher_44m: L=8, d=512, 16 heads x 32, ffw 2048, V=32000, Transformer-XL relative, T=2048.
    cfg = ModelConfig(num_layers=8, d_model=512, num_heads=16, head_dim=32, vocab_size=32000)
    T, d, V, L, hk, f, H = 2048, 512, 32000, 8, 512, 2048, 16
    embeddings = 2 * T * V * d                      # 67,108,864,000
    qkv = 2 * 3 * T * d * hk                        # 3,221,225,472
    logits_att = 2 * T * T * hk                     # 4,294,967,296
    softmax = 3 * H * T * T                         # 201,326,592
    reduction = 2 * T * T * hk                      # 4,294,967,296
    projection = 2 * T * hk * d                     # 1,073,741,824
    relative = 2 * T * d * hk + 2 * T * T * hk      # 1,073,741,824 + 4,294,967,296
    dense = 2 * T * 2 * d * f                       # 8,589,934,592
    final_logits = 2 * T * d * V                    # 67,108,864,000
    forward = embeddings + L * (qkv + logits_att + softmax + reduction + projection + relative + dense) + final_logits
    assert forward == 350_576_705_536  # 8 x 27,044,872,192 per layer + 2 x 67,108,864,000
    assert forward_flops(cfg, T) == forward
    assert flops_per_token(cfg, T) == 3 * forward / T
    assert flops_per_run(cfg, T, 1e9) == pytest.approx(3 * forward / T * 1e9, rel=1e-15)


def test_gqa_swiglu_rope_hand_count():
    # 2 layers, d=64, 4 query heads x 16 sharing 2 KV heads, SwiGLU width 96, vocab 200 padded to 256.
    cfg = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, num_kv_heads=2, d_ff=96,
                      vocab_size=200, vocab_pad_multiple=128, position="rope", mlp="swiglu", max_len=32)
    T = 32
    embeddings = 2 * 32 * 256 * 64                  # 1,048,576 (padded vocabulary)
    qkv = 2 * 32 * 64 * (64 + 2 * 32)               # 524,288: K and V have 2 heads x 16 columns each
    logits_att = 2 * 32 * 32 * 64                   # 131,072
    softmax = 3 * 4 * 32 * 32                       # 12,288
    reduction = 2 * 32 * 32 * 64                    # 131,072
    projection = 2 * 32 * 64 * 64                   # 262,144
    dense = 2 * 32 * 3 * 64 * 96                    # 1,179,648: three matrices
    final_logits = 2 * 32 * 64 * 256                # 1,048,576
    forward = embeddings + 2 * (qkv + logits_att + softmax + reduction + projection + dense) + final_logits
    assert forward == 6_578_176
    parts = forward_breakdown(cfg, T)
    assert parts["relative_position"] == 0
    assert parts["attention_qkv"] == 2 * qkv
    assert forward_flops(cfg, T) == forward


def test_methods_and_errors():
    cfg = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=256, max_len=64)
    assert flops_per_token(cfg, 64, "6nd") == 6 * count_params(cfg)
    kaplan = 6 * count_params(cfg, embeddings=False) + 6 * 2 * 64 * 64
    assert flops_per_token(cfg, 64, "kaplan") == kaplan
    with pytest.raises(ValueError, match="method='bogus'"):
        flops_per_token(cfg, 64, "bogus")
    with pytest.raises(ValueError, match="seq_len=0"):
        forward_flops(cfg, 0)


def test_chinchilla_count_close_to_6nd_for_large_models():
    # App. F: for large models the full count is within a few percent of 6ND (attention is small).
    cfg = ModelConfig(num_layers=80, d_model=8192, num_heads=64, head_dim=128, position="rope")
    ratio = flops_per_token(cfg, 2048) / flops_per_token(cfg, 2048, "6nd")
    assert 1.0 < ratio < 1.06


def test_gopher_44m_model_causal_hand_count():
    # The MFU count: causal attention scores only the T(T+1)/2 pairs the mask keeps, the embedding
    # lookup is a gather (0 FLOPs), everything else as App. F (the hand count above).
    cfg = ModelConfig(num_layers=8, d_model=512, num_heads=16, head_dim=32, vocab_size=32000)
    T, d, V, L, hk, f, H = 2048, 512, 32000, 8, 512, 2048, 16
    pairs = T * (T + 1) // 2                        # 2,098,176
    qkv = 2 * 3 * T * d * hk                        # 3,221,225,472
    logits_att = 2 * pairs * hk                     # 2,148,532,224
    softmax = 3 * H * pairs                         # 100,712,448
    reduction = 2 * pairs * hk                      # 2,148,532,224
    projection = 2 * T * hk * d                     # 1,073,741,824
    relative = 2 * T * d * hk + 2 * pairs * hk      # 1,073,741,824 + 2,148,532,224
    dense = 2 * T * 2 * d * f                       # 8,589,934,592
    final_logits = 2 * T * d * V                    # 67,108,864,000
    forward = L * (qkv + logits_att + softmax + reduction + projection + relative + dense) + final_logits
    assert forward == 231_148_486_656  # 8 x 20,504,952,832 per layer + 67,108,864,000
    assert forward_flops(cfg, T, "model_causal") == forward
    assert forward_breakdown(cfg, T, "model_causal")["embeddings"] == 0
    assert flops_per_token(cfg, T, "model_causal") == 3 * forward / T
    # App. F as printed counts 1.52x this at T=2048: the loop's old MFU was inflated by that much.
    assert flops_per_token(cfg, T) / flops_per_token(cfg, T, "model_causal") == pytest.approx(1.5167, abs=1e-4)
    with pytest.raises(ValueError, match="method='6nd'"):
        forward_breakdown(cfg, T, "6nd")
