"""Corpus processing against peers, side by side in one run: Gopher filters vs datatrove's, and
MinHash-LSH dedup vs datasketch's, each at 1x..8x the corpus. Writes JSON.

    python benchmarks/corpus_peers.py --out benchmarks/results/corpus_peers.json

Corpus (--corpus): a jsonl of documents, by default the committed tests/fixtures/corpus/c4_sample_100.jsonl
(100 real C4 documents); the figures in benchmarks/README.md used the public 500-document C4 sample
(--corpus=/path/to/c4_sample_500.jsonl). It is repeated k times; copy
c > 0 of each document has 0.5% of its words replaced, so copies are near-duplicates (13-gram
Jaccard ~0.8-0.9 with the original) and the dedup has real work. Every time is CPU seconds of
this one process (time.process_time: one core; other jobs on a shared machine inflate it less
than wall time), and every ratio is ours over the peer's, measured in the same run.

- filters: the Gopher quality + repetition filters on every document, each project's order,
  stopping at a document's first drop. Ours in both readings (`word_split` "whitespace", the
  default, and "datatrove"); the peer is datatrove's GopherRepetitionFilter + GopherQualityFilter
  (`.filter(doc)`, its spaCy word tokenizer). Decision agreement with the peer is reported too.
- banding: recall (200 generated pairs at exactly J = 0.80, 0.82, 0.85) and verification cost
  (candidate pairs, CPU seconds of sketching and of candidate verification) of MT-NLG's 20 x 13,
  the default 25 x 8, 26 x 10 and dedup_high_recall.gin's 32 x 8, on the largest scale, with
  0.5% of words replaced per copy (true near-duplicates) and with 2% (near misses, J ~0.5-0.7).
- dedup: end to end, text in, survivors out. Ours: `fuzzy_dedup` at the default DedupConfig.
  The peer: datasketch MinHash.bulk + MinHashLSH with the SAME banding (params=(bands, rows), so
  equal candidate probability 1-(1-J^r)^b, i.e. equal recall), the same word 13-gram shingles,
  exact Jaccard verification of candidates with Python sets, and the same union-find. Recall of
  both on generated pairs at exactly J = 0.80 is measured in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np

from gopher_jax.data.corpus import components, lsh, minhash, ngrams, word_split
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig, duplicate_edges, fuzzy_dedup, sketches
from gopher_jax.data.corpus.near_duplicates import pair_with_exact_jaccard
from gopher_jax.data.corpus.quality import QualityConfig, check_quality
from gopher_jax.data.corpus.repetition import RepetitionConfig, check_repetition

FIXTURE_C4 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "corpus",
                          "c4_sample_100.jsonl")


def load(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def copies(texts: list[str], k: int, frac: float = 0.005) -> list[str]:
    """Returns k copies of texts; copy c > 0 has `frac` of each text's words replaced."""
    out = list(texts)
    for c in range(1, k):
        rng = np.random.default_rng(c)
        for t in texts:
            words = t.split(" ")
            hit = rng.random(len(words)) < frac
            out.append(" ".join(f"w{c}x{i}" if h else w for i, (w, h) in enumerate(zip(words, hit))))
    return out


