"""Multiple choice by comparing log-likelihoods of the candidates (lm-eval's output_type multiple_choice).

acc       argmax of log P(' ' + choice | context)
acc_norm  argmax of log P / len(choice) in characters — lm-eval's length normalisation
acc_answer_norm (RACE-style, Gopher/GPT-3): argmax of log P(choice | context) - log P(choice | 'Answer:')
"""
from __future__ import annotations

import numpy as np

from gopher_jax.eval.tasks.fewshot import fewshot_prefix

TARGET_DELIMITER = " "


def render(doc: dict) -> str:
    """A solved example for few-shot prompts: query and its gold answer."""
    return doc["query"] + TARGET_DELIMITER + doc["choices"][doc["gold"]]


def requests(docs: list[dict], shots: int = 0, seed: int = 1234, answer_context: str = "") -> list[tuple[str, str]]:
    """Returns the flat list of (context, continuation) pairs: every choice of every doc, then (with
    answer_context) every choice again after just that string."""
    out = []
    for i, d in enumerate(docs):
        ctx = fewshot_prefix(docs, i, shots, seed, render) + d["query"]
        out += [(ctx, TARGET_DELIMITER + c) for c in d["choices"]]
    if answer_context:
        for d in docs:
            out += [(answer_context, TARGET_DELIMITER + c) for c in d["choices"]]
    return out


def metrics(docs: list[dict], lls: list[float], answer_context: bool = False) -> dict:
    """Returns {'acc', 'acc_norm'[, 'acc_answer_norm'], 'n'} from log-likelihoods in request order."""
    sizes = [len(d["choices"]) for d in docs]
    total = sum(sizes)
    if len(lls) != total * (2 if answer_context else 1):
        raise ValueError(f"got {len(lls)} log-likelihoods for {total} choices")
    acc = acc_norm = acc_ans = 0.0
    k = 0
    for d, n in zip(docs, sizes):
        ll = np.asarray(lls[k:k + n], np.float64)
        chars = np.asarray([float(len(c)) for c in d["choices"]])
        acc += float(np.argmax(ll) == d["gold"])
        acc_norm += float(np.argmax(ll / chars) == d["gold"])
        if answer_context:
            uncond = np.asarray(lls[total + k:total + k + n], np.float64)
            acc_ans += float(np.argmax(ll - uncond) == d["gold"])
        k += n
    out = {"acc": acc / len(docs), "acc_norm": acc_norm / len(docs), "n": len(docs)}
    if answer_context:
        out["acc_answer_norm"] = acc_ans / len(docs)
    return out


def evaluate(lm, docs: list[dict], shots: int = 0, seed: int = 1234, answer_context: str = "") -> dict:
    """Returns multiple-choice metrics of `lm` on {query, choices, gold} docs."""
    results = lm.loglikelihood(requests(docs, shots, seed, answer_context))
    return metrics(docs, [ll for ll, _ in results], bool(answer_context))
