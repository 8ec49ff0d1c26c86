"""The shared batched scorer: log P(continuation | context) and whether greedy decoding reproduces it.

Every task (LAMBADA, multiple choice, Winogrande, perplexity) and the lm-eval adapter reduce to
`loglikelihood(requests)`. Requests are token ids; the forward pass is jitted once per bucketed
length (powers of two up to the model's window), rows padded to a fixed batch, and only the
target log-probs and greedy flags come back to the host (never [B, T, vocab]).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


def bucket_length(n: int, max_len: int, minimum: int = 16) -> int:
    """Returns the smallest power of two >= n (at least `minimum`), capped at max_len."""
    b = minimum
    while b < n:
        b *= 2
    return min(b, max_len)


class Scorer:
    """Scores requests with `logits_fn(tokens [B, T] int32) -> logits [B, T, V]` (jit-friendly).

    `window` is the longest input the model takes; longer requests keep their continuation and
    the end of their context (as lm-eval truncates from the left).
    """

    def __init__(self, logits_fn: Callable, window: int, batch_size: int = 16):
        self.window = window
        self.batch_size = batch_size
        self.tokens_scored = 0
        self.seconds = 0.0

        @jax.jit
        def score(tokens, targets):
            logp = jax.nn.log_softmax(logits_fn(tokens).astype(jnp.float32), axis=-1)
            target_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
            greedy = jnp.argmax(logp, axis=-1) == targets
            return target_logp, greedy

        self._score = score

    @classmethod
    def for_model(cls, config, params, batch_size: int = 16, window: int | None = None) -> "Scorer":
        """Returns a Scorer over Decoder(config) with `params` (window defaults to config.max_len)."""
        from gopher_jax.model.decoder import Decoder

        model = Decoder(config)
        return cls(lambda tokens: model.apply({"params": params}, tokens), window or config.max_len, batch_size)

    def loglikelihood(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
        """Returns (sum of continuation log-probs in nats, every continuation token is the argmax) per request."""
        rows = []
        for i, (ctx, cont) in enumerate(requests):
            if len(cont) == 0:
                raise ValueError(f"request {i} has an empty continuation; nothing to score")
            if len(ctx) == 0:
                raise ValueError(f"request {i} has an empty context; prefix a document-start token (EOS)")
            full = list(ctx) + list(cont)
            full = full[-(self.window + 1):]
            rows.append((i, full[:-1], full[1:], len(cont)))
        # Longest first, like lm-eval: similar lengths share a bucket and OOM shows up at once.
        rows.sort(key=lambda r: -len(r[1]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        start = time.perf_counter()
        for s in range(0, len(rows), self.batch_size):
            chunk = rows[s:s + self.batch_size]
            width = bucket_length(len(chunk[0][1]), self.window)
            tokens = np.zeros((self.batch_size, width), np.int32)
            targets = np.zeros_like(tokens)
            for r, (_, inp, tgt, _) in enumerate(chunk):
                tokens[r, :len(inp)] = inp  # right padding: causal, so real positions never see it
                targets[r, :len(tgt)] = tgt
            logp, greedy = jax.device_get(self._score(tokens, targets))
            for r, (i, inp, _, n) in enumerate(chunk):
                span = slice(len(inp) - n, len(inp))
                out[i] = (float(np.sum(logp[r, span], dtype=np.float64)), bool(np.all(greedy[r, span])))
                self.tokens_scored += len(inp)
        self.seconds += time.perf_counter() - start
        return out


def rolling_windows(tokens: Sequence[int], prefix: int, window: int, stride: int | None = None) -> list[Request]:
    """Returns requests that score every token of `tokens` exactly once, sliding a window.

    The first window conditions on `prefix` (document start); each later window scores the next
    `stride` tokens with up to window - stride tokens of preceding context (stride = window gives
    disjoint windows, lm-eval's loglikelihood_rolling; smaller strides give each token more context).
    """
    stride = stride or window
    if not 0 < stride <= window:
        raise ValueError(f"stride={stride} must be in (0, window={window}]")
    tokens = list(tokens)
    reqs: list[Request] = []
    first = min(window, len(tokens))
    if first:
        reqs.append(([prefix], tokens[:first]))
    pos = first
    while pos < len(tokens):
        n = min(stride, len(tokens) - pos)
        ctx_start = max(0, pos + n - window - 1)  # input = ctx + cont[:-1] must fit the window
        reqs.append((tokens[ctx_start:pos], tokens[pos:pos + n]))
        pos += n
    return reqs

