"""Eval and sampling condition exactly as training does: every document starts from input id 0.

seqio's packed decoder inputs are the targets shifted right with 0 at each segment start; the
`gopher-jax eval` path (TextLM -> rolling windows -> Scorer) and `gopher-jax sample` must feed the
same first token, or their losses are not the training loop's eval_loss on the same text.
"""
import json
import math

import jax
import numpy as np
import pytest

from gopher_jax import decode
from gopher_jax.data import tokenizer as tok
from gopher_jax.eval import perplexity
from gopher_jax.eval.scorer import Scorer
from gopher_jax.eval.text_lm import TextLM
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.evaluation import evaluate
from gopher_jax.train.sharded import build_trainer
from tests.fixtures.paths import C4
from tests.model.helpers import forward

SEQ_LEN = 128
MAX_DOC_TOKENS = 64  # documents (+ EOS) fit the scorer's 64-token window: one request each


def test_segment_start_is_seqios_shifted_in_pad():
    assert tok.SEGMENT_START_ID == tok.PAD_ID == 0 != tok.EOS_ID


def held_out_documents(encode, n=10):
    """The first n C4 documents (real text the model never saw), each cut to the most words whose
    tokens and EOS fit MAX_DOC_TOKENS."""
    docs = []
    with open(C4, encoding="utf-8") as f:
        for line, _ in zip(f, range(n)):
            words = json.loads(line)["text"].split(" ")[:MAX_DOC_TOKENS]
            while len(encode(" ".join(words))) + 1 > MAX_DOC_TOKENS:
                words.pop()
            docs.append(" ".join(words))
    return docs


def pack_like_seqio(docs, seq_len, rows):
    """Packs token lists into rows as seqio's DecoderFeatureConverter does: segment ids 1, 2, ...
    per row, positions from 0 in each segment, inputs = targets shifted right with 0 shifted in."""
    batch = {k: np.zeros((rows, seq_len), np.int32) for k in ("inputs", "targets", "segment_ids", "positions")}
    row, col, seg = 0, 0, 0
    for ids in docs:
        if col + len(ids) > seq_len:
            row, col, seg = row + 1, 0, 0
        seg += 1
        span = slice(col, col + len(ids))
        batch["targets"][row, span] = ids
        batch["inputs"][row, span] = [0] + ids[:-1]
        batch["segment_ids"][row, span] = seg
        batch["positions"][row, span] = np.arange(len(ids))
        col += len(ids)
    assert row < rows, "increase rows"
    batch["loss_weights"] = (batch["segment_ids"] > 0).astype(np.float32)
    return batch


def test_eval_loss_equals_the_training_loops_on_the_same_documents(loaded):
    params = jax.device_get(loaded.params)
    lm = TextLM(Scorer.for_model(loaded.config, params, batch_size=4), loaded.tokenizer)
    # Tokenised as seqio does for training (SentencePiece, then EOS appended).
    docs = [(text, lm.encode(text) + [tok.EOS_ID]) for text in held_out_documents(lm.encode)]
    assert all(len(ids) <= MAX_DOC_TOKENS for _, ids in docs)
    # `gopher-jax eval --task seqio`: document ids incl. EOS, each scored from the document start.
    ours = perplexity.evaluate_documents(lm.scorer, [(ids, text) for text, ids in docs], lm.prefix_id)
    # the training loop's held-out evaluation over packed batches of the same documents
    trainer = build_trainer(loaded.config, OptimizerConfig(), TrainConfig(steps=10, batch_size=4, seq_len=SEQ_LEN),
                            build_mesh(MeshConfig(data=-1), jax.devices()[:1]), DEFAULT_RULES)
    batches = [pack_like_seqio([ids for _, ids in docs[:6]], SEQ_LEN, 4),
               pack_like_seqio([ids for _, ids in docs[6:]], SEQ_LEN, 4)]
    assert sum(b["loss_weights"].sum() for b in batches) == ours["tokens"] == sum(len(i) for _, i in docs)
    with trainer.context():
        state = trainer.init()
    state = state.replace(params=jax.device_put(params, trainer.state_shardings.params))
    loop_loss = evaluate(trainer, state, batches)  # mean over the same token count: sums agree as well
    assert math.isfinite(loop_loss)
    assert ours["loss"] == pytest.approx(loop_loss, rel=1e-5)
    # The check can fail: conditioning on EOS (what eval did before) moves the loss far beyond 1e-5.
    eos_first = perplexity.evaluate_documents(lm.scorer, [(ids, text) for text, ids in docs], tok.EOS_ID)
    assert abs(eos_first["loss"] - loop_loss) / loop_loss > 1e-3


def test_sampling_starts_from_the_segment_start_token(loaded, monkeypatch):
    params = jax.device_get(loaded.params)
    seen = {}
    real = decode.sample_tokens

    def spy(config, params, prompts, sampling, **kw):
        seen["prompts"] = [list(p) for p in prompts]
        seen["logits"] = []
        return real(config, params, prompts, sampling, on_step=lambda lg, _: seen["logits"].append(lg), **kw)

    monkeypatch.setattr(decode, "sample_tokens", spy)
    prompt = "The quick brown fox"
    decode.generate(loaded.config, params, loaded.tokenizer, ["", prompt], decode.SamplingConfig(2, temperature=0.0))
    ids = [int(t) for t in loaded.tokenizer.encode(prompt)]
    assert seen["prompts"] == [[0], [0] + ids]
    # A training-style forward (one segment from position 0, input 0 first) of each prompt:
    # its last logits are the first decoded logits.
    for row, prompt_ids in enumerate(seen["prompts"]):
        ref = np.asarray(forward(loaded.config, params, np.asarray([prompt_ids])))[0, -1]
        np.testing.assert_allclose(seen["logits"][0][row], ref, atol=1e-4)
