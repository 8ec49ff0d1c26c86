"""Our SentencePiece model as a Hugging Face tokenizer that encodes exactly like SentencePiece.

Writes tokenizer.json (built with the `tokenizers` library from the .model's pieces, scores and
normalizer spec), tokenizer_config.json, special_tokens_map.json, and the .model itself as
tokenizer.model. `AutoTokenizer.from_pretrained(DIR)` then loads it with no custom code.

Why not `LlamaTokenizer`: transformers 5's LlamaTokenizer rebuilds its pipeline with a Metaspace
pre-tokenizer (prepend_scheme="first"), which skips SentencePiece's dummy prefix when the text
already starts with a space (" a" -> "▁a", SentencePiece: "▁▁a") and strips a leading space on
decode; our tokenizer keeps whitespace as written (remove_extra_whitespaces=False), so such texts
would tokenize differently. tokenizer.json with the generic fast-tokenizer class reproduces
SentencePiece: normalizer = escape spaces to "▁", then prepend "▁" (add_dummy_prefix); BPE with merges
ranked by piece score and byte fallback; the inverse decoder.

`tokenizer(text)` (special tokens on, transformers' default) prepends SEGMENT_START_ID (id 0, the
pad piece), the token every packed training document is read after; exported as `bos_token`.
`encode(text, add_special_tokens=False)` equals `SentencePieceProcessor.encode(text)`.

The exported `pad_token` is the EOS piece, not <pad>: <pad> is the start token that begins every
prompt, and transformers' `generate(ids, pad_token_id=tokenizer.pad_token_id)` without an attention
mask masks out every pad-id input (unless pad == eos), so a <pad> pad token would hide the start
token and change the continuation. Padding with EOS is safe: batches are padded with an attention
mask, and generate() infers no mask when pad == eos.

One documented difference: the control pieces (<pad>, </s>, <unk>) written literally inside a text
are plain text to SentencePiece; `split_special_tokens=true` makes transformers do the same.
"""
from __future__ import annotations

import json
import os
import shutil

from gopher_jax.atomic_write import atomic_write
from gopher_jax.data.tokenizer import SEGMENT_START_ID

# SentencePiece ModelProto.SentencePiece.Type values.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6
_BPE, _UNIGRAM = 2, 1


def _proto(model_path: str):
    from sentencepiece import sentencepiece_model_pb2

    m = sentencepiece_model_pb2.ModelProto()
    with open(model_path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def _bpe_merges(pieces) -> list[tuple[str, str]]:
    """Merges for an HF BPE model: every split of a normal piece into two normal pieces, ranked by
    the merged piece's score (SentencePiece's BPE merges the pair whose result scores highest)."""
    normal = {p.piece: (p.score, i) for i, p in enumerate(pieces) if p.type == _NORMAL}
    ranked = []
    for piece, (score, i) in normal.items():
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in normal and right in normal:
                ranked.append((-score, i, left, right))
    return [(left, right) for _, _, left, right in sorted(ranked)]


def build_tokenizer(model_path: str, start_id: int | None = SEGMENT_START_ID):
    """Returns a `tokenizers.Tokenizer` encoding like the SentencePiece model at `model_path`.

    With special tokens (transformers' default) it prepends `start_id` (None: nothing). Raises
    ValueError for SentencePiece options it cannot reproduce exactly.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    m = _proto(model_path)
    spec, trainer = m.normalizer_spec, m.trainer_spec
    if trainer.treat_whitespace_as_suffix:
        raise ValueError(f"{model_path}: treat_whitespace_as_suffix=true has no exact tokenizer.json equivalent")
    if any(p.type == _USER_DEFINED for p in m.pieces):
        raise ValueError(f"{model_path}: user-defined pieces are not exported (SentencePiece never merges them)")
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    unk = m.pieces[trainer.unk_id].piece
    if trainer.model_type == _BPE:
        model = models.BPE(vocab=vocab, merges=_bpe_merges(m.pieces), unk_token=unk, fuse_unk=True,
                           byte_fallback=trainer.byte_fallback)
    elif trainer.model_type == _UNIGRAM:
        model = models.Unigram([(p.piece, p.score) for p in m.pieces], unk_id=trainer.unk_id,
                               byte_fallback=trainer.byte_fallback)
    else:
        raise ValueError(f"{model_path}: SentencePiece model_type {trainer.model_type} is not BPE or unigram")
    tok = Tokenizer(model)
    # SentencePiece's order: character normalisation, whitespace cleanup, dummy prefix, escaping.
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.remove_extra_whitespaces:
        from tokenizers import Regex
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("▁", " ")]
    if trainer.byte_fallback:
        dec.append(decoders.ByteFallback())
    dec.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        dec.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(dec)
    specials = [p.piece for p in m.pieces if p.type in (_CONTROL, _UNKNOWN)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    if start_id is not None:
        # Every training document is read after this token (packing's segment start), so
        # `tokenizer(text)` prepends it, as Llama's tokenizer prepends its BOS.
        start = m.pieces[start_id].piece
        tok.post_processor = processors.TemplateProcessing(
            single=f"{start} $A", pair=f"{start} $A {start} $B", special_tokens=[(start, start_id)])
    return tok


def write_tokenizer(model_path: str, out_dir: str, *, max_len: int) -> dict:
    """Writes tokenizer.model/.json, tokenizer_config.json and special_tokens_map.json to `out_dir`.

    Returns {"eos_id", "pad_id", "start_id"} for config.json (start_id: the segment-start token,
    exported as BOS; pad_id: the EOS, see the module docstring; None without an EOS piece).
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    tok = build_tokenizer(model_path)

    def piece(i):
        return sp.id_to_piece(i) if 0 <= i < sp.get_piece_size() else None

    # Our models have no BOS piece; what they read first is SEGMENT_START_ID (= pad, 0), so that is the
    # BOS transformers and lm-eval see (lm-eval's prefix token for rolling loglikelihoods). The pad token
    # is the EOS, never the start token (module docstring).
    specials = {"eos_token": piece(sp.eos_id()), "unk_token": piece(sp.unk_id()), "pad_token": piece(sp.eos_id()),
                "bos_token": piece(SEGMENT_START_ID)}
    config = {
        # The generic fast tokenizer loads tokenizer.json as is (see the module docstring for why not LlamaTokenizer).
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "add_bos_token": True, "add_eos_token": False,
        # SentencePiece reads "</s>" inside a text as text; so does transformers with this set.
        "split_special_tokens": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_len,
    }
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(model_path, os.path.join(out_dir, "tokenizer.model"))
    atomic_write(os.path.join(out_dir, "tokenizer.json"), lambda f: f.write(tok.to_str()))
    atomic_write(os.path.join(out_dir, "tokenizer_config.json"), lambda f: json.dump(config, f, indent=2))
    atomic_write(os.path.join(out_dir, "special_tokens_map.json"),
                 lambda f: json.dump({k: v for k, v in specials.items() if v is not None}, f, indent=2))
    eos = sp.eos_id() if sp.eos_id() >= 0 else None
    return {"eos_id": eos, "pad_id": eos, "start_id": SEGMENT_START_ID}
