"""Corpus-pipeline throughput on a corpus directory: documents/s per stage, and scaling 1x..8x.

    python benchmarks/data_pipeline.py --corpus=DIR --out benchmarks/data_pipeline.json

--corpus defaults to the committed fixtures (tests/fixtures/corpus: 100 C4 documents, 8 Gutenberg
slices, Shakespeare, WikiText-2 articles; tests/fixtures/SOURCES.md). For the figures in
docs/data_pipeline.md point it at the full public files (the same names, e.g. C4's 500-document
sample and the whole Gutenberg books): --corpus=/path/to/corpus.

Per stage: documents/s (and MB/s) of each per-document filter, exact dedup and fuzzy dedup
(MinHash-LSH incl. verification), on every document of the corpus. Scaling: fuzzy and exact dedup
plus the filters on k = 1, 2, 4, 8 copies of the corpus, each copy with a different 2% of words
replaced (so copies are distinct documents, mostly near-duplicates of each other, exercising the
LSH, verification and components), reporting seconds and seconds per document relative to 1x.
Also MinHash signature throughput: our numpy implementation vs datasketch if installed.
Times are CPU seconds of this process (time.process_time), so other work on a shared machine
inflates them less than wall time would.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time

import numpy as np

from gopher_jax.data.corpus import minhash, ngrams
from gopher_jax.data.corpus.config import ProcessConfig
from gopher_jax.data.corpus.documents import Doc
from gopher_jax.data.corpus.exact_dedup import exact_dedup
from gopher_jax.data.corpus.fuzzy_dedup import DedupConfig, fuzzy_dedup
from gopher_jax.data.corpus.langid import filter_language
from gopher_jax.data.corpus.quality import filter_quality
from gopher_jax.data.corpus.reader import expand_inputs, read_documents
from gopher_jax.data.corpus.repetition import filter_repetition
from gopher_jax.data.corpus.short_docs import filter_short
from gopher_jax.data.corpus.unicode_repair import repair_unicode

FIXTURE_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "corpus")


def load(corpus: str) -> list[Doc]:
    return [d for s, p in expand_inputs([corpus]) for d in read_documents(s, p) if d.alive]


def timed(fn, *args):
    """Returns (fn(*args), CPU seconds of this process): robust on a machine shared with others."""
    t = time.process_time()
    out = fn(*args)
    return out, time.process_time() - t


def perturbed_copies(docs: list[Doc], k: int, frac: float = 0.02) -> list[Doc]:
    """Returns k copies of docs; copy c > 0 has `frac` of each document's words replaced."""
    out = []
    for c in range(k):
        rng = np.random.default_rng(c)
        for d in docs:
            text = d.text
            if c:
                words = text.split(" ")
                idx = rng.random(len(words)) < frac
                words = [f"w{c}x{i}" if m else w for i, (w, m) in enumerate(zip(words, idx))]
                text = " ".join(words)
            out.append(dataclasses.replace(d, id=f"{d.id}#{c}", text=text))
    return out


def filters_benchmark(docs: list[Doc], cfg: ProcessConfig) -> dict:
    stages = {
        "unicode": repair_unicode,
        "langid": lambda d: filter_language(d, cfg.langid),
        "short_docs": lambda d: filter_short(d, cfg.short_docs),
        "quality": lambda d: filter_quality(d, cfg.quality),
        "repetition": lambda d: filter_repetition(d, cfg.repetition),
    }
    mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
    out = {}
    for name, fn in stages.items():
        _, sec = timed(lambda: [fn(d) for d in docs])
        out[name] = {"docs": len(docs), "seconds": round(sec, 3), "docs_per_s": round(len(docs) / sec, 1),
                     "mb_per_s": round(mb / sec, 2)}
    return out


def dedup_benchmark(docs: list[Doc], cfg: DedupConfig) -> dict:
    _, ex = timed(exact_dedup, docs)
    (_, info), fz = timed(fuzzy_dedup, docs, cfg)
    return {"docs": len(docs), "exact_seconds": round(ex, 3), "exact_docs_per_s": round(len(docs) / ex, 1),
            "fuzzy_seconds": round(fz, 3), "fuzzy_docs_per_s": round(len(docs) / fz, 1), **info}


def minhash_benchmark(docs: list[Doc], num_perm: int = 260) -> dict:
    sh = ngrams.shingles_batch([d.text for d in docs], 13)
    sh = [s for s in sh if len(s)]
    n = sum(len(s) for s in sh)
    seeds = minhash.permutation_seeds(num_perm)
    _, sec = timed(minhash.signatures, sh, seeds)
    out = {"shingles": n, "numpy_seconds": round(sec, 3), "numpy_shingles_per_s": round(n / sec)}
    try:
        from datasketch import MinHash
    except ImportError:
        out["datasketch"] = "not installed"
        return out
    sub = sh[: max(1, len(sh) // 10)]  # datasketch is slower: time a tenth and scale
    m_sub = sum(len(s) for s in sub)
    t = time.process_time()
    for s in sub:
        m = MinHash(num_perm=num_perm)
        m.update_batch([int(x).to_bytes(8, "little") for x in s])
    sec_ds = time.process_time() - t
    out.update({"datasketch_shingles_per_s": round(m_sub / sec_ds),
                "numpy_speedup": round((n / sec) / (m_sub / sec_ds), 1)})
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=FIXTURE_CORPUS,
                        help="a file or directory of .jsonl/.txt documents (default: the committed test fixtures)")
    parser.add_argument("--out", default="benchmarks/data_pipeline.json")
    parser.add_argument("--scales", default="1,2,4,8")
    args = parser.parse_args(argv)
    docs = load(args.corpus)
    cfg = ProcessConfig()
    result = {"corpus": args.corpus, "documents": len(docs),
              "mb": round(sum(len(d.text.encode()) for d in docs) / 1e6, 2),
              "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
              "filters": filters_benchmark(docs, cfg), "dedup": dedup_benchmark(docs, cfg.dedup),
              "minhash": minhash_benchmark(docs), "scaling": []}
    base = None
    for k in (int(s) for s in args.scales.split(",")):
        copies = perturbed_copies(docs, k)
        t = time.process_time()
        for d in copies:
            filter_quality(d, cfg.quality)
            filter_repetition(d, cfg.repetition)
        filt = time.process_time() - t
        dd = dedup_benchmark(copies, cfg.dedup)
        total = filt + dd["exact_seconds"] + dd["fuzzy_seconds"]
        base = base or total
        row = {"scale": k, "docs": len(copies), "filter_seconds": round(filt, 2), "dedup_seconds":
               round(dd["exact_seconds"] + dd["fuzzy_seconds"], 2), "total_seconds": round(total, 2),
               "time_vs_1x": round(total / base, 2), "time_per_doc_vs_1x": round(total / base / k, 2),
               "duplicate_pairs": dd["duplicate_pairs"], "candidate_pairs": dd["candidate_pairs"]}
        result["scaling"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "scaling"}, indent=2))
    return result


if __name__ == "__main__":
    main()
