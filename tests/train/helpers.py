"""A small model, a deterministic synthetic batch and trainer builders for the training tests."""
import jax
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.sharded import build_trainer

MODEL = ModelConfig(num_layers=2, d_model=64, num_heads=4, head_dim=16, vocab_size=250, max_len=32)
OPTIMIZER = OptimizerConfig(peak_learning_rate=1e-2, warmup_steps=1)


def batch(batch_size=8, seq_len=16, seed=0, vocab=250):
    """A packed-looking batch: two documents per row, padding at the end of odd rows."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, vocab, (batch_size, seq_len + 1)).astype(np.int32)
    seg = np.ones((batch_size, seq_len), np.int32)
    seg[:, seq_len // 2:] = 2
    seg[1::2, -3:] = 0
    pos = np.where(seg == 1, np.arange(seq_len), np.arange(seq_len) - seq_len // 2).astype(np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_weights": (seg > 0).astype(np.float32),
            "segment_ids": seg, "positions": pos}


def trainer_on(mesh_config=None, devices=None, model=MODEL, microbatches=1, batch_size=8, steps=10):
    """Returns a ShardedTrainer for the small model on the given mesh (default: one device)."""
    devices = devices if devices is not None else jax.devices()[:1]
    mesh = build_mesh(mesh_config or MeshConfig(data=-1), devices)
    train_config = TrainConfig(steps=steps, batch_size=batch_size, seq_len=16, microbatches=microbatches)
    return build_trainer(model, OPTIMIZER, train_config, mesh, DEFAULT_RULES)


def one_step(trainer, the_batch):
    """Returns (new state as host numpy, metrics as floats) after one step from a fresh init."""
    with trainer.context():
        state = trainer.init()
        state, metrics = trainer.train_step(state, trainer.put_batch(the_batch))
    return jax.device_get(state), {k: float(v) for k, v in metrics.items()}
