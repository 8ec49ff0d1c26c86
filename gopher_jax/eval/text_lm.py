"""Strings in, scores out: lm-eval's tokenisation conventions on top of the token-level Scorer.

Both our task code and the lm-eval adapter go through `TextLM`, so they tokenise identically.
"""
from __future__ import annotations

import math
from typing import Sequence

from gopher_jax.data.tokenizer import SEGMENT_START_ID
from gopher_jax.eval.scorer import Scorer, rolling_windows


class TextLM:
    """Scores text with a Scorer and a SentencePiece tokenizer.

    Every request is prefixed with `prefix_id`, by default `tokenizer.SEGMENT_START_ID` (0): the
    input token every packed training document starts from (seqio shifts 0 in at each segment
    start), so scores condition exactly as training did and a document's loss here equals the
    training loop's eval loss on it. (GPT-2's EOT plays this role in lm-eval.)
    """

    def __init__(self, scorer: Scorer, tokenizer, prefix_id: int = SEGMENT_START_ID):
        self.scorer = scorer
        self.tokenizer = tokenizer
        self.prefix_id = prefix_id

    def encode(self, text: str) -> list[int]:
        """Returns the token ids of text (no prefix)."""
        return list(self.tokenizer.encode(text)) if text else []

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Returns (prefix + context ids, continuation ids) as lm-eval does: trailing spaces of the
        context move to the continuation, and the continuation is the tail of encode(context+continuation)."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        cont = whole[len(ctx):]
        if not cont:  # the continuation merged into the context's last token: score that token
            ctx, cont = whole[:-1], whole[-1:]
        return [self.prefix_id] + ctx, cont

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """Returns (log P(continuation | context) in nats, greedy) per (context, continuation) pair."""
        return self.scorer.loglikelihood([self.encode_pair(c, x) for c, x in pairs])

    def loglikelihood_rolling(self, texts: Sequence[str], stride: int | None = None) -> list[float]:
        """Returns the total log-likelihood (nats) of each whole text, scored with a sliding window."""
        out = []
        for text in texts:
            reqs = rolling_windows(self.encode(text), self.prefix_id, self.scorer.window, stride)
            out.append(sum(ll for ll, _ in self.scorer.loglikelihood(reqs)) if reqs else 0.0)
        return out


def bits_per_byte(total_nats: float, num_bytes: int) -> float:
    """Returns bits per UTF-8 byte from a total log-likelihood (nats, <= 0) and a byte count."""
    return -total_nats / math.log(2) / max(num_bytes, 1)
