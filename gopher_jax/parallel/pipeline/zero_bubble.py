"""Zero-bubble: ZB-H1 (Qi et al. 2023, section 3.1) as a lockstep program within 1F1B's memory.

ZB-H1 is 1F1B whose backward is split into I (input gradient: dx, on the critical path) and W (weight
gradient: x^T dy per matmul, which nothing waits for; deferred_wgrad.py); W is deferred into what would
be bubble. Our backward also recomputes its stage from the stashed stage input (R), and R too is off the
critical path (it only needs the stage input). Memory, per device, is what the program keeps across slot
boundaries (executor.compile_program colours it):

  stage inputs          at most `stages` (ZB-H1's and 1F1B's bound: F's output waits for R)
  residual sets         R -> I, at most `max_residuals` (1: one stage's remat-policy residuals)
  weight-gradient sets  I -> W, at most `max_pending_w` (pipeline.max_pending_weight_grads): every
                        Dense's input and output cotangent of the stage (the big one)

`zb_h1` keeps the cheapest at the op costs (lockstep: a slot costs its slowest device, cost.py) of two
builders' programs. (1) `_schedule`, lockstep list scheduling: in each slot every device takes its most
urgent ready op (I, then F or R, then W: `Policy.primary`), the slot's budget is the dearest of those
(times `Policy.stretch`; from the first I to the last F at least half a microbatch's work), and each
device then adds ready ops (`Policy.fill` order) within the budget and the memory bounds; every policy
runs at the op costs and at the op costs rounded to whole forwards. (2) zero_bubble_fill.py: F, R and I
one per device per slot, W parts poured into what they leave, the busiest device leading (`FILLS`). With
`search_tries` (pipeline.zero_bubble_search_tries), (3) zero_bubble_search.py refines (2)'s best program
with a rule per device and slot. A W
may run as `w_parts` ops over equal layer groups, which top up slots. At whole-unit costs the list
scheduler meets the bound below; at compiled costs (I > F > W) the fill builder's slots level where the
list scheduler's cannot.

What no lockstep program can beat (docs/decisions/0002-pipeline.md derives it): a middle device d waits
d F-slots for its first input, and after its last I the last microbatch's I still crosses d devices and
device 0 runs that microbatch's W, while device d has at most `max_pending_w` W's left to fill that
tail. So the bubble (idle time per device, at a middle stage's op costs) is at least

    (P - 2) (F + I) + (1 - K) W            K = max_pending_w, P >= 3   (`bubble_lower_bound`)

ZB-H1's "a third of 1F1B's bubble", (P - 1)(F + R + I + W) / 3, needs K >= ceil(I / W) at P = 4 and
more for larger P: with remat 'full' I is about 2 W (it recomputes each layer), so one pending W set is
not enough, whatever the schedule. pipeline.zero_bubble_remat='none' (R keeps the stage's full residuals,
I recomputes nothing) brings I / W to 1.15 (280B) - 1.4 (toy): attention's and the norms' backward stay
in I, so K = 1 is still just above a third. K = 2 is below it, and at the 280B recipe's shape (P = 4,
MB = 12, W in 10 parts) the fill program gets there: executed 0.935 ('none' stages) and 0.932
('dots_no_batch') against the 0.9235 a third needs (the list scheduler: 0.911, 0.904). On the toy of
test_pipeline_memory.py ('none') no single fill rule does (0.922 against 0.927; its 4-layer stage cuts W
in quarters at most); a rule per device and slot does (zero_bubble_search.py, `search_tries`: 0.930 at
400 tries). Not with remat 'full' stages (bound ~ a third). docs/decisions/0002-pipeline.md has the
figures and the memory K = 2 costs.
"""
from __future__ import annotations

import dataclasses
import itertools

from gopher_jax.parallel.pipeline import zero_bubble_fill, zero_bubble_search
from gopher_jax.parallel.pipeline.program import BWD_INPUT, BWD_WEIGHT, FWD, RECOMPUTE, Lockstep, Op


@dataclasses.dataclass(frozen=True)
class Policy:
    primary: tuple  # kinds in the order a device picks its first op of a slot
    fill: tuple  # kinds in the order it adds more within the slot's budget
    stretch: float  # budget >= stretch x the dearest first op of the slot
    balance: bool  # from the first I to the last F, budget >= half a microbatch's work (F + R + I + W) / 2


POLICIES = tuple(Policy(p, f, s, b) for p, f, s, b in itertools.product(
    (("I", "F", "R", "W"), ("I", "R", "F", "W")), (("I", "F", "R", "W"), ("I", "R", "F", "W")), (1.0, 1.2),
    (False, True)))

