"""Test-set decontamination against evaluation documents, in Gopher's or MT-NLG's way.

gopher (Gopher A.1.1): drop a training document whose 13-gram Jaccard similarity with any
  evaluation document is >= 0.8 (MinHash-LSH candidates, then exact Jaccard).
mtnlg (MT-NLG §3.2): find every training 13-gram that occurs in an evaluation document, cut it
  out with 200 characters on each side, drop fragments shorter than 200 characters, and drop
  the whole document if it was split more than 10 times.
"""
from __future__ import annotations

import collections
import dataclasses
import functools

import gin
import numpy as np

from gopher_jax.data.corpus import lsh, minhash, ngrams
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.eval_sets import load_eval_sets
from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig, verified

MODES = ("gopher", "mtnlg")


@gin.configurable(module="corpus")
@dataclasses.dataclass(frozen=True)
class DecontamConfig:
    """Decontamination mode and thresholds (defaults: Gopher A.1.1 and MT-NLG §3.2)."""

    mode: str = "gopher"  # "gopher" | "mtnlg"
    eval_paths: tuple[str, ...] = ()  # eval files or directories (see eval_sets.py for formats)
    ngram: int = 13  # both papers: word 13-grams
    jaccard_threshold: float = 0.8  # Gopher: drop at 13-gram Jaccard >= 0.8
    context_chars: int = 200  # MT-NLG: remove 200 characters on each side of a match
    min_fragment_chars: int = 200  # MT-NLG: drop fragments shorter than 200 characters
    max_splits: int = 10  # MT-NLG: drop documents split more than 10 times

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"DecontamConfig.mode={self.mode!r}: expected one of {MODES}")


class EvalIndex:
    """Evaluation documents indexed for one decontamination mode."""

    def __init__(self, texts: list[str], config: DecontamConfig, dedup: DedupConfig = DedupConfig()):
        self.config, self.dedup = config, dataclasses.replace(dedup, ngram=config.ngram,
                                                              threshold=config.jaccard_threshold)
        self.num_eval_docs = len(texts)
        if config.mode == "gopher":
            self.seeds = minhash.permutation_seeds(self.dedup.num_perm, self.dedup.seed)
            self.shingles = [s for s in ngrams.shingles_batch(texts, config.ngram) if len(s)]
            keys = lsh.band_keys(minhash.signatures(self.shingles, self.seeds), self.dedup.bands, self.dedup.rows)
            self.buckets = collections.defaultdict(list)
            for i, row in enumerate(keys.view(np.int64).tolist()):
                for band, key in enumerate(row):
                    self.buckets[(band, key)].append(i)
            # A training document with more shingles than this cannot reach the threshold.
            self.max_shingles = max((len(s) for s in self.shingles), default=0) / config.jaccard_threshold
        else:
            words = [ngrams.word_hashes(w) for w in map(ngrams.normalized_words, texts) if len(w) >= config.ngram]
            grams = ngrams.ngram_hashes_batch(words, config.ngram)
            self.eval_ngrams = np.unique(np.concatenate(grams)) if grams else np.empty(0, np.uint64)

    @classmethod
    def from_paths(cls, config: DecontamConfig, dedup: DedupConfig = DedupConfig()) -> "EvalIndex":
        """Returns the index of the evaluation sets named in config.eval_paths."""
        if not config.eval_paths:
            raise ValueError("decontamination needs evaluation sets: pass --eval PATH or set "
                             "DecontamConfig.eval_paths")
        return cls(load_eval_sets(list(config.eval_paths)), config, dedup)

    def matches_gopher(self, text: str) -> bool:
        """Returns True when text's n-gram Jaccard with some eval document reaches the threshold."""
        sh = ngrams.shingles(text, self.config.ngram)
        if len(sh) == 0 or len(sh) > self.max_shingles:
            return False
        keys = lsh.band_keys(minhash.signature(sh, self.seeds), self.dedup.bands, self.dedup.rows)[0]
        cands = {i for band, key in enumerate(keys.view(np.int64).tolist()) for i in self.buckets.get((band, key), ())}
        return any(verified(sh, self.shingles[i], self.config.jaccard_threshold, distinct=True)
                   for i in sorted(cands))

    def cut_mtnlg(self, text: str) -> tuple[list[tuple[int, int]], list[str]]:
        """Returns (merged removed character spans, surviving fragments >= min_fragment_chars)."""
        c, n = self.config, self.config.ngram
        words = ngrams.normalized_words(text)
        if len(words) < n or len(self.eval_ngrams) == 0:
            return [], [text]
        grams = ngrams.ngram_hashes(ngrams.word_hashes(words), n)
        hits = np.nonzero(np.isin(grams, self.eval_ngrams))[0]
        if len(hits) == 0:
            return [], [text]
        spans = ngrams.word_spans(text)
        cuts = []
        for i in hits:
            lo, hi = max(0, spans[i][0] - c.context_chars), min(len(text), spans[i + n - 1][1] + c.context_chars)
            if cuts and lo <= cuts[-1][1]:
                cuts[-1] = (cuts[-1][0], max(cuts[-1][1], hi))
            else:
                cuts.append((lo, hi))
        bounds = [0] + [x for span in cuts for x in span] + [len(text)]
        pieces = [text[a:b].strip() for a, b in zip(bounds[::2], bounds[1::2])]
        return cuts, [p for p in pieces if len(p) >= c.min_fragment_chars]


@functools.lru_cache(maxsize=4)
def cached_index(config: DecontamConfig, dedup: DedupConfig = DedupConfig()) -> EvalIndex:
    """Returns EvalIndex.from_paths(config, dedup), built once per process (and Beam worker)."""
    return EvalIndex.from_paths(config, dedup)


def decontaminate(doc: Doc, index: EvalIndex) -> Doc:
    """Returns doc unchanged, dropped ("decontam:<why>"), or split into fragments (MT-NLG)."""
    if index.config.mode == "gopher":
        return doc.dropped("decontam:eval_overlap") if index.matches_gopher(doc.text) else doc
    cuts, fragments = index.cut_mtnlg(doc.text)
    if not cuts:
        return doc
    if len(cuts) > index.config.max_splits:
        return doc.dropped("decontam:too_many_splits")
    if not fragments:
        return doc.dropped("decontam:fragments_too_short")
    return dataclasses.replace(doc, fragments=tuple(fragments), changes=doc.changes + ("decontam:cut",))