def cpu(fn, *args, repeats: int = 1):
    """Returns (fn(*args), CPU seconds of this process; the least of `repeats` runs)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.process_time()
        out = fn(*args)
        best = min(best, time.process_time() - t)
    return out, best


# ---------------------------------------------------------------- filters

def ours_filters(texts: list[str], split: str) -> list[bool]:
    extra = {"bullets": ("•", "-")} if split == "datatrove" else {}  # as datatrove_compat.gin
    q, r = QualityConfig(word_split=split, **extra), RepetitionConfig(word_split=split)
    return [check_quality(t, q) is None and check_repetition(t, r) is None for t in texts]


def datatrove_filters(texts: list[str]) -> list[bool]:
    from datatrove.data import Document
    from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
    from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter
    rep, qual = GopherRepetitionFilter(), GopherQualityFilter()  # FineWeb's order
    out = []
    for i, t in enumerate(texts):
        d = Document(text=t, id=str(i))
        out.append(rep.filter(d) is True and qual.filter(d) is True)
    return out


def filters_row(texts: list[str]) -> dict:
    mb = sum(len(t.encode()) for t in texts) / 1e6
    peer, peer_s = cpu(datatrove_filters, texts)
    ws, ws_s = cpu(ours_filters, texts, "whitespace")
    dt, dt_s = cpu(ours_filters, texts, "datatrove")
    agree = lambda a: round(float(np.mean(np.array(a) == np.array(peer))), 4)
    return {"docs": len(texts), "mb": round(mb, 2),
            "datatrove_seconds": round(peer_s, 3), "datatrove_mb_per_s": round(mb / peer_s, 2),
            "ours_seconds": round(ws_s, 3), "ours_mb_per_s": round(mb / ws_s, 2),
            "ours_datatrove_reading_seconds": round(dt_s, 3),
            "ours_datatrove_reading_mb_per_s": round(mb / dt_s, 2),
            "speedup": round(peer_s / ws_s, 1), "speedup_datatrove_reading": round(peer_s / dt_s, 1),
            "agreement_default": agree(ws), "agreement_datatrove_reading": agree(dt),
            "kept_datatrove": int(sum(peer)), "kept_ours": int(sum(ws)), "kept_ours_datatrove_reading": int(sum(dt))}


# ---------------------------------------------------------------- dedup

def datasketch_dedup(texts: list[str], cfg: DedupConfig) -> set[int]:
    """Returns the indices datasketch MinHash + MinHashLSH (same banding) + exact Jaccard drop."""
    from datasketch import MinHash, MinHashLSH
    n = cfg.ngram
    sets, keep = [], []
    for i, t in enumerate(texts):
        w = ngrams.normalized_words(t)
        if not w:
            continue
        grams = {" ".join(w[j:j + n]).encode() for j in range(max(1, len(w) - n + 1))}
        sets.append(grams)
        keep.append(i)
    sigs = MinHash.bulk(sets, num_perm=cfg.num_perm, seed=cfg.seed)
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, params=(cfg.bands, cfg.rows))
    with lsh.insertion_session() as session:
        for row, m in enumerate(sigs):
            session.insert(row, m)
    edges = []
    for row, m in enumerate(sigs):
        for other in lsh.query(m):
            if other > row:
                a, b = sets[row], sets[other]
                inter = len(a & b)
                if inter / (len(a) + len(b) - inter) >= cfg.threshold:
                    edges.append((row, other))
    return {keep[x] for x in components.losers(edges)}


def ours_dedup(texts: list[str], cfg: DedupConfig) -> set[int]:
    docs = [Doc(id=f"{i:07d}", source="c4", text=t) for i, t in enumerate(texts)]
    out, _ = fuzzy_dedup(docs, cfg)
    return {i for i, d in enumerate(out) if not d.alive}


def dedup_row(texts: list[str], cfg: DedupConfig) -> dict:
    mb = sum(len(t.encode()) for t in texts) / 1e6
    peer, peer_s = cpu(datasketch_dedup, texts, cfg, repeats=3)  # short runs: least of 3, both
    ours, ours_s = cpu(ours_dedup, texts, cfg, repeats=3)
    return {"docs": len(texts), "mb": round(mb, 2),
            "datasketch_seconds": round(peer_s, 3), "datasketch_mb_per_s": round(mb / peer_s, 2),
            "ours_seconds": round(ours_s, 3), "ours_mb_per_s": round(mb / ours_s, 2),
            "speedup": round(peer_s / ours_s, 1), "removed_ours": len(ours), "removed_datasketch": len(peer),
            "removed_by_both": len(ours & peer)}


def recall_at(j: float, cfg: DedupConfig, pairs: int = 200) -> dict:
    """Returns both pipelines' removal rate on generated pairs of exact 13-gram Jaccard j."""
    rng = np.random.default_rng(0)
    texts = []
    for _ in range(pairs):
        a, b, exact = pair_with_exact_jaccard(rng, j)
        texts += [a, b]
    assert exact == j, exact
    ours, peer = ours_dedup(texts, cfg), datasketch_dedup(texts, cfg)
    rate = lambda lost: sum((2 * i in lost) or (2 * i + 1 in lost) for i in range(pairs)) / pairs
    return {"jaccard": j, "pairs": pairs, "ours": rate(ours), "datasketch": rate(peer)}


BANDINGS = {"mtnlg_20x13": DedupConfig(num_perm=260, bands=20), "default_25x8": DedupConfig(),
            "26x10": DedupConfig(num_perm=260, bands=26), "high_recall_32x8": DedupConfig(num_perm=256, bands=32)}


