"""One process that feeds the global batch a 2-process run sees: shard 0's rows, then shard 1's.

`gopher-jax train` in one process reads the corpus as a single shard, so its batches differ
from a two-host run's. This script runs the same train loop, with make_batches reading both
host shards and concatenating them in process order (process 0 owns devices 0-3, the first
half of the batch axis). Usage: python reference_run.py --workdir=DIR --gin_param=... (as train).
"""
import sys

import numpy as np

from gopher_jax.data import input_pipeline

EMULATED_HOSTS = 2
_make_batches = input_pipeline.make_batches


class _Concat:
    """Iterator over the per-host iterators' batches, joined along the batch axis."""

    def __init__(self, parts):
        self.parts = parts

    def __iter__(self):
        return self

    def __next__(self):
        batches = [next(p) for p in self.parts]
        return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}

    def get_state(self):
        # The loop reads batches_consumed (the same for every part); the parts restore themselves.
        return {"batches_consumed": self.parts[0].get_state()["batches_consumed"],
                "parts": [p.get_state() for p in self.parts]}

    def set_state(self, state):
        for p, s in zip(self.parts, state["parts"]):
            p.set_state(s)


def _two_host_batches(task_name, *, batch_size, shard_index=0, num_shards=1, **kw):
    assert (shard_index, num_shards) == (0, 1), "the reference run is a single process"
    return _Concat([_make_batches(task_name, batch_size=batch_size // EMULATED_HOSTS, shard_index=i,
                                  num_shards=EMULATED_HOSTS, **kw) for i in range(EMULATED_HOSTS)])


if __name__ == "__main__":
    input_pipeline.make_batches = _two_host_batches
    from gopher_jax.cli import main
    sys.exit(main(["train", *sys.argv[1:]]))
