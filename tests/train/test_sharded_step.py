"""Every parallelism mode computes the single-device step, and shards what the rules say."""
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gopher_jax.parallel.mesh import MeshConfig
from tests.train.helpers import batch, one_step, trainer_on

MESHES = {
    "data8": MeshConfig(data=8),
    "fsdp8": MeshConfig(data=1, fsdp=8),
    "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
    "data2_tensor4": MeshConfig(data=2, tensor=4),
}


@pytest.fixture(scope="module")
def reference():
    return one_step(trainer_on(), batch())


@pytest.mark.parametrize("name", sorted(MESHES))
def test_sharded_step_equals_single_device(name, reference):
    ref_state, ref_metrics = reference
    trainer = trainer_on(MESHES[name], jax.devices())
    state, metrics = one_step(trainer, batch())
    assert metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-5)
    assert metrics["grad_norm"] == pytest.approx(ref_metrics["grad_norm"], rel=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), state.params, ref_state.params)
    # The first Adam moment is the (clipped) gradient scaled by (1 - b1): gradients agree too.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7),
                 state.opt_state, ref_state.opt_state)


def _specs(trainer):
    return jax.tree.map(lambda s: s.spec, trainer.state_shardings.params)


def test_fsdp_shards_params_and_optimizer_state():
    trainer = trainer_on(MESHES["fsdp8"], jax.devices())
    specs = _specs(trainer)
    assert specs["embedder"]["embedding"] == P(None, "fsdp")
    assert specs["layers"]["attention"]["query"]["kernel"] == P(None, "fsdp", None, None)
    assert specs["layers"]["mlp"]["wo"]["kernel"] == P(None, None, "fsdp")
    assert specs["layers"]["attention_norm"]["scale"] == P(None, None)
    adam_mu = trainer.state_shardings.opt_state[1][0].mu  # chain(clip, adamw) -> adam state
    assert adam_mu["layers"]["mlp"]["wi"]["kernel"].spec == P(None, "fsdp", None)
    assert trainer.batch_sharding.spec == P("fsdp", None)
    assert trainer_on(MESHES["data2_fsdp2_tensor2"], jax.devices()).batch_sharding.spec == P(("data", "fsdp"), None)


def test_tensor_parallel_shards_heads_mlp_and_vocab():
    specs = _specs(trainer_on(MESHES["data2_tensor4"], jax.devices()))
    assert specs["layers"]["attention"]["query"]["kernel"] == P(None, None, "tensor", None)
    assert specs["layers"]["attention"]["out"]["kernel"] == P(None, "tensor", None, None)
    assert specs["layers"]["mlp"]["wi"]["kernel"] == P(None, None, "tensor")
    assert specs["embedder"]["embedding"] == P("tensor", None)


def test_data_parallel_replicates_params():
    specs = _specs(trainer_on(MESHES["data8"], jax.devices()))
    assert all(all(a is None for a in s) for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)))


def test_param_state_lives_sharded_on_devices():
    trainer = trainer_on(MESHES["fsdp8"], jax.devices())
    with trainer.context():
        state = trainer.init()
    kernel = state.params["layers"]["mlp"]["wi"]["kernel"]  # [L, d, f] with d over 8 devices
    shard_shapes = {s.data.shape for s in kernel.addressable_shards}
    assert shard_shapes == {(kernel.shape[0], kernel.shape[1] // 8, kernel.shape[2])}


def test_microbatches_give_the_same_update():
    full_state, full = one_step(trainer_on(MESHES["data2_fsdp2_tensor2"], jax.devices()), batch())
    micro_state, micro = one_step(
        trainer_on(MESHES["data2_fsdp2_tensor2"], jax.devices(), microbatches=2, batch_size=8), batch())
    assert micro["loss"] == pytest.approx(full["loss"], rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 micro_state.params, full_state.params)


def test_four_microbatches_single_device():
    full_state, _ = one_step(trainer_on(), batch())
    micro_state, _ = one_step(trainer_on(microbatches=4), batch())
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 micro_state.params, full_state.params)
