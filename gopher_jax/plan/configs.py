"""Reads the gin-configured model, optimizer, train config, mesh and rules, as `gopher-jax train` would."""
from __future__ import annotations

from gopher_jax import gin_utils


def load(gin_files, gin_params):
    """Returns (ModelConfig, OptimizerConfig, TrainConfig, MeshConfig, rules) after parsing gin."""
    import gopher_jax.data.input_pipeline  # noqa: F401  (configurables named in run gin files)
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.train.config import OptimizerConfig, TrainConfig

    if not gin_files:
        raise ValueError("give a model, e.g. --gin_file=gin_configs/runs/pretrain.gin "
                         "--gin_file=gin_configs/models/gopher_280b.gin --gin_file=gin_configs/parallel/...")
    gin_utils.parse_gin(gin_files, gin_params)
    return ModelConfig(), OptimizerConfig(), TrainConfig(), MeshConfig(), sharding_rules()
