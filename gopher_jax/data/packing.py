"""Packing tokenized documents into fixed-length rows, and the decoder features of a packed row.

A document (token ids ending in EOS) is cut into chunks of at most `seq_len` tokens, as
`input_pipeline.split_targets_to_length` does for seqio. Full-length chunks fill a row each; the
shorter tail chunks share rows, first-fit over a small window of open rows. A row stores only its
`targets` and `segment_ids` (1, 2, ... per chunk, 0 = padding); `decoder_features` derives the
other features exactly as `seqio.DecoderFeatureConverter(pack=True)` lays them out (the first input
of every segment is 0, positions restart per segment), so training on packed rows sees what seqio
packing would feed (tests/data/test_packing.py checks it against seqio itself).

Each row also carries the UTF-8 bytes of exactly the text its tokens cover (from SentencePiece's
byte offsets), so bits-per-byte over any set of rows divides by the bytes of exactly that text.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Iterator

import numpy as np

# Open rows that tail chunks may be placed into; more packs tighter, and costs O(window) per chunk.
OPEN_ROWS = 16


@dataclasses.dataclass
class PackedRows:
    """Rows of packed chunks: targets/segment_ids [rows, seq_len] int32, bytes [rows] int64."""

    targets: np.ndarray
    segment_ids: np.ndarray
    row_bytes: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.targets.shape[0])


def document_chunks(token_ids: np.ndarray, token_bytes: np.ndarray, seq_len: int
                    ) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (chunk token ids, chunk UTF-8 bytes) for consecutive pieces of at most seq_len tokens."""
    for start in range(0, len(token_ids), seq_len):
        yield token_ids[start:start + seq_len], int(token_bytes[start:start + seq_len].sum())


class RowPacker:
    """Packs chunks into rows of `seq_len` (first-fit over OPEN_ROWS open rows); deterministic."""

    def __init__(self, seq_len: int, open_rows: int = OPEN_ROWS):
        if seq_len < 2:
            raise ValueError(f"seq_len={seq_len} must be at least 2 to pack documents")
        self.seq_len = seq_len
        self.open_rows = open_rows
        self._open: list[list] = []  # [used, [chunks], bytes]
        self._done: list[tuple[list[np.ndarray], int]] = []

    def add(self, chunk: np.ndarray, n_bytes: int) -> None:
        """Places one chunk (len <= seq_len) into a row."""
        n = len(chunk)
        if n == 0:
            return
        if n == self.seq_len:
            self._done.append(([chunk], n_bytes))
            return
        for row in self._open:
            if row[0] + n <= self.seq_len:
                row[0] += n
                row[1].append(chunk)
                row[2] += n_bytes
                return
        self._open.append([n, [chunk], n_bytes])
        if len(self._open) > self.open_rows:
            # Close the fullest open row: it has the least room left for later tails.
            i = max(range(len(self._open)), key=lambda j: self._open[j][0])
            used, chunks, b = self._open.pop(i)
            self._done.append((chunks, b))

    def add_document(self, token_ids: np.ndarray, token_bytes: np.ndarray) -> None:
        """Cuts one tokenized document into chunks and packs them."""
        for chunk, b in document_chunks(np.asarray(token_ids, np.int32), np.asarray(token_bytes), self.seq_len):
            self.add(chunk, b)

    def finish(self) -> PackedRows:
        """Closes the open rows; returns every row, in the order they were closed."""
        rows = self._done + [(chunks, b) for _, chunks, b in self._open]
        self._done, self._open = [], []
        targets = np.zeros((len(rows), self.seq_len), np.int32)
        segments = np.zeros((len(rows), self.seq_len), np.int32)
        row_bytes = np.zeros((len(rows),), np.int64)
        for r, (chunks, b) in enumerate(rows):
            pos = 0
            for s, chunk in enumerate(chunks, start=1):
                targets[r, pos:pos + len(chunk)] = chunk
                segments[r, pos:pos + len(chunk)] = s
                pos += len(chunk)
            row_bytes[r] = b
        return PackedRows(targets, segments, row_bytes)


def pack_documents(documents: Iterable[tuple[np.ndarray, np.ndarray]], seq_len: int) -> PackedRows:
    """Returns the packed rows of (token ids, per-token UTF-8 bytes) documents."""
    packer = RowPacker(seq_len)
    for ids, nbytes in documents:
        packer.add_document(ids, nbytes)
    return packer.finish()


def decoder_features(targets: np.ndarray, segment_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Returns the trainer's batch dict for packed rows [..., seq_len], laid out as seqio packs:

    inputs = targets shifted right by one with 0 at every segment start; loss_weights = 1 on
    non-padding targets; positions count from 0 within each segment (0 on padding).
    """
    targets = np.asarray(targets, np.int32)
    segment_ids = np.asarray(segment_ids, np.int32)
    shifted = np.zeros_like(targets)
    shifted[..., 1:] = targets[..., :-1]
    prev_seg = np.zeros_like(segment_ids)
    prev_seg[..., 1:] = segment_ids[..., :-1]
    inputs = np.where(prev_seg == segment_ids, shifted, 0).astype(np.int32)
    idx = np.broadcast_to(np.arange(targets.shape[-1], dtype=np.int32), targets.shape)
    starts = np.where(prev_seg != segment_ids, idx, 0)
    positions = (idx - np.maximum.accumulate(starts, axis=-1)).astype(np.int32)
    positions = np.where(segment_ids > 0, positions, 0).astype(np.int32)
    return {"inputs": inputs, "targets": targets, "loss_weights": (targets != 0).astype(np.float32),
            "segment_ids": segment_ids, "positions": positions}
