"""Packed rows: seqio's decoder layout, exact bytes per row, deterministic packing."""
import numpy as np
import seqio
import tensorflow as tf

from gopher_jax.data import packing, tokenizer
from gopher_jax.data.token_bytes import TokenBytes


def _seqio_packed(docs, seq_len):
    ds = tf.data.Dataset.from_generator(lambda: ({"targets": np.asarray(d, np.int32)} for d in docs),
                                        output_signature={"targets": tf.TensorSpec([None], tf.int32)})
    out = seqio.DecoderFeatureConverter(pack=True)(ds, {"targets": seq_len})
    return list(out.as_numpy_iterator())


def test_features_equal_seqio_decoder_feature_converter():
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 500, size=n).tolist() + [1] for n in (5, 17, 3, 30, 9, 1, 12, 7)]
    rows = _seqio_packed(docs, 32)
    assert len(rows) >= 2 and any(r["decoder_segment_ids"].max() > 1 for r in rows)  # really packed
    for r in rows:
        ours = packing.decoder_features(r["decoder_target_tokens"][None], r["decoder_segment_ids"][None])
        np.testing.assert_array_equal(ours["inputs"][0], r["decoder_input_tokens"])
        np.testing.assert_array_equal(ours["positions"][0], r["decoder_positions"])
        np.testing.assert_array_equal(ours["loss_weights"][0], r["decoder_loss_weights"])


def test_every_token_lands_in_one_row_in_order_and_rows_are_full_or_tails():
    rng = np.random.default_rng(1)
    docs = [np.append(rng.integers(3, 100, size=n), 1) for n in rng.integers(1, 200, size=60)]
    rows = packing.pack_documents(((d, np.ones(len(d), np.int64)) for d in docs), seq_len=64)
    # Each segment of each row is a contiguous piece of one document; all pieces together are the documents.
    pieces = []
    for t, s in zip(rows.targets, rows.segment_ids):
        for seg in range(1, s.max() + 1):
            pieces.append(tuple(t[s == seg]))
    want = [tuple(d[i:i + 64]) for d in docs for i in range(0, len(d), 64)]
    assert sorted(pieces) == sorted(want)
    assert rows.row_bytes.sum() == sum(len(d) for d in docs)
    fill = (rows.segment_ids > 0).mean()
    assert fill > 0.9, fill  # first-fit keeps padding low


def test_packing_is_deterministic():
    docs = [(np.arange(3, 3 + n) % 50 + 3, np.ones(n, np.int64)) for n in (70, 5, 33, 64, 2, 90)]
    a, b = packing.pack_documents(docs, 32), packing.pack_documents(docs, 32)
    np.testing.assert_array_equal(a.targets, b.targets)
    np.testing.assert_array_equal(a.segment_ids, b.segment_ids)


def test_token_bytes_sum_to_the_text_and_match_sentencepiece_offsets(tmp_path):
    texts = ["Hello  world\n\nThe café — naïve 12345 \u4e2d\u6587 end", " leading space", "x", "tab\there\n"]
    sp_path = tokenizer.train_tokenizer(texts * 40 + ["the quick brown fox jumps over the lazy dog"] * 50,
                                        str(tmp_path / "spm"), vocab_size=300, model_type="bpe",
                                        normalization="identity", split_digits=True, byte_fallback=True)
    sp = tokenizer.load(sp_path)
    tb = TokenBytes(sp)
    for text in texts:
        ids = sp.encode(text) + [tokenizer.EOS_ID]
        got = tb.of(text, ids)
        assert got.sum() == len(text.encode("utf-8"))
        proto = sp.encode(text, return_type="proto")
        # Independent count: SentencePiece's own byte offsets of each piece.
        np.testing.assert_array_equal(got[:-1], [p.end - p.begin for p in proto.pieces])
        assert got[-1] == 0  # EOS covers no text
