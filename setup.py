"""gopher_jax: train and study Gopher/Chinchilla-family language models in JAX."""
from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "jax>=0.10",
    "flax>=0.12",
    "optax",
    "orbax-checkpoint",
    "seqio",
    "tensorflow-datasets",
    "sentencepiece",
    "gin-config",
    "numpy",
    "tqdm",
    "matplotlib",
    "scipy",  # scaling-law fits (L-BFGS-B, least squares)
    "tensorboard",
    # The embedded default corpus (real English text shipped inside the wheel).
    "gensim",
    # Corpus processing (gopher_jax/data/corpus): unicode repair and language identification.
    "ftfy",
    "pycld2",
    "langdetect",
]

EXTRAS = {
    # apache-beam: tests/data/test_corpus_beam.py checks Beam == in-process. Beam needs
    # protobuf<7, and sentencepiece 0.2.3's generated code needs protobuf>=7.36, so tests pin
    # sentencepiece<0.2.3 (0.2.2 works with protobuf 6 and 7; see docs/decisions/beam_protobuf.md).
    "test": ["pytest", "pytest-xdist", "hypothesis", "apache-beam", "google-crc32c", "sentencepiece<0.2.3"],
    # Ahead-of-time compilation for TPU topologies on a CPU host; keep in step with jax.
    "tpu": ["jax[tpu]"],
    "beam": ["apache-beam", "google-crc32c", "sentencepiece<0.2.3"],  # crc32c: TFRecord checksums
    "eval": ["lm-eval"],
}

setup(
    name="gopher_jax",
    version="0.1.0",
    description="Gopher/Chinchilla language models in JAX: models, training, data, eval, scaling laws.",
    packages=find_packages(include=["gopher_jax", "gopher_jax.*", "data_tasks", "data_tasks.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["gopher-jax=gopher_jax.cli:main"]},
)
