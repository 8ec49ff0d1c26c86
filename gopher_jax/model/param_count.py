"""Parameter shapes and counts of a `ModelConfig`, from `jax.eval_shape` (no memory allocated)."""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import EMBEDDING_PARAMS, Decoder


@dataclasses.dataclass(frozen=True)
class ParamEntry:
    """One parameter array: its path, shape, dtype and logical axis names."""

    path: str
    shape: tuple[int, ...]
    dtype: str
    axes: tuple[str | None, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def abstract_variables(config: ModelConfig, length: int = 8):
    """Returns the boxed (logically partitioned) ShapeDtypeStruct tree of Decoder(config).init."""
    tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return jax.eval_shape(lambda: Decoder(config).init(jax.random.key(0), jnp.zeros(tokens.shape, tokens.dtype)))


def param_entries(config: ModelConfig) -> list[ParamEntry]:
    """Returns every parameter of the model, in tree order, with its logical axes."""
    params = abstract_variables(config)["params"]
    leaves = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    out = []
    for path, leaf in leaves:
        names = tuple(leaf.names) if isinstance(leaf, nn.Partitioned) else (None,) * len(leaf.shape)
        value = leaf.value if isinstance(leaf, nn.Partitioned) else leaf
        key = "/".join(str(getattr(p, "key", p)) for p in path)
        out.append(ParamEntry(key, tuple(value.shape), str(value.dtype), names))
    return out


def count_params(config: ModelConfig) -> dict[str, int]:
    """Returns {'total', 'embedding', 'non_embedding', 'vocab_padding'} parameter counts.

    Embedding parameters are the token table, an untied output projection and a learned
    position table (Kaplan et al.'s N excludes them); the Transformer-XL projections are not.
    """
    entries = param_entries(config)
    total = sum(e.size for e in entries)
    embedding = sum(e.size for e in entries if e.path.split("/")[0] in EMBEDDING_PARAMS)
    tables = 1 if config.tie_embeddings else 2
    padding = tables * (config.padded_vocab_size - config.vocab_size) * config.d_model
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding, "vocab_padding": padding}
