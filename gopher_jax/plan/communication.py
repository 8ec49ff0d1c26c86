"""Communication time of one train step, term by term, with the bandwidth each term assumes.

Every term is bytes moved per device / the bandwidth one device has for that pattern (plan/hardware.py
gives the per-link ICI and per-chip DCN figures and their sources). Assumed, and said in each term:
  * a ring collective (all-gather, reduce-scatter) over an ICI axis uses both directions of one
    torus dimension: 2 links' one-way bandwidth per chip, shared by the chip's devices (v3: 2 cores);
    over DCN: the chip's DCN bandwidth shared likewise;
  * a ring all-gather / reduce-scatter moves (n - 1) / n of the full array per device, an all-reduce
    twice that (reduce-scatter + all-gather);
  * a ppermute moves its buffer over one link in one direction; the pipeline's two ppermutes per slot
    (activations forward, gradients back) run in opposite directions at once on TPU (executor._in_order
    orders them on CPU only), so a slot pays one buffer;
  * nothing overlaps compute: plan adds these times to the compute time (an upper bound; XLA's async
    collectives hide part of the fsdp gathers in practice).
Tensor-parallel all-reduces inside a layer are not priced (they are part of each op on one chip's
neighbours; the compiled step's schedule is the place to read them: `gopher-jax compile`).

Terms:
  pipeline_ppermute   slots x one stage-input buffer [rows, seq, d_model] per device
  fsdp_gather_scatter per op the program runs, one all-gather of its stage's weights over `fsdp`
                      (F, R, I: 1; V: 1 + a reduce-scatter of its weight gradients; B: 2 + 1; W: 1 RS,
                      a W run in `w_parts` layer groups 1 / w_parts each)
  data_allreduce      the fp32 gradient shard all-reduced over `data` once per step
  interleaved_weights virtual stages whose layers are stored on another device (('layers',
                      'pipeline') stores contiguous blocks): their weights in, their gradients out
"""
from __future__ import annotations

import math

GATHERS = {"F": 1, "R": 1, "I": 1, "V": 1, "B": 2, "W": 0}  # all-gathers of the stage's weights per op
SCATTERS = {"F": 0, "R": 0, "I": 0, "V": 1, "B": 1, "W": 1}  # reduce-scatters of its weight gradients


def bandwidth(topology, over_dcn: bool, pattern: str) -> dict:
    """{"bytes_per_s", "assumed"}: what one device has for `pattern` ('ring' | 'ppermute')."""
    chip = topology.chip
    share = chip.aot_devices_per_chip
    if over_dcn:
        bw = chip.dcn_bytes_per_s / share
        return {"bytes_per_s": bw, "assumed": f"DCN {chip.dcn_bytes_per_s * 8 / 1e9:.0f} Gbit/s per chip / {share} "
                f"device(s) (Cloud TPU v5p documentation's per-chip figure, assumed for {chip.name})"}
    links = 2 if pattern == "ring" else 1
    bw = links * chip.ici_link_bytes_per_s / share
    return {"bytes_per_s": bw, "assumed": f"ICI {links} x {chip.ici_link_bytes_per_s / 1e9:.1f} GB/s one-way "
            f"link(s) / {share} device(s) ({chip.interconnect_source})"}


def _term(bytes_moved: float, bw: dict, what: str) -> dict:
    return {"bytes_per_device": float(bytes_moved), "seconds": bytes_moved / bw["bytes_per_s"] if bytes_moved else 0.0,
            "bandwidth_bytes_per_s": bw["bytes_per_s"], "bandwidth_assumed": bw["assumed"], "what": what}


def interleaved_moved_stages(stages: int, repeats: int) -> list[int]:
    """Per device, how many of its virtual stages' layers are stored on another device: storage is
    contiguous (device d holds layers d L/P .. (d+1) L/P - 1, i.e. virtual stages d R .. d R + R - 1),
    while virtual stage v runs on device v % P."""
    return [sum(v // repeats != d for v in range(d, stages * repeats, stages)) for d in range(stages)]


def step_communication(model, train, sizes: dict, dcn: dict, topology, layer_params: float, param_itemsize: int,
                       schedule=None) -> dict:
    """Returns {"terms": {name: term}, "seconds": total} for one step (module docstring).

    `sizes`: mesh axis sizes; `dcn`: the DCN part of each axis (MeshConfig.dcn_*); `layer_params`: one
    layer's parameter count; `schedule`: the pipeline's Schedule (None: not pipelined)."""
    item = 2 if model.dtype == "bfloat16" else 4
    t, f, data, pp = sizes["tensor"], sizes["fsdp"], sizes["data"], sizes["pipeline"]
    batch_shards = data * f
    rows = math.ceil(train.batch_size / train.microbatches / batch_shards)
    terms = {}
    if schedule is not None:
        buffer = rows * train.seq_len * model.d_model * item
        bw = bandwidth(topology, dcn["pipeline"] > 1, "ppermute")
        terms["pipeline_ppermute"] = _term(len(schedule.program) * buffer, bw,
                                           f"{len(schedule.program)} slots x one [{rows}, {train.seq_len}, "
                                           f"{model.d_model}] stage-input buffer ({buffer:,} B)")
    # fsdp: every pass over a stage's (or the whole stack's) layers gathers their weights
    stage_layers = model.num_layers / (pp * (schedule.repeats if schedule is not None else 1))
    stage_bytes = layer_params * stage_layers / t * param_itemsize
    if schedule is not None:
        ops = [op.kind for row in schedule.program for op in row[0]]  # device 0: the first stage's work
        gathers = sum(GATHERS[k] for k in ops)
        scatters = round(sum(SCATTERS[k] / (schedule.w_parts if k == "W" else 1) for k in ops), 6)
        how = f"{gathers} all-gathers + {scatters:g} reduce-scatters of a {stage_layers:g}-layer stage (device 0's ops)"
    else:
        per_mb = 3 if model.remat_policy == "full" else 2  # forward, backward (+ the recompute's)
        gathers, scatters = per_mb * train.microbatches, train.microbatches
        how = f"{gathers} all-gathers + {scatters} reduce-scatters of all {model.num_layers} layers"
    moved = (gathers + scatters) * (f - 1) / f * stage_bytes
    terms["fsdp_gather_scatter"] = _term(moved, bandwidth(topology, dcn["fsdp"] > 1, "ring"), how)
    local_grad_bytes = layer_params * model.num_layers / (pp * t * f) * 4  # fp32 gradient shard
    terms["data_allreduce"] = _term(2 * (data - 1) / data * local_grad_bytes,
                                    bandwidth(topology, dcn["data"] > 1, "ring"),
                                    f"fp32 gradient shard ({local_grad_bytes:,.0f} B) all-reduced over data={data}")
    if schedule is not None and schedule.repeats > 1:
        moved_stages = max(interleaved_moved_stages(pp, schedule.repeats))
        chunk = stage_bytes / f  # a virtual stage's weights as stored (fsdp- and tensor-sharded)
        bw = bandwidth(topology, dcn["pipeline"] > 1, "ppermute")
        terms["interleaved_weights"] = _term(2 * moved_stages * chunk, bw,
                                             f"{moved_stages} virtual stages' weights in and gradients out")
    return {"terms": terms, "seconds": sum(term["seconds"] for term in terms.values())}
