"""FLOPs per step, the pipeline bubble and the predicted step time at a stated MFU."""
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


def pipeline_estimate(model: ModelConfig, train: TrainConfig, stages: int, pipeline=None,
                      op_costs: str = "compiled") -> dict:
    """Returns the schedule's executed efficiency (`pipeline_efficiency`, the cost model of
    gopher_jax/parallel/pipeline/cost.py: slot cost = its slowest device) beside the formula
    (`pipeline_efficiency_formula`, 1 - schedule.expected_bubble), and where the op costs came from
    (`pipeline_op_costs`: "compiled" = each stage branch compiled on CPU and priced by XLA's cost
    analysis; "analytic" = unit costs, by request or when compiling fails)."""
    if stages == 1:
        return {"pipeline_schedule": None, "pipeline_efficiency": 1.0, "pipeline_efficiency_formula": 1.0,
                "pipeline_op_costs": None}
    from gopher_jax.parallel.pipeline import PipelineConfig, cost, compiled_op_costs, schedule

    pipeline = pipeline or PipelineConfig()
    microbatches = pipeline.microbatches or train.microbatches
    repeats = pipeline.repeats if schedule.uses_repeats(pipeline.schedule) else 1
    layers = model.num_layers // (stages * repeats)
    if op_costs == "compiled":
        priced = compiled_op_costs.op_costs(model, train.seq_len, layers, split=pipeline.schedule == "zero_bubble")
    elif op_costs == "analytic":
        priced = cost.analytic_costs(model.remat_policy)
    else:
        raise ValueError(f"pipeline op costs {op_costs!r} must be 'compiled' or 'analytic'")
    # zero_bubble's program is fitted to op costs: the ones the trainer would use (pipeline.program_costs)
    fitted = priced if pipeline.program_costs == "compiled" and priced.source == "compiled" else None
    table = schedule.make_schedule(pipeline.schedule, stages, microbatches, repeats, fitted,
                                   pipeline.max_pending_weight_grads)
    return {"pipeline_schedule": pipeline.schedule, "pipeline_efficiency": cost.executed_efficiency(table, priced),
            "pipeline_efficiency_formula": 1 - schedule.expected_bubble(pipeline.schedule, stages, microbatches, repeats),
            "pipeline_op_costs": priced.source}


def step_estimate(model: ModelConfig, train: TrainConfig, topology: Topology, stages: int, mfu: float,
                  pipeline=None, op_costs: str = "compiled") -> dict:
    """Returns model/hardware FLOPs per step and per device, the bubble, and predicted seconds per step.

    Predicted step time = model FLOPs / (chips x peak bf16 FLOP/s x MFU) / executed pipeline efficiency.
    `pipeline` (a PipelineConfig) sets the schedule when stages > 1 (`pipeline_estimate`; `op_costs`
    chooses its op costs). A pipelined backward recomputes its stage's forward (executor.py): +1/3.
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
    factor = RECOMPUTE_FACTOR[model.remat_policy] + (1 / 3 if stages > 1 else 0.0)
    hw_flops = executed * factor
    pipe = pipeline_estimate(model, train, stages, pipeline, op_costs)
    eff = pipe["pipeline_efficiency"]
    peak = topology.num_chips * topology.chip.peak_bf16_flops
    step_s = model_flops / (peak * mfu) / eff
    return {"tokens_per_step": tokens, "model_flops_per_step": model_flops, "hardware_flops_per_step": hw_flops,
            "flops_per_device": hw_flops / topology.num_devices, "pipeline_bubble": 1 - eff, **pipe, "mfu": mfu,
            "mfu_count": COUNT,
            "peak_flops": peak, "predicted_step_s": step_s, "predicted_tokens_per_s": tokens / step_s}