# zero_bubble_fill's rules zb_h1 tries: the orders that won at the 280B recipe's and the toy's compiled costs
# (I, an R just in time, F; or F first), the older I / R / F orders, each with and without the busiest
# device leading the W pour, an F cap in the steady state and the longest chain first in the cool-down
FILLS = tuple(zero_bubble_fill.Rule(order, fill, lead, ahead, tail_first)
              for order, fill in ((("I", "R*", "F", "R"), ()), (("I", "R", "F"), ()), (("I", "R", "F"), ("R", "F")),
                                  (("I", "F", "R"), ()), (("F", "I", "R*", "R"), ("R", "F")))
              for lead, ahead, tail_first in itertools.product((False, True), (None, 0), (False, True)))


def part_choices(layers_per_stage: int, max_parts: int = 10) -> tuple:
    """How many equal layer groups a W may run in (make_schedule keeps the cheapest): 1, 2 and the
    largest divisor of the stage's layers up to `max_parts` (pipeline.max_w_parts), each at most
    `max_parts`. More groups fill lockstep slots more evenly (a W part tops up a slot that F + R or I
    leaves short), but each part is an op of its own in the traced program."""
    top = max(n for n in range(1, max(1, max_parts) + 1) if layers_per_stage % n == 0)
    return tuple(sorted({n for n in (1, 2 if layers_per_stage % 2 == 0 else 1, top) if n <= max(1, max_parts)}))


def bubble_lower_bound(stages: int, f: float, i: float, w: float, max_pending_w: int) -> float:
    """The least idle time per device of any lockstep ZB program (module docstring), in op-cost units."""
    if stages < 3:
        return 0.0
    return max(0.0, (stages - 2) * (f + i) + (1 - max_pending_w) * w)


def _schedule(stages: int, microbatches: int, cost_of, policy: Policy, max_pending_w: int,
              max_residuals: int, w_parts: int, max_stash: int) -> tuple:
    pp, mb, last = stages, microbatches, stages - 1
    lock = Lockstep("zero_bubble", 8 * (mb + pp) * (4 + w_parts))
    nxt = [{FWD: 0, RECOMPUTE: 0, BWD_INPUT: 0} for _ in range(pp)]  # next microbatch per kind (in order)
    pending = [[] for _ in range(pp)]  # W parts to run: (microbatch, part), in order
    w_left = [[w_parts] * mb for _ in range(pp)]  # W parts not yet run, per microbatch
    arrived = [0] * pp  # stage inputs received by the end of the previous slot (d > 0)
    half = (sum(cost_of(Op(k, 0, min(1, last))) for k in (FWD, RECOMPUTE, BWD_INPUT)) +
            w_parts * cost_of(Op(BWD_WEIGHT, 0, min(1, last)))) / 2

    while any(pending[d] or nxt[d][BWD_INPUT] < mb for d in range(pp)):
        rows = [[] for _ in range(pp)]
        loads = [0.0] * pp
        took = [{FWD: 0, RECOMPUTE: 0, BWD_INPUT: 0} for _ in range(pp)]
        w_now = [[] for _ in range(pp)]

        def sets_kept(d: int) -> int:
            """Weight-gradient sets device d keeps past this slot: I ran, some W part still to run."""
            left = list(w_left[d])
            for i, _ in w_now[d]:
                left[i] -= 1
            return sum(1 for i in range(nxt[d][BWD_INPUT] + took[d][BWD_INPUT]) if left[i])

        def candidate(d: int, kind: str):
            """The device's next op of `kind` if it may run now (dependencies and memory bounds)."""
            if kind == BWD_WEIGHT:
                left = [w for w in pending[d] if w not in w_now[d]]
                return Op(BWD_WEIGHT, left[0][0], d, left[0][1]) if left else None
            if took[d][kind] or (kind == FWD and d == last):
                return None
            i = nxt[d][kind]
            if i >= mb:
                return None
            has_input = d == 0 or lock.before(FWD, i, d - 1)
            r_ran = nxt[d][RECOMPUTE] + took[d][RECOMPUTE]
            i_ran = nxt[d][BWD_INPUT] + took[d][BWD_INPUT]
            if kind == FWD:  # the next device keeps at most `stages` stage inputs (F's output, until its R)
                if not has_input or arrived[d + 1] + 1 - nxt[d + 1][RECOMPUTE] > max_stash:
                    return None
            elif kind == RECOMPUTE:
                if not has_input or (d < last and nxt[d][FWD] + took[d][FWD] <= i):
                    return None
                if r_ran + 1 - i_ran > max_residuals:
                    return None
            else:  # I: its weight-gradient set is kept unless all its W parts fit in this slot too
                if r_ran <= i or (d < last and not lock.before(BWD_INPUT, i, d + 1)):
                    return None
                if sets_kept(d) + 1 > max_pending_w:
                    return None
            return Op(kind, i, d)

        def take(d: int, op: Op) -> None:
            rows[d].append(op)
            loads[d] += cost_of(op)
            if op.kind == BWD_WEIGHT:
                w_now[d].append((op.microbatch, op.part))
            else:
                took[d][op.kind] += 1
                if op.kind == BWD_INPUT:
                    pending[d].extend((op.microbatch, k) for k in range(w_parts))

        for d in range(pp):
            op = next((c for c in (candidate(d, k) for k in policy.primary) if c is not None), None)
            if op is not None:
                take(d, op)
        budget = policy.stretch * max(loads)
        steady = any(nxt[d][BWD_INPUT] for d in range(pp)) and any(nxt[d][FWD] < mb for d in range(last))
        if policy.balance and steady:  # between the first I and the last F: slots of half a microbatch
            budget = max(budget, half)
        for d in range(pp):
            only_w = all(nxt[e][BWD_INPUT] + took[e][BWD_INPUT] == mb for e in range(pp))  # W's left: all of them
            while True:
                op = next((c for c in (candidate(d, k) for k in policy.fill) if c is not None
                           and (loads[d] + cost_of(c) <= budget + 1e-9 or only_w and c.kind == BWD_WEIGHT)), None)
                if op is None:
                    break
                take(d, op)
        if not any(rows):  # nothing could run: the memory bounds are too tight to make progress
            raise RuntimeError(f"zero_bubble stuck (stages={pp}, microbatches={mb}, {policy})")
        lock.close(rows)
        for d in range(pp):
            for kind in (FWD, RECOMPUTE, BWD_INPUT):
                nxt[d][kind] += took[d][kind]
            for w in w_now[d]:
                pending[d].remove(w)
                w_left[d][w[0]] -= 1
            if d + 1 < pp:
                arrived[d + 1] += took[d][FWD]
    return tuple(lock.program)


