"""Pipeline parallelism over the `pipeline` mesh axis: GPipe, 1F1B and circular schedules.

schedule.py  pure-Python schedule tables (and their exact bubble)
stage.py     the Decoder cut into embed / stage / head over the unchanged parameter tree
executor.py  runs a table with jit + shard_map + ppermute
config.py    `PipelineConfig` (gin `pipeline.*`) and `Pipeline`, what the train step calls
See docs/decisions/0002-pipeline.md.
"""
from gopher_jax.parallel.pipeline.config import Pipeline, PipelineConfig
from gopher_jax.parallel.pipeline.schedule import SCHEDULES, expected_bubble, make_schedule

__all__ = ["Pipeline", "PipelineConfig", "SCHEDULES", "expected_bubble", "make_schedule"]
