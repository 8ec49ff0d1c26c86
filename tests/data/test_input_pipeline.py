"""seqio's streaming path (make_batches) over the embedded mixture: packed, sharded, resumable by replay."""
import json
import re

import gin
import numpy as np
import pytest
import seqio

import data_tasks
from gopher_jax.data import input_pipeline, tokenizer
from gopher_jax.data.manifest import read_manifest

BATCH, SEQ = 8, 64
# Held-out passes use longer rows so that whole news articles (~200 tokens) get packed together.
EVAL_SEQ = 512


@pytest.fixture(scope="module")
def tasks():
    vocab_path = tokenizer.ensure_embedded_tokenizer(4096)
    # Train on the mixture; the held-out passes read one component's validation split.
    return vocab_path, (data_tasks.register_for_training(vocab_path, verbose=False), "embedded_news")


def _train_batches(tasks, **overrides):
    kwargs = dict(batch_size=BATCH, seq_len=SEQ, seed=3, shuffle=True, repeat=True,
                  shuffle_buffer_size=64)
    kwargs.update(overrides)
    return input_pipeline.make_batches(tasks[1][0], **kwargs)


@pytest.fixture(scope="module")
def run(tasks):
    """One training pipeline read like a run that checkpoints after 7 batches: (batches, state at 7)."""
    it = _train_batches(tasks)
    batches = [next(it) for _ in range(7)]
    state = json.loads(json.dumps(it.get_state()))  # as stored in a checkpoint
    batches += [next(it) for _ in range(3)]
    return batches, state


@pytest.fixture(scope="module")
def batch(run):
    return run[0][0]


def test_shapes_and_dtypes(batch):
    expected = {"inputs": np.int32, "targets": np.int32, "loss_weights": np.float32,
                "segment_ids": np.int32, "positions": np.int32}
    assert set(batch) == set(expected)
    for k, dtype in expected.items():
        assert batch[k].shape == (BATCH, SEQ) and batch[k].dtype == dtype, k


def test_packing_separates_documents(eval_passes):
    seg = np.concatenate([b["segment_ids"] for b in eval_passes[0]])
    pos = np.concatenate([b["positions"] for b in eval_passes[0]])
    targets = np.concatenate([b["targets"] for b in eval_passes[0]])
    assert seg.max() > 1  # short documents share rows
    # every held-out document ends in exactly one EOS, at the end of its last segment
    from gopher_jax.data import embedded_mixture
    news = read_manifest(embedded_mixture.ensure_processed()).components["news"].splits["validation"]
    assert (targets == tokenizer.EOS_ID).sum() == news.documents
    ends = (seg > 0) & (np.pad(seg[:, 1:], ((0, 0), (0, 1))) != seg)
    assert np.all(ends[targets == tokenizer.EOS_ID])
    for row in range(len(seg)):
        starts = np.flatnonzero(np.diff(seg[row], prepend=-1) != 0)
        for s in starts:  # positions restart at 0 in every segment
            if seg[row, s]:
                assert pos[row, s] == 0
        same = (seg[row, 1:] == seg[row, :-1]) & (seg[row, 1:] > 0)
        assert np.all(pos[row, 1:][same] == pos[row, :-1][same] + 1)


def test_targets_are_inputs_shifted_within_a_segment(batch):
    seg = batch["segment_ids"]
    same = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    assert np.array_equal(batch["inputs"][:, 1:][same], batch["targets"][:, :-1][same])
    starts = (seg > 0) & ~np.pad(same, ((0, 0), (1, 0)))
    assert np.all(batch["inputs"][starts] == 0)  # each segment starts from the pad/BOS id


def test_loss_weights_zero_exactly_on_padding(batch):
    padding = batch["segment_ids"] == 0
    assert np.all(batch["loss_weights"][padding] == 0)
    assert np.all(batch["targets"][padding] == 0)
    assert np.all(batch["loss_weights"][~padding] == 1)


def test_decodes_to_real_english(tasks, run):
    vocab = seqio.SentencePieceVocabulary(tasks[0])
    text = " ".join(vocab.decode(row[row > 0].tolist()) for b in run[0] for row in b["targets"])
    words = re.findall(r"[a-z]+", text.lower())
    assert len(words) > 1000
    common = sum(w in {"the", "of", "and", "to", "in", "a", "is", "was", "for", "that"} for w in words)
    assert common / len(words) > 0.12, text[:500]


def _segments(batches):
    """Every packed segment as a tuple of its target tokens."""
    out = []
    for b in batches:
        for row, seg in zip(b["targets"], b["segment_ids"]):
            out += [tuple(row[seg == s]) for s in np.unique(seg[seg > 0])]
    return out


