"""One transformer layer: sequential (Gopher) or parallel (Falcon/PaLM) attention + MLP."""
from __future__ import annotations

import flax.linen as nn
from jax.ad_checkpoint import checkpoint_name

from gopher_jax.model import axes
from gopher_jax.model.attention import Attention
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.mlp import Mlp
from gopher_jax.model.norms import Norm

RESIDUAL = (axes.BATCH, axes.LENGTH, axes.EMBED)


class Block(nn.Module):
    """Pre-norm residual layer. Returns (output, None) so it can be the body of `nn.scan`."""

    config: ModelConfig
    decode: bool = False  # KV-cache decoding (gopher_jax/decode.py); training leaves it False

    @nn.compact
    def __call__(self, x, segment_ids, positions, rel_embed, rel_biases):
        cfg = self.config
        x = nn.with_logical_constraint(x, RESIDUAL)
        attention = Attention(cfg, decode=self.decode, name="attention")
        mlp = Mlp(cfg, name="mlp")
        if cfg.block == "parallel":
            normed = Norm(cfg, name="norm")(x)
            attn_out = checkpoint_name(attention(normed, segment_ids, positions, rel_embed, rel_biases), "attn_out")
            mlp_out = checkpoint_name(mlp(normed), "mlp_out")
            x = x + attn_out + mlp_out
        else:
            normed = Norm(cfg, name="attention_norm")(x)
            x = x + checkpoint_name(attention(normed, segment_ids, positions, rel_embed, rel_biases), "attn_out")
            x = x + checkpoint_name(mlp(Norm(cfg, name="mlp_norm")(x)), "mlp_out")
        return nn.with_logical_constraint(x, RESIDUAL), None