def zb_h1(stages: int, microbatches: int, cost_of, max_pending_w: int = 1, max_residuals: int = 1,
          w_parts: int = 1, max_stash: int | None = None, search_tries: int = 0) -> tuple:
    """ZB-H1's executed program (module docstring): the cheapest at `cost_of(op)` of the `POLICIES`, each
    run at the op costs and at the op costs rounded to whole forwards (a W part costs 1 / w_parts of W:
    pass a cost_of that says so), and of the `FILLS`. Rounded costs make ops of about equal cost look
    equal, so the list scheduling keeps every device in step; the program is priced at the real costs
    either way. With `search_tries` > 0, zero_bubble_search.py then refines the best fill rule's program
    slot by slot (seeded: the same program every call) and keeps it if it is cheaper."""
    unit = cost_of(Op(FWD, 0, 0)) or 1.0
    rounded = lambda op: max(1, round(cost_of(op) / unit)) * unit if cost_of(op) > 0 else 0.0  # noqa: E731
    stash = max_stash or stages
    price = lambda prog: zero_bubble_search.lockstep_price(prog, cost_of)  # noqa: E731
    best = None
    for policy, fit in itertools.product(POLICIES, (cost_of, rounded)):  # the list scheduler's first: a tie keeps it
        prog = _schedule(stages, microbatches, fit, policy, max_pending_w, max_residuals, w_parts, stash)
        p = price(prog)
        if best is None or p < best[0] - 1e-9:
            best = (p, prog)
    best_rule = None  # the fill rule whose program is cheapest (the search starts from it)
    for rule in FILLS:
        prog = zero_bubble_fill.fill_program(stages, microbatches, cost_of, max_pending_w, max_residuals, w_parts,
                                             stash, rule)
        p = price(prog)
        if best_rule is None or p < best_rule[0] - 1e-9:
            best_rule = (p, rule)
        if p < best[0] - 1e-9:
            best = (p, prog)
    best_rule = best_rule[1]
    if search_tries > 0:
        found = zero_bubble_search.search(stages, microbatches, cost_of, max_pending_w, max_residuals, w_parts, stash,
                                          best_rule, FILLS, search_tries)
        if found[0] < best[0] - 1e-9:
            best = found
    return best[1]
