"""Zero-bubble's third program builder: a seeded local search over which fill rule each device follows in each slot.

zero_bubble_fill.fill_program applies one Rule in every slot. At the toy's compiled costs with
pipeline.zero_bubble_remat='none' and two weight-gradient sets (P = 4, MB = 12, W in quarters;
tests/parallel/test_pipeline_memory.py) the best of `zero_bubble.FILLS` executes at 0.9215, short of
the 0.9267 a third of 1F1B's bubble needs, and no single rule of 6,912 (every order of I, R*, F, R,
six fill orders, lead, ahead 0-2 or none, tail_first, W in 1, 2 or 4 parts) does better. The slots
differ (warm-up, steady state, cool-down; the first and last stages are dearer than a middle one), so
no one rule suits them all.

`search` starts from a rule's program and hill-climbs: each try re-draws the rule of one to three
(slot, device) pairs, or a slot's `lead`, from FILLS, rebuilds the program with those overrides (fill_program's
`per_slot`; every dependency and memory bound is still enforced by the builder) and keeps it if it
prices no worse. A fixed seed makes it deterministic, so plan and the trainer get the same program.
The toy case reaches a third after ~130 tries (~0.4 s); pipeline.zero_bubble_search_tries sets the
budget (0: off, the default).
"""
from __future__ import annotations

import random

from gopher_jax.parallel.pipeline import zero_bubble_fill


def lockstep_price(program, cost_of) -> float:
    """The program's step time in op-cost units: each slot costs its slowest device (cost.py)."""
    return sum(max(sum(cost_of(op) for op in ops) for ops in row) for row in program)


def search(stages: int, microbatches: int, cost_of, max_pending_w: int, max_residuals: int, w_parts: int,
           max_stash: int, start: zero_bubble_fill.Rule, rules: tuple, tries: int, seed: int = 0) -> tuple:
    """Returns (price, program): the cheapest program found in `tries` rebuilds of `start`'s program
    with per-(slot, device) rules drawn from `rules` (module docstring); `start`'s own if none is cheaper."""
    rng = random.Random(seed)
    build = lambda per_slot: zero_bubble_fill.fill_program(  # noqa: E731
        stages, microbatches, cost_of, max_pending_w, max_residuals, w_parts, max_stash, start, per_slot)
    program = build({})
    best, best_price = {}, lockstep_price(program, cost_of)
    for _ in range(tries):
        slots = len(program)
        candidate = dict(best)
        for _ in range(rng.choice((1, 1, 2, 3))):
            d = rng.randrange(stages + 1)  # a device's rule, or (d = stages) the slot's lead
            candidate[(rng.randrange(slots), d if d < stages else None)] = rng.choice(rules)
        try:
            prog = build(candidate)
        except RuntimeError:  # the overrides left a slot where nothing could run
            continue
        price = lockstep_price(prog, cost_of)
        if price <= best_price + 1e-9:
            best, best_price, program = candidate, price, prog
    return best_price, program
