"""Puts the pieces on a mesh: sharded init, the jitted (donating) train and eval steps, batches."""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.rules import batch_sharding
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.optimizer import learning_rate_schedule, make_optimizer
from gopher_jax.train.spikes import maybe_guard
from gopher_jax.train.state import TrainState, abstract_params, make_init_fn, state_shardings
from gopher_jax.train.step import make_eval_step, make_train_step


@dataclasses.dataclass
class ShardedTrainer:
    """Everything a training loop needs, compiled for one mesh and rules table."""

    mesh: jax.sharding.Mesh
    rules: tuple
    abstract_state: TrainState  # ShapeDtypeStructs of the state (for restore and AOT lowering)
    state_shardings: TrainState
    batch_sharding: jax.sharding.NamedSharding
    train_step: Callable  # (state, batch) -> (state, metrics); donates state
    eval_step: Callable  # (params, batch) -> (loss_sum, weight_sum)
    init: Callable  # () -> freshly initialised TrainState
    tx: object

    def put_batch(self, local_batch: dict) -> dict:
        """Returns global arrays from this process's numpy batch (each host passes its own rows)."""
        return {k: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(v))
                for k, v in local_batch.items()}

    def context(self):
        """The mesh + rules context every jitted call runs in (activation constraints need both)."""
        return _Context(self.mesh, self.rules)


class _Context:
    def __init__(self, mesh, rules):
        self._mesh_cm = jax.set_mesh(mesh)
        self._rules_cm = nn.logical_axis_rules(rules)

    def __enter__(self):
        self._mesh_cm.__enter__()
        self._rules_cm.__enter__()

    def __exit__(self, *exc):
        self._rules_cm.__exit__(*exc)
        return self._mesh_cm.__exit__(*exc)


def build_trainer(model_config: ModelConfig, opt_config: OptimizerConfig, train_config: TrainConfig,
                  mesh: jax.sharding.Mesh, rules, pipeline_config=None) -> ShardedTrainer:
    """Returns a ShardedTrainer; nothing is initialised until `init()` is called.

    With a `pipeline` mesh axis > 1 the train step runs the schedule of `pipeline_config`
    (default: the gin-configured `PipelineConfig`, gopher_jax/parallel/pipeline).
    """
    boxed = abstract_params(model_config, train_config.seq_len)
    tx = maybe_guard(make_optimizer(opt_config, train_config.steps, boxed), train_config)
    schedule = learning_rate_schedule(opt_config, train_config.steps)
    init_fn = make_init_fn(model_config, tx, train_config.seq_len)
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    state_sh = state_shardings(abstract, boxed, tx, mesh, rules)

    def init():
        # Straight into the shardings: the full model never exists on one device.
        return jax.jit(init_fn, out_shardings=state_sh)(jax.random.key(train_config.seed))

    b_sh = batch_sharding(mesh, rules)
    batch_sh = {k: b_sh for k in ("inputs", "targets", "loss_weights", "segment_ids", "positions")}
    pipeline = None
    if mesh.shape.get("pipeline", 1) > 1:
        from gopher_jax.parallel.pipeline import Pipeline, PipelineConfig
        pipeline = Pipeline(model_config, pipeline_config or PipelineConfig(), mesh.shape["pipeline"],
                            train_config.microbatches, opt_config.z_loss, train_config.seq_len)
    step = make_train_step(model_config, tx, microbatches=train_config.microbatches,
                           z_loss=opt_config.z_loss, schedule=schedule, pipeline=pipeline)
    train_step = jax.jit(step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                         donate_argnums=(0,))
    eval_step = jax.jit(make_eval_step(model_config), in_shardings=(state_sh.params, batch_sh))
    return ShardedTrainer(mesh=mesh, rules=tuple(rules), abstract_state=abstract, state_shardings=state_sh,
                          batch_sharding=b_sh,
                          train_step=train_step, eval_step=eval_step, init=init, tx=tx)
