"""What every host of a multi-host run must decide together: when to stop, and which checkpoint to restore.

A host's local view (it got SIGTERM; its restore of step N raised) becomes one answer for all hosts by a
collective over the global devices (jax.experimental.multihost_utils): every host calls the same function
at the same point of the loop, so the collectives line up, and every host gets the same answer. With one
process these are the identity and cost nothing.
"""
from __future__ import annotations

import jax
import numpy as np

# Per-host outcome codes of one collective restore attempt, most severe last (the max across hosts wins).
RESTORED, RETRY, CORRUPT, STOP = 0, 1, 2, 3


def _gather(value: int) -> np.ndarray:
    if jax.process_count() == 1:
        return np.array([value])
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(np.array(value, np.int32)))


def any_host(flag: bool) -> bool:
    """Returns whether `flag` is true on any host (every host gets the same answer)."""
    return bool(_gather(int(bool(flag))).any())


def worst_outcome(code: int) -> tuple[int, list[int]]:
    """Returns (the most severe outcome code across hosts, every host's code by process index)."""
    codes = [int(c) for c in _gather(code).reshape(-1)]
    return max(codes), codes


def from_lead(value: int) -> int:
    """Returns process 0's `value` on every host."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils
    return int(multihost_utils.broadcast_one_to_all(np.array(value, np.int64)))


def stop_now(step: int, requested: bool, every: int) -> bool:
    """Returns whether all hosts stop after `step`: at every `every`-th step, true when any host was asked.

    Hosts only compare at those steps, so a host whose SIGTERM arrived mid-interval keeps stepping with the
    others until the next comparison; all of them then save the same step together.
    """
    if step % every:
        return False
    return any_host(requested)
