"""A whole run's predicted wall time and chip-hours: the plan's step time x the run's steps.

Definitions (what `gopher-jax plan` prints):
- predicted wall time = sum over the run's constant-batch stages (train.tokens / train.batch_ramp,
  train/token_budget.py) of steps x predicted seconds per step at that stage's batch;
- chip-hours = predicted wall time in hours x the topology's chips.
Assumed: the step time of the plan (its MFU and pipeline efficiency) for every step; in a ramp stage the
step's compute scales with its batch (same microbatch count, so the same pipeline efficiency, each
microbatch larger) while the plan's communication time (when it reports one) stays as it is (weight
all-gathers / reduce-scatters depend on the parameters and the microbatch count, not the batch);
100% goodput (no start-up, compile, checkpoint, eval, restart or preemption time).
"""
from __future__ import annotations

HOUR = 3600.0


def run_estimate(train, step, num_chips: int) -> dict:
    """Returns {"run_steps", "run_tokens", "predicted_wall_s", "predicted_chip_hours", "run_stages"} for a
    TrainConfig whose first-stage step is `step` (the plan's step estimate: "predicted_step_s", optionally
    split into "compute_s" + "communication_s"; or just the seconds) on `num_chips` chips."""
    from gopher_jax.train.token_budget import tokens_after
    if isinstance(step, dict):
        comm = step.get("communication_s") or 0.0
        compute = step["predicted_step_s"] - comm
    else:
        compute, comm = float(step), 0.0
    stages = train.stages()
    rows = [{"first_step": s.first_step, "steps": s.steps, "batch_size": s.batch_size,
             "step_s": compute * s.batch_size / train.batch_size + comm} for s in stages]
    wall = sum(r["steps"] * r["step_s"] for r in rows)
    return {"run_steps": train.steps, "run_tokens": tokens_after(train.steps, stages, train.seq_len),
            "run_tokens_budget": train.tokens or None, "predicted_wall_s": wall,
            "predicted_chip_hours": wall / HOUR * num_chips, "run_stages": rows}


def format_run_estimate(p: dict) -> str:
    """Returns the plan's run-length lines: steps, tokens, wall time and chip-hours, with what they assume."""
    stages = ", ".join(f"{r['steps']:,} steps at batch {r['batch_size']} ({r['step_s']:.2f} s/step)"
                       for r in p["run_stages"])
    budget = (f" (train.tokens={p['run_tokens_budget']:,})" if p.get("run_tokens_budget") else
              " (train.steps; set train.tokens for a token budget)")
    wall_h = p["predicted_wall_s"] / HOUR
    return (f"run: {p['run_steps']:,} steps, {p['run_tokens']:,} tokens{budget}: {stages}\n"
            f"predicted wall time {wall_h:,.1f} h ({wall_h / 24:,.1f} days), {p['predicted_chip_hours']:,.0f} "
            f"chip-hours on {p['num_chips']} chips (step time above x steps; assumes 100% goodput: no start-up, "
            f"compile, checkpoint, eval or restart time)")
