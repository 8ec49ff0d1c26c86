"""`PipelineConfig` (gin name `pipeline`): which schedule runs over the `pipeline` mesh axis.

The number of stages is `MeshConfig.pipeline`; with 1 stage nothing here is used and the train step
is the plain (non-pipelined) one. Example (gin):

    MeshConfig.pipeline = 4
    pipeline.schedule = '1f1b'          # 'gpipe' | '1f1b' | 'circular' | 'interleaved_1f1b' | 'zero_bubble'
    pipeline.repeats = 1                # circular / interleaved_1f1b: virtual stages per device (>= 2)
    pipeline.zero_bubble_remat = 'model'  # zero_bubble: 'none' = R keeps full residuals, I does not recompute
    train.microbatches = 16             # the pipeline's microbatches (>= stages for 1f1b/circular)
    sharding_rules.rules = [..., ('layers', 'pipeline'), ...]   # store each stage's layers on its device
"""
from __future__ import annotations

import dataclasses

import gin

from gopher_jax.ops import split_microbatches
from gopher_jax.parallel.pipeline import schedule as sched


@gin.configurable("pipeline")
@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    schedule: str = "1f1b"  # "gpipe" | "1f1b" | "circular" | "interleaved_1f1b" | "zero_bubble"
    repeats: int = 1  # circular, interleaved_1f1b: layer groups per device (virtual stages = stages x repeats)
    microbatches: int = 0  # microbatches per pipeline pass; 0 = train.microbatches (one pass per step).
    # train.microbatches = k x pipeline.microbatches accumulates gradients over k pipeline passes.
    max_pending_weight_grads: int = 1  # zero_bubble: weight-gradient sets (every Dense's input and output
    # cotangent of the stage, deferred_wgrad.py) a device keeps from I to W across slots. More fills more
    # bubble (zero_bubble.bubble_lower_bound) and costs a set each (`gopher-jax plan` prices them).
    max_w_parts: int = 10  # zero_bubble: a W may run in up to this many equal layer groups, each an op of its
    # own (zero_bubble.part_choices; the cheapest count is kept): more fill lockstep slots more evenly, but
    # trace more ops. 1 = every W whole (the program the 280B recipe was compiled with before issue 28's fill).
    zero_bubble_remat: str = "model"  # zero_bubble: the remat policy of the stage R linearises ("model" =
    # ModelConfig.remat_policy, or a policy name). 'none': R keeps one microbatch's full residuals (held
    # R -> I, one set per device), so I is the dx pullback alone, no in-layer recompute (I ~ W ~ F; with
    # remat 'full' I ~ 2 W). The stage then runs F + R + I + W = 4 forward units, not 5 (stage_model).
    # 'dots_no_batch' (gopher_280b_v3.gin) keeps only the weight matmuls' outputs: I / W ~1.2 at 280B.
    zero_bubble_search_tries: int = 0  # zero_bubble: rebuilds of the best fill program with each device's rule
    # re-drawn slot by slot (zero_bubble_search.py, seeded); 0 = off. ~3 ms a try at P = 4, MB = 12; at the
    # toy's compiled 'none' costs with two sets ~130 tries reach a third of 1F1B's bubble (no single rule does).
    program_costs: str = "compiled"  # op costs the program is fitted to (1f1b / interleaved: hoisted or
    # paired placement, placement.py; zero-bubble: zero_bubble.py): "compiled" = each stage branch compiled
    # and priced by XLA (compiled_op_costs.py, a few seconds); "analytic" = unit costs of the remat policy.

    def __post_init__(self):
        if self.schedule not in sched.SCHEDULES:
            raise ValueError(f"pipeline.schedule={self.schedule!r} is not one of {sched.SCHEDULES}")
        if self.program_costs not in ("compiled", "analytic"):
            raise ValueError(f"pipeline.program_costs={self.program_costs!r} must be 'compiled' or 'analytic'")
        if self.zero_bubble_remat != "model":
            from gopher_jax.model.config import REMAT_POLICIES
            if self.zero_bubble_remat not in REMAT_POLICIES:
                raise ValueError(f"pipeline.zero_bubble_remat={self.zero_bubble_remat!r} must be 'model' or one of "
                                 f"{REMAT_POLICIES}")
            if self.schedule != "zero_bubble":
                raise ValueError(f"pipeline.zero_bubble_remat={self.zero_bubble_remat!r} only applies to "
                                 f"pipeline.schedule='zero_bubble' (got {self.schedule!r}); set it to 'model' or "
                                 f"use the zero_bubble schedule")
        if self.max_w_parts < 1:
            raise ValueError(f"pipeline.max_w_parts={self.max_w_parts} must be >= 1")
        if self.zero_bubble_search_tries < 0:
            raise ValueError(f"pipeline.zero_bubble_search_tries={self.zero_bubble_search_tries} must be >= 0 (0: off)")
        if self.max_pending_weight_grads < 1:
            raise ValueError(f"pipeline.max_pending_weight_grads={self.max_pending_weight_grads} must be >= 1")
        if self.repeats < 1 or self.microbatches < 0:
            raise ValueError(f"pipeline.repeats={self.repeats} must be >= 1 and pipeline.microbatches="
                             f"{self.microbatches} >= 0 (0 = train.microbatches)")


