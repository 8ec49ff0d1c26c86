"""FLOPs per step, the pipeline's executed efficiency and the predicted step time (compute + communication)."""
from __future__ import annotations

from gopher_jax.model.config import ModelConfig
from gopher_jax.plan.topology import Topology
from gopher_jax.scaling.constants import BACKWARD_FORWARD_RATIO
from gopher_jax.scaling.flops import forward_breakdown
from gopher_jax.train.config import TrainConfig

# Hardware FLOPs / model FLOPs by remat policy: "full" reruns the forward (fwd 1 + bwd 2 -> 1+1+2);
# the selective policies recompute only cheap element-wise work, counted here as none.
RECOMPUTE_FACTOR = {"none": 1.0, "full": 4 / 3, "dots": 1.0, "dots_no_batch": 1.0, "save_attn_mlp_out": 1.0}


def pipeline_efficiency(microbatches: int, stages: int, repeats: int = 1) -> float:
    """The formula: R*MB / (R*MB + PP - 1): MB / (MB + PP - 1) for GPipe and 1F1B (MT-NLG §3: MB = 4 PP -> 81%,
    8 PP -> 90%), R = repeats for circular / interleaved 1F1B. The unit schedule tables of
    gopher_jax/parallel/pipeline/schedule.py have exactly this busy fraction (tests assert it); what the
    executor runs is priced by `pipeline_estimate`."""
    return repeats * microbatches / (repeats * microbatches + stages - 1)


def pipeline_schedule(model: ModelConfig, train: TrainConfig, stages: int, pipeline=None,
                      op_costs: str = "compiled"):
    """(Schedule, cost.OpCosts) the trainer would run for this config, or (None, None) with one stage.

    Op costs: "compiled" = each stage branch compiled on CPU and priced by XLA's cost analysis
    (compiled_op_costs.py; falls back to analytic when compiling fails), "analytic" = unit costs of the
    remat policy. The program is fitted to them as the trainer fits it (pipeline.program_costs)."""
    if stages == 1:
        return None, None
    from gopher_jax.parallel.pipeline import PipelineConfig, cost, schedule

    pipeline = pipeline or PipelineConfig()
    from gopher_jax.parallel.pipeline.config import stage_model, w_part_choices
    model = stage_model(model, pipeline)  # zero_bubble_remat: the remat policy the stages run
    microbatches = pipeline.microbatches or train.microbatches
    repeats = pipeline.repeats if schedule.uses_repeats(pipeline.schedule) else 1
    layers = model.num_layers // (stages * repeats)
    priced = _price(model, train.seq_len, layers, op_costs, split=pipeline.schedule.startswith("zero_bubble"))
    fitted = priced if pipeline.program_costs == "compiled" else cost.analytic_costs(model.remat_policy)
    table = schedule.make_schedule(pipeline.schedule, stages, microbatches, repeats, fitted,
                                   pipeline.max_pending_weight_grads, w_parts=w_part_choices(model, stages, pipeline),
                                   search_tries=pipeline.zero_bubble_search_tries)
    return table, priced


def pipeline_estimate(table, priced, unpipelined=None) -> dict:
    """The schedule's executed efficiency (`pipeline_efficiency`, cost.py: slot cost = slowest device,
    efficiency = (F + R + V) work / time) beside the formula (`pipeline_efficiency_formula`, 1 -
    schedule.expected_bubble), the placement, where the op costs came from, and the recompute factor
    (F + R + V) / (F + V') of a middle stage: the pipelined work per microbatch over the unpipelined
    step's, V' the backward under the model's own remat policy (`unpipelined`, the op costs of the model
    when the stages run another policy, pipeline.zero_bubble_remat; default `priced`), and
    `pipeline_w_parts`: the layer groups each zero-bubble W runs in (1: whole)."""
    if table is None:
        return {"pipeline_schedule": None, "pipeline_efficiency": 1.0, "pipeline_efficiency_formula": 1.0,
                "pipeline_op_costs": None, "pipeline_placement": None, "pipeline_recompute_factor": 1.0,
                "pipeline_w_parts": 1}
    from gopher_jax.parallel.pipeline import cost, schedule

    f, r, v = (priced(k, "mid") for k in ("F", "R", "V"))
    unpipelined = unpipelined or priced
    f0, v0 = unpipelined("F", "mid"), unpipelined("V", "mid")
    return {"pipeline_schedule": table.name, "pipeline_efficiency": cost.executed_efficiency(table, priced),
            "pipeline_efficiency_formula": 1 - schedule.expected_bubble(table.name, table.stages, table.microbatches,
                                                                        table.repeats),
            "pipeline_op_costs": priced.source, "pipeline_placement": table.placement,
            "pipeline_recompute_factor": (f + r + v) / (f0 + v0), "pipeline_w_parts": table.w_parts}


