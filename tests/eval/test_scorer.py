"""Checkpoint loading, the batched scorer against a plain forward pass, sliding windows, bits-per-byte."""
import functools
import math

import jax
import numpy as np
import pytest

from gopher_jax.eval import checkpoint_loader, perplexity
from gopher_jax.eval.scorer import Scorer, rolling_windows
from gopher_jax.eval.text_lm import TextLM
from gopher_jax.model.decoder import Decoder


def test_loader_restores_the_saved_step(loaded, run_dir):
    assert loaded.step == 3 and loaded.config.d_model == 64 and loaded.tokenizer.get_piece_size() == 4096
    with pytest.raises(FileNotFoundError, match="available steps: \\[3\\]"):
        checkpoint_loader.load(run_dir, step=7)


def test_loader_errors_name_the_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.gin"):
        checkpoint_loader.load(str(tmp_path))


def _logits(loaded, tokens):
    """Plain forward pass of one row, padded to 64 (one compile; causal, so padding is invisible)."""
    padded = np.zeros((1, 64), np.int32)
    padded[0, :len(tokens)] = tokens
    return np.asarray(_forward(loaded.config, loaded.params, padded))[0, :len(tokens)]


@functools.partial(jax.jit, static_argnums=0)
def _forward(config, params, tokens):
    return Decoder(config).apply({"params": params}, tokens)


def _reference(loaded, ctx, cont):
    full = np.asarray([list(ctx) + list(cont)], np.int32)
    logp = np.asarray(jax.nn.log_softmax(_logits(loaded, full[0, :-1]), -1))
    tgt = full[0, 1:]
    span = range(len(ctx) - 1, full.shape[1] - 1)
    return sum(logp[i, tgt[i]] for i in span), all(np.argmax(logp[i]) == tgt[i] for i in span)


def test_scorer_matches_a_plain_forward_pass_for_any_batching(loaded):
    rng = np.random.default_rng(0)
    reqs = [(rng.integers(3, 4096, n).tolist(), rng.integers(3, 4096, m).tolist())
            for n, m in [(5, 1), (20, 4), (1, 7), (12, 2), (25, 3)]]
    a = Scorer.for_model(loaded.config, loaded.params, batch_size=4).loglikelihood(reqs)
    b = Scorer.for_model(loaded.config, loaded.params, batch_size=2).loglikelihood(reqs)
    for (la, ga), (lb, gb), (ctx, cont) in zip(a, b, reqs):
        ref, greedy = _reference(loaded, ctx, cont)
        assert la == pytest.approx(ref, abs=1e-3) and lb == pytest.approx(ref, abs=1e-3)
        assert ga == gb == greedy


def test_greedy_flag_is_true_only_when_every_token_is_the_argmax(loaded):
    scorer = Scorer.for_model(loaded.config, loaded.params, batch_size=2)
    ctx = [0, 100, 200, 300]
    best = int(np.argmax(_logits(loaded, ctx)[-1]))
    other = (best + 1) % 4096
    after = np.argsort(_logits(loaded, ctx + [best])[-1])  # ascending: [-1] the argmax, [-2] the runner-up
    greedy2, runner_up = int(after[-1]), int(after[-2])
    greedy_after_other = int(np.argmax(_logits(loaded, ctx + [other])[-1]))
    flags = [g for _, g in scorer.loglikelihood([
        (ctx, [best]), (ctx, [other]),  # one token: the argmax / not
        (ctx, [best, greedy2]),  # two argmax tokens
        (ctx, [best, runner_up]),  # the second token is not the argmax
        (ctx, [other, greedy_after_other])])]  # the first is not
    assert flags == [True, False, True, False, False]


@pytest.mark.parametrize("stride", [None, 16, 5])
def test_rolling_windows_score_every_token_once(stride):
    tokens = list(range(10, 110))
    reqs = rolling_windows(tokens, prefix=0, window=32, stride=stride)
    assert [t for _, cont in reqs for t in cont] == tokens
    for ctx, cont in reqs:
        assert len(ctx) + len(cont) - 1 <= 32 and ctx[-1:] != [] and (ctx == [0] or ctx[-1] + 1 == cont[0])
    if stride == 5:  # later windows fill the window with context
        assert all(len(ctx) == 32 + 1 - len(cont) for ctx, cont in reqs[1:])


def _window_log_likelihood(loaded, ids, window, stride):
    """Sum of log p(token) over `ids` from plain forward passes and numpy, windowed by hand: each
    token t (0-based) in chunk [c, c + stride) is predicted from the `window` inputs ending at t - 1,
    the first chunk from the document start (input token 0, as training packs documents)."""
    total, start = 0.0, 0
    while start < len(ids):
        first = start == 0
        end = min(len(ids), start + (window if first else stride))
        inputs = ([0] + ids[:end - 1]) if first else ids[max(0, end - 1 - window):end - 1]
        logits = _logits(loaded, inputs).astype(np.float64)
        logp = logits - logits.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        rows = np.arange(len(inputs) - (end - start), len(inputs))
        total += float(logp[rows, ids[start:end]].sum())
        start = end
    return total


@pytest.mark.parametrize("stride", [None, 32])
def test_bits_per_byte_of_a_text_file(loaded, tmp_path, stride):
    text = "The quick brown fox jumps over the lazy dog. " * 8 + "Ünïcödé bytes count as bytes."
    path = tmp_path / "doc.txt"
    path.write_text(text, encoding="utf-8")
    lm = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=4), loaded.tokenizer)
    m = perplexity.evaluate_text(lm, str(path), stride=stride)
    ids = [int(t) for t in loaded.tokenizer.encode(text)]
    assert len(ids) > 64  # more than one window
    num_bytes = len(text.encode("utf-8"))
    expected = -_window_log_likelihood(loaded, ids, 64, stride or 64) / math.log(2) / num_bytes
    assert m["tokens"] == len(ids) and m["bytes"] == num_bytes > len(text)
    assert m["bits_per_byte"] == pytest.approx(expected, rel=1e-5)
    assert m["ppl"] == pytest.approx(math.exp(m["loss"]))
    # A random model is near uniform over 4096 tokens: about ln(4096) nats per token.
    assert abs(m["loss"] - math.log(4096)) < 1.0
