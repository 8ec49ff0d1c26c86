"""Winogrande with partial scoring (Trinh & Le 2018; lm-eval): each option fills the blank in the
context, and the option under which the shared continuation is most likely wins."""
from __future__ import annotations

import numpy as np

from gopher_jax.eval.tasks.fewshot import fewshot_prefix


def render(doc: dict) -> str:
    return doc["context_options"][doc["gold"]] + " " + doc["continuation"]


def requests(docs: list[dict], shots: int = 0, seed: int = 1234) -> list[tuple[str, str]]:
    """Returns (prefix + context with option i, ' ' + continuation) for every option of every doc."""
    out = []
    for i, d in enumerate(docs):
        prefix = fewshot_prefix(docs, i, shots, seed, render)
        out += [(prefix + c, " " + d["continuation"].strip()) for c in d["context_options"]]
    return out


def metrics(docs: list[dict], lls: list[float]) -> dict:
    """Returns {'acc', 'n'}: fraction of docs whose gold option gives the continuation the highest log-likelihood."""
    acc, k = 0.0, 0
    for d in docs:
        n = len(d["context_options"])
        acc += float(np.argmax(np.asarray(lls[k:k + n])) == d["gold"])
        k += n
    return {"acc": acc / len(docs), "n": len(docs)}


def evaluate(lm, docs: list[dict], shots: int = 0, seed: int = 1234) -> dict:
    """Returns Winogrande partial-scoring accuracy of `lm`."""
    return metrics(docs, [ll for ll, _ in lm.loglikelihood(requests(docs, shots, seed))])
