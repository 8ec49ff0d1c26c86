"""The device mesh: axes `data`, `fsdp`, `tensor`, `pipeline`, within a slice (ICI) and across
slices (DCN), chosen in gin by `MeshConfig`."""
from __future__ import annotations

import dataclasses
import math

import gin
import jax
import numpy as np
from jax.experimental import mesh_utils

MESH_AXES = ("data", "fsdp", "tensor", "pipeline")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape. One ICI size may be -1: it takes all devices the others leave."""

    data: int = -1  # data parallel: batch split, parameters replicated
    fsdp: int = 1  # fully sharded data parallel (ZeRO-3): batch split, parameters/optimizer sharded
    tensor: int = 1  # Megatron tensor parallel: heads and MLP hidden split
    pipeline: int = 1  # pipeline stages (schedule: `pipeline.*`, gopher_jax/parallel/pipeline)
    dcn_data: int = 1  # data-parallel degree across slices (multi-slice over the data-center network)
    dcn_fsdp: int = 1  # fsdp degree across slices
    dcn_pipeline: int = 1  # pipeline stages across slices (Gopher pipelined across pods)

    @property
    def dcn_shape(self) -> tuple[int, ...]:
        """Per-axis (data, fsdp, tensor, pipeline) factors across slices; their product is the slice count."""
        return (self.dcn_data, self.dcn_fsdp, 1, self.dcn_pipeline)

    def ici_shape(self, num_devices: int) -> tuple[int, ...]:
        """Returns the per-slice (data, fsdp, tensor, pipeline) sizes for num_devices per slice."""
        sizes = [self.data, self.fsdp, self.tensor, self.pipeline]
        for name, s in zip(MESH_AXES, sizes):
            if s == 0 or s < -1:
                raise ValueError(f"MeshConfig.{name}={s}: use a positive size, or -1 for 'the rest'")
        if sizes.count(-1) > 1:
            raise ValueError(f"MeshConfig has more than one axis set to -1: {dict(zip(MESH_AXES, sizes))}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(f"{num_devices} devices cannot be split into a mesh whose other axes "
                                 f"multiply to {known} ({dict(zip(MESH_AXES, sizes))})")
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices per slice but "
                f"{num_devices} are available; set one MeshConfig axis to -1 or make the product {num_devices}")
        return tuple(sizes)


def build_mesh(config: MeshConfig | None = None, devices=None) -> jax.sharding.Mesh:
    """Returns a Mesh with axes (data, fsdp, tensor, pipeline) and Auto (GSPMD) axis types."""
    config = config or MeshConfig()
    devices = list(jax.devices() if devices is None else devices)
    dcn = config.dcn_shape
    num_slices = math.prod(dcn)
    if len(devices) % num_slices:
        raise ValueError(f"{len(devices)} devices do not split into {num_slices} slices (MeshConfig.dcn_*)")
    ici = config.ici_shape(len(devices) // num_slices)
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if num_slices > 1 and hasattr(devices[0], "slice_index"):
        # Devices of one slice stay together on the ICI axes; the DCN axes multiply across slices.
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices=devices, allow_split_physical_axes=True)
    elif num_slices > 1:
        # No slice information (CPU emulation): consecutive device groups play the slices.
        grid = np.asarray(devices).reshape(*dcn, *ici)
        n = len(MESH_AXES)
        grid = grid.transpose([i for pair in zip(range(n), range(n, 2 * n)) for i in pair])
        grid = grid.reshape([d * i for d, i in zip(dcn, ici)])
    else:
        try:
            grid = mesh_utils.create_device_mesh(ici, devices=devices, allow_split_physical_axes=True)
        except (ValueError, NotImplementedError):  # topology-unaware fallback (e.g. odd CPU counts)
            grid = np.asarray(devices).reshape(ici)
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=auto)


# Registers gin's `pipeline.*` (PipelineConfig) wherever MeshConfig is: parallel recipes bind both.
from gopher_jax.parallel.pipeline import config as _pipeline_config  # noqa: E402,F401