def banding_row(name: str, cfg: DedupConfig, texts: list[str]) -> dict:
    """Returns one banding's recall (theory and measured at exact J) and verification cost."""
    seeds = minhash.permutation_seeds(cfg.num_perm, cfg.seed)
    t = time.process_time()
    table = {}
    for start in range(0, len(texts), 256):
        chunk = texts[start:start + 256]
        for i, sk in enumerate(sketches(chunk, cfg, seeds)):
            if sk is not None:
                table[f"{start + i:07d}"] = sk
    sketch_s = time.process_time() - t
    (edges, n_candidates), verify_s = cpu(duplicate_edges, table, cfg)
    recall = {}
    for j in (0.80, 0.82, 0.85):
        rng, docs = np.random.default_rng(int(j * 100)), []
        for i in range(200):
            a, b, _ = pair_with_exact_jaccard(rng, j)
            docs += [Doc(id=f"{i:05d}a", source="s", text=a), Doc(id=f"{i:05d}b", source="s", text=b)]
        out, _ = fuzzy_dedup(docs, cfg)
        recall[f"{j:.2f}"] = {"measured": float(np.mean([not (out[2 * i].alive and out[2 * i + 1].alive)
                                                        for i in range(200)])),
                              "theory": round(lsh.candidate_probability(j, cfg.bands, cfg.rows), 4)}
    return {"banding": name, "num_perm": cfg.num_perm, "bands": cfg.bands, "rows": cfg.rows,
            "recall_200_pairs": recall, "docs": len(texts), "sketch_seconds": round(sketch_s, 3),
            "candidate_pairs": n_candidates, "duplicate_pairs": len(edges),
            "verify_seconds": round(verify_s, 3), "fuzzy_seconds": round(sketch_s + verify_s, 3)}


def warm_up(texts: list[str], cfg: DedupConfig) -> None:
    """Runs everything once on a few documents: one-time loads (spaCy, tables) are not timed."""
    datatrove_filters(texts[:20])
    ours_filters(texts[:20], "whitespace")
    ours_filters(texts[:20], "datatrove")
    datasketch_dedup(texts[:20], cfg)
    ours_dedup(texts[:20], cfg)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=FIXTURE_C4, help="jsonl with a \"text\" field per line (default: the test fixture)")
    parser.add_argument("--out", default="benchmarks/results/corpus_peers.json")
    parser.add_argument("--scales", default="1,2,4,8")
    args = parser.parse_args(argv)
    base = load(args.corpus)
    cfg = DedupConfig()
    warm_up(base, cfg)
    result = {"corpus": args.corpus, "documents": len(base),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "timing": "CPU seconds of one process (one core)",
              "dedup_config": {"num_perm": cfg.num_perm, "bands": cfg.bands, "rows": cfg.rows,
                               "threshold": cfg.threshold, "ngram": cfg.ngram},
              "recall": [recall_at(j, cfg) for j in (0.80, 0.82)], "scaling": []}
    for k in (int(s) for s in args.scales.split(",")):
        texts = copies(base, k)
        row = {"scale": k, "filters": filters_row(texts), "dedup": dedup_row(texts, cfg)}
        result["scaling"].append(row)
        print(json.dumps(row), flush=True)
    k = max(int(s) for s in args.scales.split(","))
    result["banding"] = []
    # 0.5% of words replaced: copies are true near-duplicates (J ~0.8-0.9); 2%: near misses
    # (J ~0.5-0.7 to each other), the pairs whose candidates only cost verification.
    for frac in (0.005, 0.02):
        texts = copies(base, k, frac)
        result["banding"] += [{"replaced_words": frac, **banding_row(name, c, texts)} for name, c in BANDINGS.items()]
    for row in result["banding"]:
        print(json.dumps(row), flush=True)
    first = result["scaling"][0]
    for part in ("filters", "dedup"):
        s0 = first[part]["ours_seconds"] / first[part]["docs"]
        for row in result["scaling"]:
            row[part]["ours_seconds_per_doc_vs_1x"] = round(row[part]["ours_seconds"] / row[part]["docs"] / s0, 2)
    result["summary"] = {
        "filters_speedup": [r["filters"]["speedup"] for r in result["scaling"]],
        "filters_speedup_datatrove_reading": [r["filters"]["speedup_datatrove_reading"] for r in result["scaling"]],
        "dedup_speedup": [r["dedup"]["speedup"] for r in result["scaling"]],
        "agreement_datatrove_reading": [r["filters"]["agreement_datatrove_reading"] for r in result["scaling"]],
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["summary"], indent=2))
    return result


if __name__ == "__main__":
    main()
