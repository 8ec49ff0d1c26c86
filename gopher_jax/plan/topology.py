"""Topology names: "v3:32x32" (one slice of chips) or "4xv3:32x32" (4 slices over DCN)."""
from __future__ import annotations

import dataclasses
import math

from gopher_jax.plan.hardware import CHIPS, Chip


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # the single-slice name libtpu understands, e.g. "v3:32x32"
    chip: Chip
    chip_dims: tuple[int, ...]
    num_slices: int = 1

    @property
    def chips_per_slice(self) -> int:
        return math.prod(self.chip_dims)

    @property
    def num_chips(self) -> int:
        return self.chips_per_slice * self.num_slices

    @property
    def devices_per_slice(self) -> int:
        return self.chips_per_slice * self.chip.aot_devices_per_chip

    @property
    def num_devices(self) -> int:
        return self.devices_per_slice * self.num_slices


def parse_topology(text: str) -> Topology:
    """Returns the Topology for "[Nx]gen:AxB[xC]"; raises ValueError naming the bad part."""
    slices, rest = 1, text.strip()
    head, sep, _ = rest.partition(":")
    if "x" in head and head.split("x", 1)[0].isdigit():
        count, rest = rest.split("x", 1)
        slices = int(count)
    gen, sep, dims = rest.partition(":")
    if not sep or gen not in CHIPS:
        raise ValueError(f"topology {text!r}: expected [SLICESx]GEN:AxB[xC] with GEN one of {sorted(CHIPS)}, "
                         f"e.g. v3:32x32, v4:2x2x1 or 4xv3:32x32")
    try:
        chip_dims = tuple(int(x) for x in dims.split("x"))
    except ValueError:
        raise ValueError(f"topology {text!r}: chip dimensions {dims!r} must look like 32x32 or 2x2x1") from None
    if not chip_dims or min(chip_dims) <= 0 or slices <= 0:
        raise ValueError(f"topology {text!r}: sizes must be positive")
    return Topology(name=rest, chip=CHIPS[gen], chip_dims=chip_dims, num_slices=slices)


def mesh_axis_sizes(mesh_config, topology: Topology) -> dict[str, int]:
    """Returns {data, fsdp, tensor, pipeline: size} for a MeshConfig over the whole topology (DCN included)."""
    from gopher_jax.parallel.mesh import MESH_AXES

    dcn = mesh_config.dcn_shape
    if dcn[0] * dcn[1] * dcn[3] != topology.num_slices:
        raise ValueError(f"MeshConfig.dcn_data={mesh_config.dcn_data} x dcn_fsdp={mesh_config.dcn_fsdp} x "
                         f"dcn_pipeline={mesh_config.dcn_pipeline} must equal "
                         f"the {topology.num_slices} slices of topology {topology.num_slices}x{topology.name}")
    ici = mesh_config.ici_shape(topology.devices_per_slice)
    return {a: i * d for a, i, d in zip(MESH_AXES, ici, dcn)}
