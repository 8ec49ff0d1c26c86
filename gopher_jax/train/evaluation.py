"""Held-out evaluation inside the training loop: per-component loss and bits-per-byte, and the mixture's.

Definitions (docs/training.md#held-out-evaluation), one per metric:
- eval_loss/<c>: summed loss (nats) over the scored tokens of component c's held-out rows / those tokens;
- eval_bits_per_byte/<c>: the same summed loss in bits / UTF-8 bytes of exactly the text in those rows;
- eval_loss: sum_c w_c eval_loss/c; eval_bits_per_byte: expected bits per token / expected bytes per
  token, both with tokens drawn at the mixture's weights w_c (renormalised over the evaluated
  components): the loss and bits-per-byte of text sampled the way training samples it.
"""
from __future__ import annotations

from gopher_jax.data.input_pipeline import nats_to_bits_per_byte


def loss_sums(trainer, state, batches) -> tuple[float, float]:
    """Returns (summed loss in nats, scored tokens) over pre-loaded host batches (global sums)."""
    loss_sum = weight_sum = 0.0
    with trainer.context():
        for b in batches:
            l, w = trainer.eval_step(state.params, trainer.put_batch(b))
            loss_sum += float(l)
            weight_sum += float(w)
    return loss_sum, weight_sum


def evaluate(trainer, state, batches) -> float:
    """Returns the mean held-out loss (nats/token) over pre-loaded host batches."""
    loss_sum, weight_sum = loss_sums(trainer, state, batches)
    return loss_sum / max(weight_sum, 1.0)


def load_eval_sets(evals, global_batch: int, process_index: int, process_count: int) -> dict:
    """Returns component -> (this host's batches, UTF-8 bytes of the text in the global rows), read once."""
    out = {}
    for ev in evals:
        batches = list(ev.batches(global_batch, process_index, process_count))
        out[ev.name] = ([b for b, _ in batches], sum(n for _, n in batches))
    return out


def mixture_metrics(per_component: dict, weights: dict) -> dict:
    """Returns the metrics of {component: (summed loss nats, tokens, bytes)} at the mixture weights."""
    record, per = {}, {}
    for name, (loss_sum, tokens, n_bytes) in per_component.items():
        tokens = max(tokens, 1.0)
        per[name] = (loss_sum / tokens, n_bytes / tokens)
        record[f"eval_loss/{name}"] = loss_sum / tokens
        record[f"eval_bits_per_byte/{name}"] = nats_to_bits_per_byte(loss_sum / tokens, n_bytes / tokens)
    if not per:
        return record
    w = {n: weights.get(n, 0.0) for n in per}
    total = sum(w.values())
    w = {n: (v / total if total else 1.0 / len(per)) for n, v in w.items()}
    loss = sum(w[n] * per[n][0] for n in per)
    record["eval_loss"] = loss
    record["eval_bits_per_byte"] = nats_to_bits_per_byte(loss, sum(w[n] * per[n][1] for n in per))
    return record


def evaluate_components(trainer, state, eval_sets: dict, weights: dict) -> dict:
    """Returns held-out metrics per component and for the mixture (see the module docstring).

    eval_sets: component -> (host batches, UTF-8 bytes of exactly the text in those batches' rows).
    """
    per = {}
    for name, (batches, n_bytes) in eval_sets.items():
        loss_sum, tokens = loss_sums(trainer, state, batches)
        per[name] = (loss_sum, tokens, n_bytes)
    return mixture_metrics(per, weights)


def mixture_shares(data) -> dict:
    """Returns {"mixture_share/<c>": share of all global rows drawn so far, "mixture_epochs/<c>": epochs}."""
    return {**{f"mixture_share/{n}": v for n, v in data.realized().items()},
            **{f"mixture_epochs/{n}": v for n, v in data.epochs().items()}}
