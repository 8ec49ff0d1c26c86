"""optax optimizer: Adam/AdamW, Gopher and Chinchilla schedules, clipping, a weight-decay mask."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from gopher_jax.model import axes
from gopher_jax.train.config import OptimizerConfig

# Logical axes that mark an embedding table (never decayed unless asked).
_EMBEDDING_AXES = {axes.VOCAB, axes.POSITIONS}


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Returns step -> LR: linear warmup, then cosine over the rest of the run.

    gopher: cosine from the peak down to peak/decay_factor at the last step (Gopher §3: decay by
    10x over the training tokens). chinchilla: an alias of gopher, the same curve. Chinchilla's
    schedule (§3 and App. B: cosine cycle equal to the training steps, an overshooting cycle hurts;
    decay to 10%) is what gopher already does, since the cycle here is always the run; the other
    half of Chinchilla's recipe is AdamW (`optimizer.name='adamw'`), not a schedule.
    constant: warmup then flat. Warmup is clipped to a third of short runs so tiny runs still decay.
    """
    warmup = max(1, min(config.warmup_steps, total_steps // 3))
    peak = config.peak_learning_rate
    # "gopher" and "chinchilla" (an alias) fall through to the same cosine.
    if config.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)],
                                    [warmup])
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=peak / config.decay_factor)


def decay_mask(boxed_params, config: OptimizerConfig):
    """Returns a bool tree: True where weight decay applies (matrices that are not embeddings).

    Decided from each parameter's logical axes, not its path: weight matrices map to or from
    `embed`/`mlp` with at least two axes; norms and biases (including Transformer-XL's u, v over
    heads x kv) do not; embeddings carry `vocab` or `positions`.
    """

    def decays(leaf):
        names = [n for n in (leaf.names if isinstance(leaf, nn.Partitioned) else ()) if n != axes.LAYERS]
        if config.decay_embeddings_and_norms:
            return True
        is_matrix = len(names) >= 2 and bool({axes.EMBED, axes.MLP} & set(names))
        return is_matrix and not (_EMBEDDING_AXES & set(names))

    return jax.tree.map(decays, boxed_params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """Returns optax.clip_by_global_norm's transformation (same empty state, same result up to one
    rounding) computed as one scalar scale, min(1, max_norm / norm), times each gradient.

    optax divides every element by the norm inside a select; XLA does not duplicate a divide into
    several consumers, so the clipped gradient was written out whole and read back by Adam's first-
    and second-moment updates: one extra pass over every gradient per step (benchmarks/README.md,
    "The clipped gradient"). A multiply is fused into each consumer instead.
    """
    def update_fn(updates, state, params=None):
        del params
        g_norm = optax.tree.norm(updates)
        scale = jnp.where(g_norm < max_norm, 1.0, max_norm / g_norm)  # non-finite norm: 0 or NaN, as optax
        return jax.tree.map(lambda t: t * scale.astype(t.dtype), updates), state

    return optax.GradientTransformation(optax.init_empty_state, update_fn)


def make_optimizer(config: OptimizerConfig, total_steps: int, boxed_params) -> optax.GradientTransformation:
    """Returns the optax chain: clip by global norm -> Adam(W) with the schedule and the decay mask."""
    schedule = learning_rate_schedule(config, total_steps)
    parts = []
    if config.clip_norm:
        parts.append(clip_by_global_norm(config.clip_norm))
    if config.name == "adamw":
        parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                                 weight_decay=config.weight_decay, mask=decay_mask(boxed_params, config)))
    else:
        parts.append(optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps))
    return optax.chain(*parts)