class Pipeline:
    """(params, batch [rows, T], total_weight) -> (loss, z, fp32 grads) for one pipeline pass.

    `microbatches` is the microbatch count of one pass; the train step scans over
    train.microbatches / microbatches passes when they differ (gradient accumulation).
    """

    def __init__(self, model_config, config: PipelineConfig, stages: int, train_microbatches: int, z_loss: float,
                 seq_len: int = 0):
        from gopher_jax.parallel.pipeline.executor import make_pipeline_grads

        mb = config.microbatches or train_microbatches
        if train_microbatches % mb:
            raise ValueError(f"train.microbatches={train_microbatches} is not a multiple of pipeline.microbatches="
                             f"{mb}; use pipeline.microbatches=0 (all of them in one pass) or a divisor")
        if not model_config.scan_layers:
            raise ValueError("pipelining slices the scanned layer stack: set ModelConfig.scan_layers=True "
                             "(or MeshConfig.pipeline=1)")
        sched.check(config.schedule, stages, mb, config.repeats, num_layers=model_config.num_layers)
        self.config = config
        self.stages = stages
        self.microbatches = mb
        model_config = stage_model(model_config, config)  # zero_bubble_remat: the stage's own remat policy
        self.op_costs = program_costs(model_config, config, stages, seq_len, z_loss)  # what the program fits
        self.schedule = sched.make_schedule(config.schedule, stages, mb, config.repeats, self.op_costs,
                                            config.max_pending_weight_grads,
                                            w_parts=w_part_choices(model_config, stages, config),
                                            search_tries=config.zero_bubble_search_tries)
        self._grads = make_pipeline_grads(model_config, self.schedule, z_loss)

    def __call__(self, params, batch: dict, total_weight):
        return self._grads(params, split_microbatches(batch, self.microbatches), total_weight)


def stage_model(model_config, config: PipelineConfig):
    """The ModelConfig the pipeline's stages run: `model_config` with zero_bubble's own remat policy
    (`PipelineConfig.zero_bubble_remat`) when one is set. Remat does not change the gradients, only what
    R keeps and what I recomputes."""
    if config.zero_bubble_remat == "model" or config.schedule != "zero_bubble":
        return model_config
    return model_config.replace(remat_policy=config.zero_bubble_remat)


def w_part_choices(model_config, stages: int, config: PipelineConfig) -> tuple:
    """zero_bubble: the W layer-group counts make_schedule may choose among (zero_bubble.part_choices)."""
    from gopher_jax.parallel.pipeline import zero_bubble
    return zero_bubble.part_choices(model_config.num_layers // (stages * config.repeats), config.max_w_parts)


def program_costs(model_config, config: PipelineConfig, stages: int, seq_len: int, z_loss: float = 0.0):
    """The op costs (cost.OpCosts) the program is fitted to: compiled when `pipeline.program_costs` says
    so and a seq_len is given (gpipe and circular do not depend on costs: analytic), else the analytic
    unit costs of the model's remat policy (cost.analytic_costs)."""
    from gopher_jax.parallel.pipeline import compiled_op_costs, cost
    fitted = config.schedule in ("1f1b", "interleaved_1f1b") or config.schedule.startswith("zero_bubble")
    if not fitted or config.program_costs == "analytic" or not seq_len:
        return cost.analytic_costs(model_config.remat_policy)
    layers = model_config.num_layers // (stages * config.repeats)
    return compiled_op_costs.op_costs(model_config, seq_len, layers, z_loss,
                                      split=config.schedule.startswith("zero_bubble"))
