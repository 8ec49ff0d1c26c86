"""SentencePiece training: exact round-trips, byte fallback, the requested vocab size, the CLI."""
import json
import os
import shutil

import pytest

from gopher_jax import cli
from gopher_jax.data import embedded_mixture
from gopher_jax.data import tokenizer

TEXT = "The Prime Minister said on Tuesday that 1,234 firefighters were fighting the blaze.\n\nNew paragraph."


@pytest.fixture(scope="module")
def train_texts():
    return embedded_mixture.documents("train")[:120]  # a slice keeps each training run well under 1 s


@pytest.fixture(scope="module")
def small_model(train_texts, tmp_path_factory):
    path = tokenizer.train_tokenizer(
        train_texts, str(tmp_path_factory.mktemp("tok") / "sp1k"), vocab_size=1000)
    return tokenizer.load(path)


def test_vocab_size_and_special_ids(small_model):
    assert small_model.get_piece_size() == 1000
    assert (small_model.pad_id(), small_model.eos_id(), small_model.unk_id(), small_model.bos_id()) == (
        tokenizer.PAD_ID, tokenizer.EOS_ID, tokenizer.UNK_ID, -1)


def test_round_trip_is_exact(small_model, train_texts):
    for text in (TEXT, train_texts[0], "  two  spaces\tand a tab\n"):
        assert small_model.decode(small_model.encode(text)) == text


def test_byte_fallback_encodes_unseen_characters(small_model):
    text = "Ωμέγα 日本語 😀 ∮"
    ids = small_model.encode(text)
    assert tokenizer.UNK_ID not in ids
    assert any(small_model.id_to_piece(i).startswith("<0x") for i in ids)
    assert small_model.decode(ids) == text


def test_digits_are_split(small_model):
    pieces = small_model.encode("2024", out_type=str)
    assert [p.strip("▁") for p in pieces if p.strip("▁")] == ["2", "0", "2", "4"]


def test_nfkc_option_normalises_like_gopher(train_texts, tmp_path):
    sp = tokenizer.load(tokenizer.train_tokenizer(
        train_texts, str(tmp_path / "nfkc"), vocab_size=600, normalization="nfkc"))
    assert sp.decode(sp.encode("ﬁne ①")) == "fine 1"  # identity would keep the ligature and circle


def test_bad_options_name_the_value(train_texts, tmp_path):
    with pytest.raises(ValueError, match="normalization='nfc'"):
        tokenizer.train_tokenizer(train_texts, str(tmp_path / "x"), vocab_size=600, normalization="nfc")
    with pytest.raises(ValueError, match="vocab_size=100"):
        tokenizer.train_tokenizer(train_texts, str(tmp_path / "x"), vocab_size=100)
    with pytest.raises(ValueError, match="empty"):
        tokenizer.train_tokenizer([], str(tmp_path / "x"), vocab_size=600)


def test_ensure_embedded_tokenizer_trains_once(train_texts, tmp_path):
    # Reuse the processed corpus (saves ~10 s): the same folder under the new cache dir.
    from gopher_jax.data import embedded_mixture
    src = embedded_mixture.ensure_processed()
    dst = embedded_mixture.processed_dir(str(tmp_path))
    shutil.copytree(src, dst)
    path = tokenizer.ensure_embedded_tokenizer(600, cache_dir=str(tmp_path))
    mtime = os.path.getmtime(path)
    assert tokenizer.ensure_embedded_tokenizer(600, cache_dir=str(tmp_path)) == path
    assert os.path.getmtime(path) == mtime
    assert tokenizer.load(path).get_piece_size() == 600
    assert tokenizer.ensure_embedded_tokenizer(700, cache_dir=str(tmp_path)) != path


def test_cli_trains_from_jsonl(train_texts, tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"content": t}) + "\n" for t in train_texts[:60]))
    prefix = tmp_path / "out" / "sp"
    code = cli.main(["data", "train-tokenizer", f"--input={data}", "--text_key=content",
                     "--vocab_size=500", "--normalization=nfkc", f"--output_prefix={prefix}"])
    assert code == 0, capsys.readouterr().err
    assert os.path.isfile(f"{prefix}.model") and os.path.isfile(f"{prefix}.vocab")
    assert tokenizer.load(f"{prefix}.model").get_piece_size() == 500
    assert "500 pieces" in capsys.readouterr().out


def test_cli_reports_a_malformed_jsonl_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    code = cli.main(["data", "train-tokenizer", f"--input={data}", f"--output_prefix={tmp_path / 'sp'}"])
    assert code == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
