"""Optimizer settings per model size for scaling sweeps: the rule every IsoFLOP run uses.

Porian et al. 2024 ("Resolving Discrepancies in Compute-Optimal Scaling of Language Models")
found that three choices decide whether small runs reproduce Chinchilla's N_opt ~ C^0.5 rather
than Kaplan's C^0.73: counting the last layer's FLOPs (our `chinchilla` count does, App. F), a
warmup short enough for the smallest models, and optimizer settings tuned per scale (AdamW beta2
raised at small batch sizes). This module is the one place that turns a model size into those
settings, so every run of a sweep follows one stated rule:

  * peak learning rate, width-scaled as muP does for Adam's hidden matrices (Yang et al. 2022,
    Table 3: learning rate proportional to 1/width): lr = LR_REFERENCE * D_REFERENCE / d_model,
    clipped to [LR_MIN, LR_MAX]. The reference is this codebase's tuned tiny model (d_model 256,
    3e-3, gin_configs/runs/pretrain.gin); it is one rule for all widths, not a per-size search;
  * warmup of N tokens (N = the model's parameters; Porian et al. Sec. 3.3 shorten Kaplan's fixed
    3,000-step warmup to about the model size in tokens), in whole steps, at least one step; the
    optimizer clips warmup to a third of a short run (gopher_jax/train/optimizer.py);
  * AdamW beta2 = 0.99 (Porian et al. Sec. 3.4: beta2 0.95 is too low at small batch sizes;
    our sweeps use 4,096-token batches);
  * cosine decay by 10x over each run's own step count (Chinchilla Sec. 3 and App. B: a cosine
    cycle longer than the run overestimates its loss). That is the `gopher` schedule with
    train.steps set to the run's length, which the sweep does for every run.
"""
from __future__ import annotations

import math

LR_REFERENCE = 3e-3   # peak LR of the tiny model (d_model 256) in gin_configs/runs/pretrain.gin
D_REFERENCE = 256
LR_MIN, LR_MAX = 1e-3, 1e-2
ADAM_BETA2 = 0.99


def learning_rate(d_model: int) -> float:
    """Returns the peak learning rate of a model of width `d_model` (1/width scaling, clipped)."""
    if d_model <= 0:
        raise ValueError(f"d_model={d_model} must be a positive width")
    return float(min(LR_MAX, max(LR_MIN, LR_REFERENCE * D_REFERENCE / d_model)))


def warmup_steps(n_params: int, tokens_per_step: int) -> int:
    """Returns the warmup in steps: the model's parameter count in tokens, at least one step."""
    if tokens_per_step <= 0:
        raise ValueError(f"tokens_per_step={tokens_per_step} must be positive")
    return max(1, math.ceil(n_params / tokens_per_step))


def size_bindings(d_model: int, n_params: int, tokens_per_step: int) -> dict[str, object]:
    """Returns the gin bindings (`optimizer.*` name -> value) this rule gives one model size."""
    return {"optimizer.peak_learning_rate": learning_rate(d_model),
            "optimizer.warmup_steps": warmup_steps(n_params, tokens_per_step),
            "optimizer.b2": ADAM_BETA2,
            "optimizer.schedule": "'gopher'"}