@pytest.fixture(scope="module")
def eval_passes(tasks):
    """One unshuffled pass over the held-out task: whole, and as shards 0 and 1 of 2."""
    kwargs = dict(batch_size=16, seq_len=EVAL_SEQ, seed=0, shuffle=False, repeat=False, split="validation")
    whole = list(input_pipeline.make_batches(tasks[1][1], **kwargs))
    shards = [list(input_pipeline.make_batches(tasks[1][1], shard_index=i, num_shards=2, **kwargs))
              for i in range(2)]
    return whole, shards


def test_shards_are_disjoint_and_cover_the_split(eval_passes):
    whole, shards = eval_passes
    whole, shards = _segments(whole), [_segments(s) for s in shards]
    assert shards[0] and shards[1]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(whole)


def test_one_pass_pads_the_last_batch(eval_passes):
    padded = 0
    for batches in [eval_passes[0]] + eval_passes[1]:
        assert all(b["inputs"].shape == (16, EVAL_SEQ) for b in batches)
        rows_used = (batches[-1]["segment_ids"] > 0).any(axis=1)
        n = rows_used.sum()
        assert n > 0 and rows_used[:n].all() and not rows_used[n:].any()  # padding rows come last
        assert np.all(batches[-1]["loss_weights"][~rows_used] == 0)
        padded += n < 16
    assert padded  # at least one pass really ended in a partial batch


def test_resume_is_exact(tasks, run):
    reference, state = run
    assert state["batches_consumed"] == 7
    restored = _train_batches(tasks, state=state)
    for expected in reference[7:]:
        got = next(restored)
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    assert restored.get_state()["batches_consumed"] == 10


def test_restoring_into_a_different_pipeline_is_refused(tasks):
    state = _train_batches(tasks).get_state()
    with pytest.raises(ValueError, match="seed=3, 4"):
        _train_batches(tasks, seed=4, state=state)


def test_unknown_task_says_how_to_register():
    with pytest.raises(ValueError, match="register_for_training"):
        input_pipeline.make_batches("no_such_task", batch_size=1, seq_len=8, seed=0, shuffle=False,
                                    repeat=False)


def test_registration_is_idempotent(tasks):
    vocab_path, names = tasks
    assert data_tasks.register_for_training(vocab_path, verbose=False) == names[0]


def test_unigram_entropy_and_bytes_per_token(tasks):
    eval_task = tasks[1][1]
    h = input_pipeline.unigram_entropy_nats(eval_task, split="validation")
    assert 5.0 < h < np.log(4096)  # a 4k vocab on English: ~6.6 nats, below uniform (8.3)
    assert input_pipeline.unigram_entropy_nats([np.array([5, 5, 7, 7, 0])]) == pytest.approx(np.log(2))
    assert 2.5 < input_pipeline.bytes_per_token(eval_task, split="validation") < 4.5


def test_gin_overrides_reach_the_pipeline(tasks):
    with gin.unlock_config():
        gin.parse_config("make_batches.shuffle_buffer_size = 123")
    try:
        it = input_pipeline.make_batches(tasks[1][0], batch_size=1, seq_len=8, seed=0, shuffle=True,
                                         repeat=True)
        assert it._shuffle_buffer_size == 123
    finally:
        gin.clear_config()


def test_shuffle_buffer_override_reaches_every_task_of_a_mixture(tasks):
    """seqio's Mixture.get_dataset has no shuffle_buffer_size: the override sets each task's while the
    pipeline is built (the mixture's first batch filled five 10,000-example buffers before), then restores."""
    mixture = seqio.get_mixture_or_task(tasks[1][0])
    assert isinstance(mixture, seqio.Mixture) and len(mixture.tasks) == 5
    registered = [t.shuffle_buffer_size for t in mixture.tasks]
    assert registered == [10_000] * 5
    with input_pipeline.task_shuffle_buffers(mixture, 16):
        assert [t.shuffle_buffer_size for t in mixture.tasks] == [16] * 5
    assert [t.shuffle_buffer_size for t in mixture.tasks] == registered

    class Seen(Exception):
        pass

    def spy(self, *args, **kwargs):  # the first task the mixture reads: what it would shuffle with
        raise Seen(self.shuffle_buffer_size, kwargs.get("shuffle_buffer_size"))

    original, seqio.Task.get_dataset = seqio.Task.get_dataset, spy
    try:
        with pytest.raises(Seen) as seen:
            next(_train_batches(tasks, shuffle_buffer_size=16))
    finally:
        seqio.Task.get_dataset = original
    assert seen.value.args == (16, None)  # read from the task, as seqio's Task.get_dataset does
    assert [t.shuffle_buffer_size for t in mixture.tasks] == registered  # restored after a failed build too
