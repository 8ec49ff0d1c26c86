"""How many UTF-8 bytes of the original text each token covers (for exact bits-per-byte).

Every token is assigned the bytes of text it stands for: a piece's own bytes ("▁" is one space),
one byte per byte-fallback piece, none for EOS/PAD, and the dummy-prefix "▁" SentencePiece adds
before a document's first token covers no text. Summed over a document this is exactly
len(text.encode("utf-8")); where it is not (a normalizing tokenizer that rewrites text), the
SentencePiece byte offsets of the real encoding are used instead, which always are.
"""
from __future__ import annotations

import numpy as np


class TokenBytes:
    """Per-token UTF-8 byte counts for one SentencePiece processor."""

    def __init__(self, sp):
        self.sp = sp
        n = sp.get_piece_size()
        table = np.zeros(n, np.int64)
        for i in range(n):
            if sp.is_control(i) or sp.is_unknown(i):
                continue
            if sp.is_byte(i):
                table[i] = 1
            else:
                table[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
        self.table = table
        self._starts_with_space = np.array(
            [sp.id_to_piece(i).startswith("\u2581") and not sp.is_byte(i) for i in range(n)])

    def of(self, text: str, ids) -> np.ndarray:
        """Returns the bytes of text covered by each of `ids` (its tokens, optionally + EOS)."""
        ids = np.asarray(ids, np.int64)
        out = self.table[ids].copy()
        # The dummy prefix: the first token's leading "▁" is not in the text unless the text has a space there.
        if out.size and self._starts_with_space[ids[0]] and not text.startswith(" "):
            out[0] -= 1
        if int(out.sum()) == len(text.encode("utf-8")):
            return out
        return self._from_offsets(text, ids)

    def _from_offsets(self, text: str, ids: np.ndarray) -> np.ndarray:
        proto = self.sp.encode(text, return_type="proto")
        pieces = list(proto.pieces)
        if [p.id for p in pieces] != ids[:len(pieces)].tolist():
            raise ValueError("token ids do not match this tokenizer's encoding of the text; the task was "
                             "tokenized with another vocabulary")
        out = np.zeros(len(ids), np.int64)
        for j, p in enumerate(pieces):
            out[j] = p.end - p.begin
        return out

