"""LAMBADA: greedy last-word accuracy and perplexity of the last word (lm-eval's lambada_openai)."""
from __future__ import annotations

import math

from gopher_jax.eval.tasks.fewshot import fewshot_prefix


def requests(docs: list[dict], shots: int = 0, seed: int = 1234) -> list[tuple[str, str]]:
    """Returns one (context, ' ' + last word) pair per doc."""
    render = lambda d: d["context"] + " " + d["continuation"]  # noqa: E731
    return [(fewshot_prefix(docs, i, shots, seed, render) + d["context"], " " + d["continuation"].strip())
            for i, d in enumerate(docs)]


def metrics(results: list[tuple[float, bool]]) -> dict:
    """Returns {'acc': fraction greedily predicted, 'ppl': exp(-mean log-likelihood)} (lm-eval's aggregation)."""
    n = len(results)
    return {"acc": sum(g for _, g in results) / n, "ppl": math.exp(-sum(ll for ll, _ in results) / n), "n": n}


def evaluate(lm, docs: list[dict], shots: int = 0, seed: int = 1234) -> dict:
    """Returns LAMBADA metrics of `lm` (anything with loglikelihood(pairs))."""
    return metrics(lm.loglikelihood(requests(docs, shots, seed)))
