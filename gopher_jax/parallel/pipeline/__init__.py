"""Pipeline parallelism over the `pipeline` mesh axis: GPipe, 1F1B, circular, interleaved 1F1B, zero-bubble.

program.py            the program representation all of them share: Op, Schedule, stage positions
schedule.py           pure-Python schedule tables (their exact bubble); make_schedule places the program
placement.py          unit table -> executed program: fused backward, hoisted recompute, paired F + B
cost.py               the executed-cost model: slot cost = its slowest device; efficiency
compiled_op_costs.py  op costs measured by compiling each stage branch and reading XLA's cost analysis
zero_bubble.py        zero-bubble (ZB-H1) programs within set memory bounds, and their bubble's lower bound
deferred_wgrad.py     the split backward: I (dx + every Dense's input and output cotangent), W (x^T dy per kernel)
stage.py              the Decoder cut into embed / stage / head over the unchanged parameter tree
executor.py           runs a program with jit + shard_map + ppermute
config.py             `PipelineConfig` (gin `pipeline.*`) and `Pipeline`, what the train step calls
See docs/decisions/0002-pipeline.md.
"""
from gopher_jax.parallel.pipeline.config import Pipeline, PipelineConfig
from gopher_jax.parallel.pipeline.schedule import SCHEDULES, expected_bubble, make_schedule

__all__ = ["Pipeline", "PipelineConfig", "SCHEDULES", "expected_bubble", "make_schedule"]
