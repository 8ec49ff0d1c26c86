"""A run's length as a token budget: optimizer steps derived from batch x seq_len, with an optional batch ramp.

The papers state their runs in tokens (Gopher §3: 300B tokens; Chinchilla §4: 1.4T tokens) and their
batch sizes in tokens, some ramped (Gopher Table 1: 3M -> 6M for 280B; Chinchilla Table 4: 1.5M -> 3M).
`train.tokens` keeps the budget when the batch changes; `train.batch_ramp` lists
(tokens_seen_before_the_change, new_batch_in_sequences) pairs after the initial `train.batch_size`.
Each stage runs ceil(stage tokens / (batch x seq_len)) steps, so a run trains at least its budget.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class BatchStage:
    """One constant-batch stretch of the run: steps [first_step, first_step + steps) at `batch_size`."""

    first_step: int
    steps: int
    batch_size: int  # sequences
    start_tokens: int  # tokens trained before this stage


def _ramp(batch_size: int, batch_ramp: Sequence) -> list[tuple[int, int]]:
    """Returns [(start_tokens, batch), ...] starting at 0; raises ValueError naming a bad ramp entry."""
    points = [(0, int(batch_size))]
    for entry in batch_ramp:
        try:
            at, batch = entry
        except (TypeError, ValueError):
            raise ValueError(f"train.batch_ramp entry {entry!r} must be a (tokens, batch_size) pair, e.g. "
                             f"((700_000_000_000, 1536),)") from None
        at, batch = int(at), int(batch)
        if at <= points[-1][0] or batch <= 0:
            raise ValueError(f"train.batch_ramp={tuple(batch_ramp)!r}: token thresholds must increase from above 0 "
                             f"and batch sizes be positive (bad entry {entry!r})")
        points.append((at, batch))
    return points


def stages(*, batch_size: int, seq_len: int, batch_ramp: Sequence = (), tokens: int = 0,
           steps: int | None = None) -> list[BatchStage]:
    """Returns the run's constant-batch stages: sized by `tokens` (> 0), else the last stage ends at `steps`."""
    points = _ramp(batch_size, batch_ramp)
    out, first = [], 0
    for i, (start, batch) in enumerate(points):
        nxt = points[i + 1][0] if i + 1 < len(points) else None
        if tokens > 0:
            if start >= tokens:
                break
            n = math.ceil(((tokens if nxt is None else min(nxt, tokens)) - start) / (batch * seq_len))
        else:
            left = max(0, (steps or 0) - first)
            n = left if nxt is None else min(left, math.ceil((nxt - start) / (batch * seq_len)))
        out.append(BatchStage(first, n, batch, start))
        first += n
    return out


def steps_for_tokens(tokens: int, batch_size: int, seq_len: int, batch_ramp: Sequence = ()) -> int:
    """Returns the optimizer steps that train `tokens` tokens (at least) with this batch and ramp."""
    if tokens <= 0:
        raise ValueError(f"train.tokens={tokens} must be positive")
    return sum(s.steps for s in stages(batch_size=batch_size, seq_len=seq_len, batch_ramp=batch_ramp, tokens=tokens))


def batch_at_step(step: int, run_stages: Sequence[BatchStage]) -> int:
    """Returns the global batch (sequences) of 0-based step `step`."""
    batch = run_stages[0].batch_size
    for s in run_stages:
        if step >= s.first_step:
            batch = s.batch_size
    return batch


def tokens_after(steps: int, run_stages: Sequence[BatchStage], seq_len: int) -> int:
    """Returns the tokens trained by the first `steps` steps."""
    total = 0
    for s in run_stages:
        n = max(0, min(steps - s.first_step, s.steps))
        total += n * s.batch_size * seq_len
    return total
