"""A run workdir with a real orbax checkpoint of a small randomly initialised model (built in-test)."""
import os

import jax
import pytest

# 50 items of each eval set in its public release format (tests/fixtures/SOURCES.md).
from tests.fixtures.paths import EVAL as EVAL_DATA  # noqa: F401

GIN = """
ModelConfig.num_layers = 2
ModelConfig.d_model = 64
ModelConfig.num_heads = 4
ModelConfig.head_dim = 16
ModelConfig.vocab_size = 4096
ModelConfig.max_len = 64
train.steps = 10
train.batch_size = 8
train.seq_len = 64
"""


def write_run(workdir: str, step: int = 3) -> str:
    """Writes config.gin and checkpoints/<step> (init params, as training would save them)."""
    from gopher_jax import gin_utils
    import gopher_jax.train.loop  # noqa: F401 — registers the configurables
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.optimizer import make_optimizer
    from gopher_jax.train.state import abstract_params, make_init_fn

    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.gin")
    with open(path, "w") as f:
        f.write(GIN)
    gin_utils.parse_gin([path])
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    tx = make_optimizer(opt_cfg, train_cfg.steps, abstract_params(model_cfg, train_cfg.seq_len))
    state = jax.jit(make_init_fn(model_cfg, tx, train_cfg.seq_len))(jax.random.key(1))
    ckpt = Checkpointer(workdir, async_save=False)
    ckpt.save(step, state, {"batches_consumed": 0}, force=True)
    ckpt.close()
    return workdir


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    return write_run(str(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="session")
def loaded(run_dir):
    from gopher_jax.eval import checkpoint_loader
    return checkpoint_loader.load(run_dir)
