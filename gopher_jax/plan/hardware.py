"""TPU chip facts, in one place, with their sources.

Source for every row: Google Cloud TPU documentation, "TPU versions" / system-architecture pages
(cloud.google.com/tpu/docs/v2, /v3, /v4, /v5e, /v5p, /v6e; read 2025): HBM per chip, TensorCores per
chip and peak bf16 FLOP/s per chip. v2 (45 TFLOP/s, 16 GiB) and v3 (123 TFLOP/s, 32 GiB) chips hold
two TensorCores, each its own jax device with half the HBM (v3: 16 GiB per core, the figure the
Gopher recipe must fit). `aot_devices_per_chip` is how many jax devices a chip is, as on a real TPU VM and in
`jax.experimental.topologies` (libtpu 0.0.42, measured): v4 needs chip_config_name="megacore"
(`aot_options`) to show one device per chip, as a v4 VM does and as jax's mesh_utils requires
(without it v4:2x2x1 has 8 per-core devices); v5p ("v5:2x2x1") is one device per chip by default.

Interconnect (`gopher-jax plan`'s communication terms; bytes/s, one direction, per link; per chip):
  v2, v3  4 ICI links of 496 / 656 Gbit/s: Norrie et al. 2021, "The Design Process for Google's
          Training Chips: TPUv2 and TPUv3", IEEE Micro 41(2), Table 1 (taken as one direction).
  v4, v5e, v6e  6 / 4 / 4 links of 4.5e10 / 4.5e10 / 9e10 B/s one way: Austin et al. 2025, "How to
          Scale Your Model", TPU chapter, hardware table (v4's Cloud page gives pod-level figures only).
  v5p     6 links; 1200 GB/s bidirectional ICI per chip and 50 Gbit/s DCN per chip: Cloud TPU v5p
          documentation (docs.cloud.google.com/tpu/docs/v5p-training, key specifications table).
  DCN     per chip: v5p's 50 Gbit/s, the one published per-chip figure, *assumed* for every generation.
"""
from __future__ import annotations

import dataclasses

GIB = 2**30
DCN_BYTES_PER_S_PER_CHIP = 50e9 / 8  # Cloud TPU v5p documentation; assumed for other generations
NORRIE = "Norrie et al. 2021 (IEEE Micro 41(2)) Table 1"
SCALING_BOOK = "Austin et al. 2025, How to Scale Your Model, TPU chapter"


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str  # jax.experimental.topologies prefix, e.g. "v3"
    hbm_bytes: int  # per chip
    peak_bf16_flops: float  # per chip, dense bf16 matmul
    cores: int  # TensorCores per chip
    aot_devices_per_chip: int  # jax devices per chip (TPU VM and AOT topology description)
    aot_options: tuple = ()  # extra get_topology_desc keyword arguments, as (name, value) pairs
    ici_links: int = 4  # ICI links per chip
    ici_link_bytes_per_s: float = 0.0  # one direction, per link (module docstring)
    dcn_bytes_per_s: float = DCN_BYTES_PER_S_PER_CHIP  # per chip (assumed: module docstring)
    interconnect_source: str = ""

    @property
    def hbm_bytes_per_device(self) -> int:
        return self.hbm_bytes // self.aot_devices_per_chip

    @property
    def peak_flops_per_device(self) -> float:
        return self.peak_bf16_flops / self.aot_devices_per_chip


CHIPS: dict[str, Chip] = {c.name: c for c in (
    Chip("v2", 16 * GIB, 45e12, 2, 2, (), 4, 496e9 / 8, interconnect_source=NORRIE),
    Chip("v3", 32 * GIB, 123e12, 2, 2, (), 4, 656e9 / 8, interconnect_source=NORRIE),
    Chip("v4", 32 * GIB, 275e12, 2, 1, (("chip_config_name", "megacore"),), 6, 4.5e10,
         interconnect_source=SCALING_BOOK),
    Chip("v5e", 16 * GIB, 197e12, 1, 1, (), 4, 4.5e10, interconnect_source=SCALING_BOOK),
    # v5p; libtpu's topology prefix is "v5"
    Chip("v5", 95 * GIB, 459e12, 2, 1, (), 6, 1200e9 / 12, interconnect_source="Cloud TPU v5p documentation"),
    Chip("v6e", 32 * GIB, 918e12, 1, 1, (), 4, 9e10, interconnect_source=SCALING_BOOK),
)}
