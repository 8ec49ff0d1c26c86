"""TPU chip facts, in one place, with their sources.

Source for every row: Google Cloud TPU documentation, "TPU versions" / system-architecture pages
(cloud.google.com/tpu/docs/v2, /v3, /v4, /v5e, /v5p, /v6e; read 2025): HBM per chip, TensorCores per
chip and peak bf16 FLOP/s per chip. v2 (45 TFLOP/s, 16 GiB) and v3 (123 TFLOP/s, 32 GiB) chips hold
two TensorCores, each its own jax device with half the HBM (v3: 16 GiB per core, the figure the
Gopher recipe must fit). `aot_devices_per_chip` is how many jax devices a chip is, as on a real TPU VM and in
`jax.experimental.topologies` (libtpu 0.0.42, measured): v4 needs chip_config_name="megacore"
(`aot_options`) to show one device per chip, as a v4 VM does and as jax's mesh_utils requires
(without it v4:2x2x1 has 8 per-core devices); v5p ("v5:2x2x1") is one device per chip by default.
"""
from __future__ import annotations

import dataclasses

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # jax.experimental.topologies prefix, e.g. "v3"
    hbm_bytes: int  # per chip
    peak_bf16_flops: float  # per chip, dense bf16 matmul
    cores: int  # TensorCores per chip
    aot_devices_per_chip: int  # jax devices per chip (TPU VM and AOT topology description)
    aot_options: tuple = ()  # extra get_topology_desc keyword arguments, as (name, value) pairs

    @property
    def hbm_bytes_per_device(self) -> int:
        return self.hbm_bytes // self.aot_devices_per_chip

    @property
    def peak_flops_per_device(self) -> float:
        return self.peak_bf16_flops / self.aot_devices_per_chip


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("v2", 16 * GIB, 45e12, 2, 2),
    Chip("v3", 32 * GIB, 123e12, 2, 2),
    Chip("v4", 32 * GIB, 275e12, 2, 1, (("chip_config_name", "megacore"),)),
    Chip("v5e", 16 * GIB, 197e12, 1, 1),
    Chip("v5", 95 * GIB, 459e12, 2, 1),  # v5p; libtpu's topology prefix is "v5"
    Chip("v6e", 32 * GIB, 918e12, 1, 1),
)}
