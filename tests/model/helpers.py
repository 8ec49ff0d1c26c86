"""Small configs and a forward helper shared by the model tests."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder

POSITIONS = ("relative", "rope", "alibi", "learned")


def small_config(**overrides) -> ModelConfig:
    """A 2-layer model small enough to run dozens of times in a test."""
    base = dict(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=97, max_len=32)
    base.update(overrides)
    return ModelConfig(**base)


def init_params(config: ModelConfig, length: int = 16, seed: int = 0):
    """Returns unboxed params; positional biases made non-zero so they matter in the tests."""
    tokens = jnp.zeros((1, length), jnp.int32)
    params = nn.meta.unbox(jax.jit(Decoder(config).init)(jax.random.key(seed), tokens))["params"]
    for name in ("content_bias", "position_bias"):
        if name in params:
            params[name] = jax.random.normal(jax.random.key(len(name)), params[name].shape, params[name].dtype)
    return params


@functools.partial(jax.jit, static_argnums=0)
def _forward(config, params, tokens, segment_ids, positions):
    return Decoder(config).apply({"params": params}, tokens, segment_ids, positions)


def forward(config, params, tokens, segment_ids=None, positions=None):
    """Logits of Decoder(config) for int tokens [B, T] (jitted: eager flax is slow)."""
    as_int = lambda a: None if a is None else jnp.asarray(a, jnp.int32)  # noqa: E731
    return _forward(config, params, as_int(tokens), as_int(segment_ids), as_int(positions))


def random_tokens(shape, vocab=97, seed=1):
    return jax.random.randint(jax.random.key(seed), shape, 0, vocab)
