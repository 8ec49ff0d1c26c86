"""Sampling with a KV cache: greedy, temperature, top-k, top-p, stop sequences, batches.

Prompts of different lengths are left-padded into one batch (padding has segment id 0 and is
never attended to); each row's positions start at 0 at its first real token. The prompt is run
once through `Decoder(..., decode=True)` to fill the cache, then one token per step.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gopher_jax.data.tokenizer import SEGMENT_START_ID
from gopher_jax.model.config import ModelConfig
from gopher_jax.model.decoder import Decoder, init_cache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next token. temperature 0 = greedy; top_k 0 and top_p 1.0 = off."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be positive")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 = off)")


def left_pad(prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (tokens, segment_ids, positions) [B, P] int32 with prompts right-aligned."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError(f"every prompt needs at least one token (start it with SEGMENT_START_ID="
                         f"{SEGMENT_START_ID}, as `generate` does)")
    width = max(len(p) for p in prompts)
    tokens = np.zeros((len(prompts), width), np.int32)
    segs = np.zeros_like(tokens)
    positions = np.zeros_like(tokens)
    for r, p in enumerate(prompts):
        pad = width - len(p)
        tokens[r, pad:] = p
        segs[r, pad:] = 1
        positions[r, pad:] = np.arange(len(p))
    return tokens, segs, positions


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def decode_step(config: ModelConfig, params, cache, tokens, segment_ids, positions):
    """Returns (float32 logits [B, T, vocab], updated cache) after appending T tokens to the cache."""
    logits, mutated = Decoder(config).apply({"params": params, "cache": cache}, tokens, segment_ids, positions,
                                            decode=True, mutable=["cache"])
    return logits, mutated["cache"]


def filter_logits(logits: jnp.ndarray, temperature: float, top_k: int, top_p: float) -> jnp.ndarray:
    """Returns [B, V] logits scaled by 1/temperature with tokens outside top-k / nucleus top-p at -inf."""
    logits = logits.astype(jnp.float32) / temperature
    if top_k:
        kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
        before = jnp.cumsum(probs, axis=-1) - probs
        keep_sorted = before < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def pick(logits, temperature: float, top_k: int, top_p: float, rng):
    """Returns [B] int32 next tokens from [B, V] logits (argmax when temperature == 0)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits, temperature, top_k, top_p)).astype(jnp.int32)


def sample_tokens(config: ModelConfig, params, prompts: Sequence[Sequence[int]], sampling: SamplingConfig,
                  *, eos_id: int | None = None, should_stop: Callable[[int, list[int]], bool] | None = None,
                  on_step: Callable[[np.ndarray, np.ndarray], None] | None = None) -> list[list[int]]:
    """Returns each prompt's generated token ids (prompt excluded).

    A row stops at `eos_id` (excluded from the output) or when `should_stop(row, generated)` is
    true (e.g. a stop string appeared); the batch stops when every row has. `on_step(logits,
    tokens)` sees each step's [B, vocab] logits and chosen tokens (tests compare them).
    """
    tokens, segs, positions = left_pad(prompts)
    b, width = tokens.shape
    total = width + sampling.max_new_tokens
    if config.position == "learned" and total > config.max_len:
        raise ValueError(f"prompt ({width}) + max_new_tokens ({sampling.max_new_tokens}) = {total} exceeds the "
                         f"learned position table (ModelConfig.max_len={config.max_len}); shorten one of them")
    cache = init_cache(config, b, total)
    logits, cache = decode_step(config, params, cache, jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(positions))
    last = logits[:, -1]
    next_pos = positions[:, -1] + 1
    rng = jax.random.key(sampling.seed)
    out: list[list[int]] = [[] for _ in range(b)]
    done = np.zeros(b, bool)
    ones = jnp.ones((b, 1), jnp.int32)
    for _ in range(sampling.max_new_tokens):
        rng, sub = jax.random.split(rng)
        chosen = pick(last, float(sampling.temperature), int(sampling.top_k), float(sampling.top_p), sub)
        chosen_np = np.asarray(chosen)
        if on_step is not None:
            on_step(np.asarray(last), chosen_np)
        for r in range(b):
            if done[r]:
                continue
            if eos_id is not None and chosen_np[r] == eos_id:
                done[r] = True
                continue
            out[r].append(int(chosen_np[r]))
            if should_stop is not None and should_stop(r, out[r]):
                done[r] = True
        if done.all():
            break
        logits, cache = decode_step(config, params, cache, chosen[:, None], ones,
                                    jnp.asarray(next_pos[:, None], jnp.int32))
        last = logits[:, -1]
        next_pos = next_pos + 1
    return out


def generate(config: ModelConfig, params, tokenizer, prompts: Sequence[str], sampling: SamplingConfig,
             *, stop: Sequence[str] = ()) -> list[str]:
    """Returns one completion string per prompt, cut before the first stop sequence.

    Prompts start with `tokenizer.SEGMENT_START_ID` (0), the input every packed training document
    starts from (as the eval scorer's requests do); generating EOS ends a row.
    """
    eos = tokenizer.eos_id() if tokenizer.eos_id() >= 0 else None
    ids = [[SEGMENT_START_ID] + list(tokenizer.encode(p)) for p in prompts]

    def should_stop(_row, generated):
        text = tokenizer.decode(generated)
        return any(s in text for s in stop)

    outs = sample_tokens(config, params, ids, sampling, eos_id=eos, should_stop=should_stop if stop else None)
    # Decode prompt + completion and drop the prompt's text: SentencePiece drops the leading space
    # of a sequence's first piece, which would glue the completion to the prompt's last word.
    texts = []
    for p, o in zip(ids, outs):
        prompt_text = tokenizer.decode(p)
        texts.append(cut_at_stop(tokenizer.decode(p + o)[len(prompt_text):], stop))
    return texts


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Returns text up to (not including) the earliest stop sequence."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and i >= 0:
            cut = min(cut, i)
    return text[:cut]
