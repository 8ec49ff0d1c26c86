"""The shared batched scorer: log P(continuation | context) and whether greedy decoding reproduces it.

Every task (LAMBADA, multiple choice, Winogrande, perplexity) and the lm-eval adapter reduce to
`loglikelihood(requests)`. Requests are token ids; the forward pass is jitted once per bucketed
length (powers of two up to the model's window), rows padded to a fixed batch, and only the
target log-probs and greedy flags come back to the host (never [B, T, vocab]). On a mesh the
batch is sharded over data x fsdp and the params as in training (docs/evaluation.md).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.data.tokenizer import SEGMENT_START_ID

Request = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)


def bucket_length(n: int, max_len: int, minimum: int = 16) -> int:
    """Returns the smallest power of two >= n (at least `minimum`), capped at max_len."""
    b = minimum
    while b < n:
        b *= 2
    return min(b, max_len)


class Scorer:
    """Scores requests with a jit-friendly forward pass returning logits [B, T, V].

    Either `logits_fn(tokens [B, T] int32)` (closing over its params), or `logits_fn(params, tokens)`
    with `params` given: then params are an argument of the jitted step, not a constant. With a
    `mesh`, batches are sharded over its batch axes (`rules`' `batch` entry: data and fsdp),
    params with `param_shardings` (default replicated), the step is jitted with in_shardings and
    runs under the mesh and rules; the batch is padded up to a multiple of the batch-shard count.
    `window` is the longest input the model takes; longer requests keep their continuation and
    the end of their context (as lm-eval truncates from the left).
    """

    def __init__(self, logits_fn: Callable, window: int, batch_size: int = 16, *, params=None, mesh=None,
                 rules=None, param_shardings=None):
        self.window = window
        self.tokens_scored = 0
        self.seconds = 0.0
        self.mesh, self.rules = mesh, rules
        apply = logits_fn if params is not None else (lambda _, tokens: logits_fn(tokens))

        def score(params, tokens, targets):
            logp = jax.nn.log_softmax(apply(params, tokens).astype(jnp.float32), axis=-1)
            target_logp = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
            greedy = jnp.argmax(logp, axis=-1) == targets
            return target_logp, greedy

        if mesh is None:
            self.batch_shards = 1
            self._batch_sharding = None
            self._score = jax.jit(score)
        else:
            from jax.sharding import NamedSharding, PartitionSpec

            from gopher_jax.parallel.rules import DEFAULT_RULES, batch_sharding

            self.rules = tuple(rules if rules is not None else DEFAULT_RULES)
            self._batch_sharding = batch_sharding(mesh, self.rules)
            self.batch_shards = batch_shard_count(self._batch_sharding)
            if param_shardings is None:
                param_shardings = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), params)
            if params is not None:  # a no-op when the loader already placed them so
                params = jax.device_put(params, param_shardings)
            self._score = jax.jit(score, in_shardings=(param_shardings, self._batch_sharding, self._batch_sharding),
                                  out_shardings=(self._batch_sharding, self._batch_sharding))
        self.params = params
        # Every batch has the same row count, a multiple of the batch shards (padding rows are zeros).
        self.batch_size = -(-batch_size // self.batch_shards) * self.batch_shards

    @classmethod
    def for_model(cls, config, params, batch_size: int = 16, window: int | None = None, *, mesh=None,
                  rules=None, param_shardings=None) -> "Scorer":
        """Returns a Scorer over Decoder(config) with `params` (window defaults to config.max_len),
        on one device or, with `mesh`, sharded (see the class docstring; `checkpoint_loader.load`
        returns the mesh, rules and param shardings to pass)."""
        from gopher_jax.model.decoder import Decoder

        model = Decoder(config)
        return cls(lambda p, tokens: model.apply({"params": p}, tokens), window or config.max_len, batch_size,
                   params=params, mesh=mesh, rules=rules, param_shardings=param_shardings)

    @classmethod
    def for_loaded(cls, loaded, batch_size: int = 16, window: int | None = None) -> "Scorer":
        """Returns the Scorer of a `checkpoint_loader.LoadedModel`, on the mesh it was loaded onto."""
        return cls.for_model(loaded.config, loaded.params, batch_size, window, mesh=loaded.mesh,
                             rules=loaded.rules, param_shardings=loaded.param_shardings)

    def _run(self, tokens: np.ndarray, targets: np.ndarray):
        if self.mesh is None:
            return jax.device_get(self._score(self.params, tokens, targets))
        import flax.linen as nn

        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            tokens = jax.device_put(tokens, self._batch_sharding)
            targets = jax.device_put(targets, self._batch_sharding)
            return jax.device_get(self._score(self.params, tokens, targets))

    def loglikelihood(self, requests: Sequence[Request]) -> list[tuple[float, bool]]:
        """Returns (sum of continuation log-probs in nats, every continuation token is the argmax) per request."""
        rows = []
        for i, (ctx, cont) in enumerate(requests):
            if len(cont) == 0:
                raise ValueError(f"request {i} has an empty continuation; nothing to score")
            if len(ctx) == 0:
                raise ValueError(f"request {i} has an empty context; prefix the document-start token "
                                 f"(tokenizer.SEGMENT_START_ID = {SEGMENT_START_ID}, as training does)")
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
            logp, greedy = self._run(tokens, targets)
            for r, (i, inp, _, n) in enumerate(chunk):
                span = slice(len(inp) - n, len(inp))
                out[i] = (float(np.sum(logp[r, span], dtype=np.float64)), bool(np.all(greedy[r, span])))
                self.tokens_scored += len(inp)
        self.seconds += time.perf_counter() - start
        return out


def batch_shard_count(sharding) -> int:
    """Returns how many ways a [batch, length] NamedSharding splits the batch axis."""
    entry = sharding.spec[0] if len(sharding.spec) else None
    names = entry if isinstance(entry, tuple) else (entry,) if entry else ()
    n = 1
    for name in names:
        n *= sharding.mesh.shape[name]
    return n


def rolling_windows(tokens: Sequence[int], prefix: int, window: int, stride: int | None = None) -> list[Request]:
    """Returns requests that score every token of `tokens` exactly once, sliding a window.

    The first window conditions on `prefix` (the document-start token, SEGMENT_START_ID); each
    later window scores the next `stride` tokens with up to window - stride tokens of preceding
    context (stride = window gives disjoint windows, lm-eval's loglikelihood_rolling; smaller
    strides give each token more context).
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

