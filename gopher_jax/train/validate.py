"""Config validation before anything compiles: every mismatch between model, mesh, batch, data and
devices, reported at once, each naming the gin parameter, its value and a value that works.

A typo in a gin override should cost seconds, not a queue slot and a 20-minute compile that ends
in an XLA sharding error.
"""
from __future__ import annotations

import math

from gopher_jax.model import axes

# Which gin parameter sets the size of each logical axis that the rules may shard.
_AXIS_PARAMS = {
    axes.HEADS: ("ModelConfig.num_heads", lambda m: m.num_heads),
    axes.KV_HEADS: ("ModelConfig.num_kv_heads", lambda m: m.kv_heads),
    axes.MLP: ("ModelConfig.d_ff", lambda m: m.ffw_dim),
    axes.VOCAB: ("ModelConfig.vocab_pad_multiple", lambda m: m.padded_vocab_size),
    axes.EMBED: ("ModelConfig.d_model", lambda m: m.d_model),
}


class ConfigError(ValueError):
    """Raised with one line per problem found by `validate`."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _fix_name(name: str) -> str:
    return "train.batch_size" if name == "train.batch_size" else "that ramp batch"


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def mesh_sizes(mesh_config, num_devices: int, problems: list[str]) -> dict | None:
    """Returns {axis: size} including DCN factors, or None after appending why the mesh cannot be built."""
    from gopher_jax.parallel.mesh import MESH_AXES
    slices = math.prod(mesh_config.dcn_shape)
    if slices <= 0 or num_devices % slices:
        problems.append(f"MeshConfig.dcn_data={mesh_config.dcn_data} x MeshConfig.dcn_fsdp={mesh_config.dcn_fsdp} "
                        f"x MeshConfig.dcn_pipeline={mesh_config.dcn_pipeline} "
                        f"= {slices} slices does not divide the {num_devices} devices; use a divisor of "
                        f"{num_devices}, e.g. MeshConfig.dcn_data=1")
        return None
    per_slice = num_devices // slices
    try:
        ici = mesh_config.ici_shape(per_slice)
    except ValueError as e:
        fixed = [a for a in MESH_AXES if getattr(mesh_config, a) != -1]
        problems.append(f"mesh does not fit {per_slice} devices per slice: {e}. Valid example: "
                        f"MeshConfig.data=-1 with the other axes dividing {per_slice} (now "
                        + ", ".join(f"MeshConfig.{a}={getattr(mesh_config, a)}" for a in fixed) + ")")
        return None
    sizes = dict(zip(MESH_AXES, ici))
    sizes["data"] *= mesh_config.dcn_data
    sizes["fsdp"] *= mesh_config.dcn_fsdp
    sizes["pipeline"] *= mesh_config.dcn_pipeline
    return sizes


def validate(model_config, train_config, mesh_config, rules, *, num_devices: int, num_processes: int = 1,
             tokenizer_pieces: int | None = None) -> dict:
    """Returns the mesh axis sizes; raises ConfigError listing every problem (gin name, value, fix)."""
    problems: list[str] = []
    m, t = model_config, train_config

    # sequence length vs position encoding
    if m.position == "learned" and t.seq_len > m.max_len:
        problems.append(f"train.seq_len={t.seq_len} exceeds ModelConfig.max_len={m.max_len}, the size of the "
                        f"learned position table (ModelConfig.position='learned'); use train.seq_len={m.max_len} "
                        f"or ModelConfig.max_len={t.seq_len}")

    # vocabulary vs tokenizer
    if tokenizer_pieces is not None and tokenizer_pieces > m.vocab_size:
        problems.append(f"ModelConfig.vocab_size={m.vocab_size} is smaller than the tokenizer's {tokenizer_pieces} "
                        f"pieces (train.tokenizer={t.tokenizer or '<embedded>'!r}); use "
                        f"ModelConfig.vocab_size={tokenizer_pieces} or a smaller tokenizer")

    # batch vs processes (every batch of the ramp, train.batch_ramp, too)
    batches = [("train.batch_size", t.batch_size)] + [(f"train.batch_ramp batch at {at:,} tokens", b)
                                                      for at, b in t.batch_ramp]
    for name, batch in batches:
        if batch % num_processes:
            problems.append(f"{name}={batch} does not split over {num_processes} processes (hosts); "
                            f"use {_fix_name(name)}={_round_up(batch, num_processes)}")

    sizes = mesh_sizes(mesh_config, num_devices, problems)
    if sizes is not None:
        # batch vs data axes: each microbatch's rows are split over every axis the batch maps to
        rule = dict(rules)
        batch_axes = _as_tuple(rule.get(axes.BATCH))
        dp = math.prod(sizes[a] for a in batch_axes)
        for name, batch in batches:
            per_micro = batch // t.microbatches
            if per_micro % dp:
                names = " x ".join(f"MeshConfig.{a}={sizes[a]}" for a in batch_axes)
                problems.append(
                    f"{name}={batch} / train.microbatches={t.microbatches} = {per_micro} sequences "
                    f"per microbatch does not split over the {dp} data-parallel shards ({names}); use "
                    f"{_fix_name(name)}={_round_up(batch, dp * t.microbatches)}")

        # model dimensions vs the mesh axes the rules shard them over (heads vs tensor, ...)
        for axis, (param, size_of) in _AXIS_PARAMS.items():
            mesh_axes = _as_tuple(rule.get(axis))
            ways = math.prod(sizes[a] for a in mesh_axes)
            size = size_of(m)
            if ways > 1 and size % ways:
                over = " x ".join(f"MeshConfig.{a}={sizes[a]}" for a in mesh_axes)
                ok_ways = [d for d in _divisors(size) if num_devices % d == 0 and d > 1]
                alt = (f"MeshConfig.{mesh_axes[0]} in {ok_ways}" if len(mesh_axes) == 1 and ok_ways
                       else f"MeshConfig.{mesh_axes[0]}=1")
                problems.append(f"{param}={getattr(m, param.split('.')[1])} gives {size} along '{axis}', which "
                                f"does not split over {over}; use {param} with a multiple of {ways}, or {alt}")

        # layers vs pipeline stages
        if m.num_layers % sizes["pipeline"]:
            ok = [d for d in _divisors(m.num_layers) if num_devices % d == 0]
            problems.append(f"ModelConfig.num_layers={m.num_layers} does not split into MeshConfig.pipeline="
                            f"{sizes['pipeline']} stages; use MeshConfig.pipeline in {ok} or "
                            f"ModelConfig.num_layers={_round_up(m.num_layers, sizes['pipeline'])}")
        elif sizes["pipeline"] > 1:  # the schedule (gin `pipeline.*`) vs stages, microbatches and layers
            from gopher_jax.parallel.pipeline import PipelineConfig
            from gopher_jax.parallel.pipeline.schedule import check
            try:
                pc = PipelineConfig()
                check(pc.schedule, sizes["pipeline"], pc.microbatches or t.microbatches, pc.repeats,
                      num_layers=m.num_layers)
                if t.microbatches % (pc.microbatches or t.microbatches):
                    raise ValueError(f"train.microbatches={t.microbatches} is not a multiple of "
                                     f"pipeline.microbatches={pc.microbatches}")
            except ValueError as e:
                problems.append(str(e))

    if problems:
        raise ConfigError("invalid configuration (nothing was compiled):\n  - " + "\n  - ".join(problems))
    return sizes


def _as_tuple(v) -> tuple:
    if v is None:
        return ()
    return tuple(v) if isinstance(v, (tuple, list)) else (v,)
