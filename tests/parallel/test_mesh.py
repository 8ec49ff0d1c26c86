"""Mesh construction from MeshConfig, including multi-slice (DCN) layouts and clear errors."""
import jax
import numpy as np
import pytest

from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import sharding_rules


def test_rest_axis_takes_remaining_devices():
    mesh = build_mesh(MeshConfig(data=-1, tensor=2))
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2, "pipeline": 1}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_two_slices_keep_ici_groups_together():
    mesh = build_mesh(MeshConfig(data=1, fsdp=4, dcn_data=2))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1, "pipeline": 1}
    ids = np.vectorize(lambda d: d.id)(mesh.devices)[:, :, 0, 0]
    # Each data index is one slice: its fsdp group is 4 consecutive devices (the fast ICI links).
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3] and sorted(ids[1].tolist()) == [4, 5, 6, 7]


@pytest.mark.parametrize("config, message", [
    (MeshConfig(data=3, fsdp=1), "needs 3 devices per slice but 8 are available"),
    (MeshConfig(data=-1, fsdp=-1), "more than one axis set to -1"),
    (MeshConfig(data=-1, tensor=3), "cannot be split"),
    (MeshConfig(data=0), "MeshConfig.data=0"),
])
def test_bad_mesh_shapes_name_the_fix(config, message):
    with pytest.raises(ValueError, match=message):
        build_mesh(config)


def test_rules_must_cover_every_axis_and_name_real_mesh_axes():
    with pytest.raises(ValueError, match="no entry for logical axes"):
        sharding_rules([("batch", "data")])
    from gopher_jax.parallel.rules import DEFAULT_RULES
    bad = [(k, "model" if k == "heads" else v) for k, v in DEFAULT_RULES]
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        sharding_rules(bad)


@pytest.mark.parametrize("name", ["data_parallel", "fsdp", "tensor_parallel", "fsdp_tensor", "cpu8"])
def test_parallel_gin_recipes_build_on_8_devices(name):
    from gopher_jax import gin_utils
    gin_utils.parse_gin([f"gin_configs/parallel/{name}.gin"])
    mesh = build_mesh(MeshConfig())
    assert mesh.size == 8
    assert len(sharding_rules()) == 11
