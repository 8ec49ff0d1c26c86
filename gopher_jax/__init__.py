"""gopher_jax: Gopher/Chinchilla-family language models in JAX."""

__version__ = "0.1.0"
