"""FLOPs per step, the pipeline bubble and the predicted step time at a stated MFU."""
from __future__ import annotations

from gopher_jax.model.config import ModelConfig
from gopher_jax.plan.topology import Topology
from gopher_jax.scaling.flops import flops_per_token
from gopher_jax.train.config import TrainConfig

# Hardware FLOPs / model FLOPs by remat policy: "full" reruns the forward (fwd 1 + bwd 2 -> 1+1+2);
# the selective policies recompute only cheap element-wise work, counted here as none.
RECOMPUTE_FACTOR = {"none": 1.0, "full": 4 / 3, "dots": 1.0, "dots_no_batch": 1.0, "save_attn_mlp_out": 1.0}


def pipeline_efficiency(microbatches: int, stages: int, repeats: int = 1) -> float:
    """Returns R*MB / (R*MB + PP - 1): MB / (MB + PP - 1) for GPipe and 1F1B (MT-NLG §3: MB = 4 PP -> 81%,
    8 PP -> 90%), R = repeats for the circular schedule. The schedule tables of
    gopher_jax/parallel/pipeline/schedule.py have exactly this busy fraction (tests assert it)."""
    return repeats * microbatches / (repeats * microbatches + stages - 1)


def step_estimate(model: ModelConfig, train: TrainConfig, topology: Topology, stages: int, mfu: float,
                  pipeline=None) -> dict:
    """Returns model/hardware FLOPs per step and per device, the bubble, and predicted seconds per step.

    Predicted step time = model FLOPs / (chips x peak bf16 FLOP/s x MFU) / pipeline efficiency.
    `pipeline` (a PipelineConfig) sets the schedule when stages > 1: its microbatches per pass and, for
    `circular`, its repeats. A pipelined backward recomputes its stage's forward (executor.py): +1/3.
    """
    if not 0 < mfu <= 1:
        raise ValueError(f"mfu={mfu} must be in (0, 1], e.g. 0.4")
    tokens = train.batch_size * train.seq_len
    model_flops = flops_per_token(model, train.seq_len, method="chinchilla") * tokens
    factor = RECOMPUTE_FACTOR[model.remat_policy] + (1 / 3 if stages > 1 else 0.0)
    hw_flops = model_flops * factor
    microbatches, repeats = train.microbatches, 1
    if stages > 1 and pipeline is not None:
        microbatches = pipeline.microbatches or train.microbatches
        repeats = pipeline.repeats if pipeline.schedule == "circular" else 1
    eff = pipeline_efficiency(microbatches, stages, repeats)
    peak = topology.num_chips * topology.chip.peak_bf16_flops
    step_s = model_flops / (peak * mfu) / eff
    return {"tokens_per_step": tokens, "model_flops_per_step": model_flops, "hardware_flops_per_step": hw_flops,
            "flops_per_device": hw_flops / topology.num_devices, "pipeline_bubble": 1 - eff, "mfu": mfu,
            "peak_flops": peak, "predicted_step_s": step_s, "predicted_tokens_per_s": tokens / step_s}
