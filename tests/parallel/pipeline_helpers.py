"""A tiny 16-layer model, a pipeline rules table and trainer builders for the pipeline tests."""
import jax
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.pipeline import PipelineConfig
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.sharded import build_trainer
from tests.train.helpers import batch

MODEL = ModelConfig(num_layers=16, d_model=32, num_heads=2, head_dim=16, vocab_size=256, max_len=32)
OPTIMIZER = OptimizerConfig(peak_learning_rate=1e-2, warmup_steps=1)
# Each stage's layers stored on its own pipeline device (what the pipeline recipes use).
RULES = tuple(("layers", "pipeline") if k == "layers" else (k, v) for k, v in DEFAULT_RULES)
BATCH, SEQ = 32, 16


def the_batch(seed=0):
    return batch(BATCH, SEQ, seed=seed, vocab=256)


def trainer(mesh_config=None, *, schedule="1f1b", repeats=1, microbatches=1, pipeline_microbatches=0,
            model=MODEL, devices=None):
    devices = devices if devices is not None else (jax.devices() if mesh_config else jax.devices()[:1])
    mesh = build_mesh(mesh_config or MeshConfig(data=-1), devices)
    train_config = TrainConfig(steps=10, batch_size=BATCH, seq_len=SEQ, microbatches=microbatches)
    return build_trainer(model, OPTIMIZER, train_config, mesh, RULES,
                         PipelineConfig(schedule=schedule, repeats=repeats, microbatches=pipeline_microbatches))


# Unoptimised CPU code: the same numerics, compiles ~2x faster (the tests stay cheap on 2 cores).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def one_step(t, b):
    """(new state on the host, metrics as floats) after one step from a fresh init."""
    with t.context():
        state = t.init()
        batch = t.put_batch(b)
        state, metrics = t.train_step.lower(state, batch).compile(FAST_COMPILE)(state, batch)
    return jax.device_get(state), {k: float(v) for k, v in metrics.items()}


def max_rel_diff(a, b) -> float:
    """Largest |a - b| / max|b| over the leaves of two trees."""
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-30))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
