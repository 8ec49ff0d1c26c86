"""The train state and its sharded initialisation (never materialised on one device)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder
from gopher_jax.parallel.rules import param_shardings


@flax.struct.dataclass
class TrainState:
    """step, params (in param_dtype), optimizer state, and an fp32 master copy when params are bf16."""

    step: jax.Array
    params: Any
    opt_state: Any
    master: Any = None  # Gopher: bf16 params, fp32 copy kept in the (sharded) optimizer state


def abstract_params(model_config: ModelConfig, seq_len: int):
    """Returns the boxed ShapeDtypeStruct tree of the model's params (logical names included)."""
    tokens = jnp.zeros((1, seq_len), jnp.int32)
    return jax.eval_shape(lambda: Decoder(model_config).init(jax.random.key(0), tokens))["params"]


def make_init_fn(model_config: ModelConfig, tx: optax.GradientTransformation, seq_len: int):
    """Returns rng -> TrainState; meant to run under jit with out_shardings."""

    def init(rng):
        tokens = jnp.zeros((1, seq_len), jnp.int32)
        params = nn.meta.unbox(Decoder(model_config).init(rng, tokens)["params"])
        master = None
        if jnp.dtype(model_config.param_dtype) != jnp.float32:
            master = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        opt_state = tx.init(master if master is not None else params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=opt_state, master=master)

    return init


def state_shardings(abstract_state: TrainState, boxed_params, tx, mesh, rules) -> TrainState:
    """Returns a TrainState of NamedShardings: params, master and Adam moments follow the rules."""
    p_sh = param_shardings(boxed_params, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_sh = optax.tree_map_params(
        tx, lambda _, sh: sh, abstract_state.opt_state, p_sh,
        transform_non_params=lambda _: replicated,
        is_leaf=lambda x: isinstance(x, NamedSharding))
    return TrainState(step=replicated, params=p_sh, opt_state=opt_sh,
                      master=None if abstract_state.master is None else p_sh)
