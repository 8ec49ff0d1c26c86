"""Flax (linen) modules of the Gopher/Chinchilla decoder-only transformer family."""
from gopher_jax.model.config import ModelConfig  # noqa: F401
