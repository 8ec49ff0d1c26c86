"""Scaling-law toolkit: FLOP counting, Kaplan laws, Chinchilla approaches 1-3, IsoFLOP sweeps.

Modules (one idea each):
  constants   every published number, with its paper/table/equation
  params      analytic parameter counts of a ModelConfig
  flops       Chinchilla App. F and 6ND FLOP counts (per token, per run)
  runs        the runs table (CSV), training curves from metrics.jsonl
  bootstrap   percentile bootstrap confidence intervals
  kaplan      Kaplan L(N), L(D), L(N, D) fits
  approach1   Chinchilla approach 1: minimum-loss envelope of training curves
  approach2   Chinchilla approach 2: IsoFLOP parabolas
  approach3   Chinchilla approach 3: Huber/L-BFGS parametric fit of L(N, D)
  powerlaw    N_opt = k * C^a lines shared by approaches 1, 2 and Kaplan
  optimal     compute-optimal planner and the nearest real config
  sweep       IsoFLOP sweep generation, local running, collection
  synthetic   runs drawn from a known law plus noise (tests, docs, benchmarks)
  plots       Chinchilla Figs. 2-4 style PNGs
  *_cli       the `gopher-jax scaling ...` commands
"""
from gopher_jax.scaling.flops import flops_per_run, flops_per_token, forward_breakdown, forward_flops
from gopher_jax.scaling.params import count_params, param_breakdown

__all__ = ["flops_per_run", "flops_per_token", "forward_breakdown", "forward_flops", "count_params",
           "param_breakdown"]
