"""The exported tokenizer, loaded by transformers' AutoTokenizer, tokenizes real text exactly as our
SentencePiece model does (byte fallback, dummy prefix, runs of whitespace, digits, decode)."""
import json

import sentencepiece as spm
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gopher_jax.data.tokenizer import SEGMENT_START_ID
from gopher_jax.interop.tokenizer_export import write_tokenizer
from tests.fixtures import paths
from tests.interop import helpers


def _real_texts() -> list[str]:
    with open(paths.C4, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    with open(paths.gutenberg(2600), encoding="utf-8-sig") as f:
        book = f.read()[1_000:26_000]  # War and Peace: CRLF line ends, indentation, French accents
    texts += [book[i:i + 1500] for i in range(0, len(book), 1500)]  # many chunks start with spaces
    return texts + helpers.held_out_texts() + [
        " leading space", "  two leading", "trailing  ", "tabs\tand\nnewlines\r\n", "1234567 3.14159",
        "emoji 😀 中文 ελληνικά", "", " ", "</s> <pad> <unk> written as text"]


def test_autotokenizer_encodes_and_decodes_like_sentencepiece(tmp_path):
    model = helpers.train_tokenizer(str(tmp_path))
    out = str(tmp_path / "hf")
    ids = write_tokenizer(model, out, max_len=64)
    sp = spm.SentencePieceProcessor(model_file=model)
    tok = AutoTokenizer.from_pretrained(out)
    assert isinstance(tok, PreTrainedTokenizerFast)  # transformers' own class: no custom code
    # The pad token is the EOS, not <pad>: <pad> is the start token, which generate() would mask out.
    assert (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id) == (sp.eos_id(), sp.eos_id(), SEGMENT_START_ID)
    assert tok.pad_token_id != tok.bos_token_id == sp.pad_id()
    assert ids == {"eos_id": sp.eos_id(), "pad_id": sp.eos_id(), "start_id": SEGMENT_START_ID}
    texts = _real_texts()
    byte_fallback = 0
    for text in texts:
        expected = sp.encode(text)
        assert tok.encode(text, add_special_tokens=False) == expected, repr(text[:80])
        # transformers' default call prepends the segment-start token our models read documents after.
        assert tok(text)["input_ids"] == [SEGMENT_START_ID] + expected, repr(text[:80])
        assert tok.decode(expected) == sp.decode(expected) == text, repr(text[:80])
        byte_fallback += any(sp.id_to_piece(i).startswith("<0x") for i in expected)
    assert byte_fallback > 10  # the comparison really covered byte-fallback pieces
    assert len(texts) > 120