def _unpipelined_costs(model: ModelConfig, train: TrainConfig, stages: int, pipeline, op_costs: str, table):
    """Op costs of the model's own remat policy when the stages run another (pipeline.zero_bubble_remat),
    else None: the recompute factor's unpipelined backward (pipeline_estimate)."""
    from gopher_jax.parallel.pipeline.config import stage_model
    if table is None or pipeline is None or stage_model(model, pipeline) is model:
        return None
    return _price(model, train.seq_len, model.num_layers // (stages * table.repeats), op_costs)


def _price(model: ModelConfig, seq_len: int, layers: int, op_costs: str, split: bool = False):
    """Op costs of a stage of `layers` layers of `model`: "compiled" (compiled_op_costs.op_costs; analytic
    when compiling fails) or "analytic" (cost.analytic_costs of its remat policy)."""
    from gopher_jax.parallel.pipeline import compiled_op_costs, cost
    if op_costs == "compiled":
        return compiled_op_costs.op_costs(model, seq_len, layers, split=split)
    if op_costs == "analytic":
        return cost.analytic_costs(model.remat_policy)
    raise ValueError(f"pipeline op costs {op_costs!r} must be 'compiled' or 'analytic'")


def step_estimate(model: ModelConfig, train: TrainConfig, topology: Topology, stages: int, mfu: float,
                  pipeline=None, op_costs: str = "compiled", scheduled=None, communication=None) -> dict:
    """Returns model/hardware FLOPs per step and per device, the pipeline's efficiency, and the step time.

    predicted_step_s = compute_s + communication_s, where
      compute_s = model FLOPs / (chips x peak bf16 x MFU)       (the unpipelined step at the stated MFU)
                  x (F + R + V) / (F + V)                        (the pipelined backward's stage recompute)
                  / executed pipeline efficiency                 (the bubble, cost.py)
      communication_s = communication.step_communication's terms (no overlap with compute assumed).
    `scheduled` = pipeline_schedule's (Schedule, OpCosts) when already built; `communication` its dict.
    """
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu} must be in (0, 1], e.g. 0.4")
    tokens = train.batch_size * train.seq_len
    # Model FLOPs are MFU's count (train/mfu.py), so --mfu means what `gopher-jax train` prints. Hardware
    # FLOPs are what the step executes: App. F's full T x T scores (dense attention computes the masked
    # half too) with the embedding as a gather (no FLOPs), backward 2x forward, times recomputation.
    from gopher_jax.train.mfu import COUNT, model_flops_per_token
    model_flops = model_flops_per_token(model, train.seq_len) * tokens
    fwd = forward_breakdown(model, train.seq_len)
    executed = (1 + BACKWARD_FORWARD_RATIO) * (sum(fwd.values()) - fwd["embeddings"]) / train.seq_len * tokens
    table, priced = scheduled if scheduled is not None else pipeline_schedule(model, train, stages, pipeline, op_costs)
    pipe = pipeline_estimate(table, priced, _unpipelined_costs(model, train, stages, pipeline, op_costs, table))
    eff, recompute = pipe["pipeline_efficiency"], pipe["pipeline_recompute_factor"]
    hw_flops = executed * RECOMPUTE_FACTOR[model.remat_policy] * recompute
    peak = topology.num_chips * topology.chip.peak_bf16_flops
    unpipelined_s = model_flops / (peak * mfu)
    compute_s = unpipelined_s * recompute / eff
    comm_s = communication["seconds"] if communication is not None else 0.0
    step_s = compute_s + comm_s
    return {"tokens_per_step": tokens, "model_flops_per_step": model_flops, "hardware_flops_per_step": hw_flops,
            "flops_per_device": hw_flops / topology.num_devices, "pipeline_bubble": 1 - eff, **pipe, "mfu": mfu,
            "mfu_count": COUNT, "peak_flops": peak,
            # the MFU above, as a hardware-FLOPs utilisation of the unpipelined step (compute_s's assumption)
            "hardware_flops_utilisation": mfu * executed * RECOMPUTE_FACTOR[model.remat_policy] / model_flops,
            "compute_s": compute_s, "communication_s": comm_s,
            "communication": communication["terms"] if communication is not None else {},
            "predicted_step_s": step_s, "predicted_tokens_per_s": tokens / step_s}
