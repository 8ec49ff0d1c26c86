"""The scaling corpus (issue 29): >= 50M byte-level tokens of real installed text, built offline by the
project's own pipeline, and the gin file that trains on it.

`build(BuildOptions(out=DIR))` fills DIR, one step after another:
  raw/{code,prose}.jsonl  the components, gathered from installed packages (scaling_sources)
  processed/              `gopher-jax data process`'s in-process pipeline (manifest.json, stats/):
                          code gets exact + fuzzy dedup only, prose also Unicode repair, English
                          language ID and the Gopher quality and repetition filters (Gopher App. A.1:
                          the content filters are for text, not code); 1% of each held out
  tokenizer.model         byte-level SentencePiece: 256 byte pieces, one for the space, 3 specials
  packed/                 `gopher-jax data pack`'s stores, rows of seq_len tokens
  corpus.json             per component: sources, documents, bytes, tokens; totals, command, versions
  data.gin                the bindings that make `gopher-jax train` read packed/ (no packing at start-up)

Byte level because the sweep's smallest models should spend their parameters on layers, not on a
32k-row embedding table, and because it keeps bits-per-byte exact: every document becomes exactly
its UTF-8 bytes + 2 tokens (SentencePiece's leading space piece and EOS); texts holding "▁", which
SentencePiece cannot round-trip, are left out when gathered. BPE cannot be made this small (its
vocabulary must hold every character of 98% coverage, ~350 on this text), so the tokenizer is
SentencePiece's `char` model at 260 pieces, which with byte fallback keeps only the space.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import shutil
import sys
import time

from gopher_jax.atomic_write import atomic_write
from gopher_jax.host_record import host_record
from gopher_jax.data import installed_text, scaling_sources
from gopher_jax.data.installed_text import Root

COMPONENTS = scaling_sources.COMPONENTS
# Gopher App. A.1: quality and repetition filters for text; dedup for every subset, GitHub included.
STAGES = {"code": ("exact_dedup", "fuzzy_dedup"),
          "prose": ("unicode", "langid", "quality", "repetition", "exact_dedup", "fuzzy_dedup")}
MIXTURE_NAME = "scaling"  # task names scaling_code, scaling_prose
SEQ_LEN = 256
VOCAB_SIZE = 260  # tokenizer.py's minimum with byte fallback: 3 specials + 256 bytes + the space
VALIDATION_FRACTION = 0.01  # the pipeline's default: ~0.5M held-out tokens per component here
NUM_SHARDS = 8  # per component and split; the packer packs one shard at a time
DEFAULT_MIN_TOKENS = 50_000_000  # the IsoFLOP sweep's largest runs read up to ~50M tokens
# Raw text per component before filtering: code keeps ~99% of its bytes through dedup, prose (mostly
# docstrings) ~39% through the quality and repetition filters; the measured build is in docs/scaling.md.
DEFAULT_MAX_BYTES = 64_000_000
_TOKENIZER_SENTENCES = 1_000_000  # lines sampled to train the tokenizer (it only counts characters)


class CorpusTooSmall(ValueError):
    """The corpus has fewer train tokens than asked for."""


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What to build and where (the flags of `gopher-jax data build-scaling-corpus`)."""

    out: str
    min_tokens: int = DEFAULT_MIN_TOKENS
    max_bytes_per_component: int = DEFAULT_MAX_BYTES
    workers: int = 1  # processes for docstring extraction, processing and packing (one per component)
    seq_len: int = SEQ_LEN
    validation_fraction: float = VALIDATION_FRACTION
    num_shards: int = NUM_SHARDS
    roots: tuple[Root, ...] | None = None  # None: this interpreter's site-packages and standard library
    embedded: tuple[str, ...] = scaling_sources.EMBEDDED_PROSE
    progress: bool = True
    command: str = ""  # recorded in corpus.json


def _run_each(fn, calls: list[tuple], workers: int) -> list:
    """Returns [fn(*call) for call in calls], on up to `workers` processes."""
    if workers <= 1 or len(calls) <= 1:
        return [fn(*call) for call in calls]
    # spawn: each worker imports TensorFlow itself, never a forked half-initialised copy.
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(calls)),
                                                mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*calls)))


def _process_component(component: str, raw_path: str, out: str, stats_path: str, validation_fraction: float,
                       num_shards: int, progress: bool) -> None:
    """Runs `gopher-jax data process`'s in-process pipeline on one component into `out`."""
    from gopher_jax.data.corpus.config import PipelineConfig, ProcessConfig
    from gopher_jax.data.corpus.local_pipeline import run_local

    pipeline = PipelineConfig(stages=STAGES[component], num_shards=num_shards, write_tfrecord=True,
                              validation_fraction=validation_fraction)
    run_local([f"{component}={raw_path}"], out, dataclasses.replace(ProcessConfig(), pipeline=pipeline),
              stats_path, progress)


def process(raw_paths: dict[str, str], processed_dir: str, validation_fraction: float = VALIDATION_FRACTION,
            num_shards: int = NUM_SHARDS, workers: int = 1, progress: bool = True):
    """Processes each component (side by side when workers > 1) into processed_dir; returns its manifest."""
    from gopher_jax.data.manifest import read_manifest, write_manifest

    # Each component runs in a staging directory, then moves in: one manifest has one writer at a time.
    staging = os.path.join(processed_dir, ".staging")
    calls = [(c, raw_paths[c], os.path.join(staging, c), os.path.join(processed_dir, "stats", f"{c}.json"),
              validation_fraction, num_shards, progress) for c in raw_paths]
    _run_each(_process_component, calls, workers)
    for c in raw_paths:
        part = read_manifest(os.path.join(staging, c))
        os.replace(os.path.join(staging, c, c), os.path.join(processed_dir, c))
        write_manifest(dataclasses.replace(part, root=processed_dir), processed_dir)
    shutil.rmtree(staging)
    return read_manifest(processed_dir)


def train_byte_tokenizer(manifest, prefix: str) -> str:
    """Trains the byte-level tokenizer on the train split; returns PREFIX.model.

    Raises ValueError if SentencePiece kept a piece other than the bytes, specials and the space."""
    from gopher_jax.data import tokenizer

    paths = sorted(p for c in sorted(manifest.components) if manifest.components[c].splits["train"].documents
                   for p in glob.glob(manifest.pattern(c, "train", "jsonl")))
    path = tokenizer.train_tokenizer(tokenizer.read_texts(paths), prefix, vocab_size=VOCAB_SIZE, model_type="char",
                                     byte_fallback=True, max_sentences=_TOKENIZER_SENTENCES)
    sp = tokenizer.load(path)
    extra = [sp.id_to_piece(i) for i in range(sp.get_piece_size())
             if not (sp.is_byte(i) or sp.is_control(i) or sp.is_unknown(i))]
    if extra != [installed_text.WHITESPACE_MARK]:
        raise ValueError(f"the byte-level tokenizer {path} kept pieces {extra} besides the 256 bytes; expected only "
                         f"the space {installed_text.WHITESPACE_MARK!r} (the most frequent character of any text "
                         "with words): check the corpus's train split")
    return path


def _pack_component(settings: dict, progress: bool) -> list[dict]:
    """Runs `gopher-jax data pack`'s pack() on one component; returns its rows of the pack table."""
    from gopher_jax.data import pack_cli

    return pack_cli.pack(settings, progress=progress)


def pack(manifest, tokenizer_path: str, packed_dir: str, seq_len: int, workers: int = 1,
         progress: bool = True) -> list[dict]:
    """Packs every component's train and validation split; returns the pack table (pack_cli.pack's rows)."""
    calls = [({"manifest": manifest.root, "tokenizer": tokenizer_path, "seq_len": seq_len, "out": packed_dir,
               "mixture_name": MIXTURE_NAME, "gin_weights": False, "splits": ["train", "validation"],
               "components": [c]}, progress) for c in sorted(manifest.components)]
    return [row for rows in _run_each(_pack_component, calls, workers) for row in rows]


def check_size(train_tokens: int, min_tokens: int, what: str, max_bytes: int) -> None:
    """Raises CorpusTooSmall naming the figure and the fix when train_tokens < min_tokens."""
    if train_tokens < min_tokens:
        raise CorpusTooSmall(
            f"the scaling corpus has {train_tokens:,} {what}, {min_tokens - train_tokens:,} fewer than "
            f"--min_tokens={min_tokens:,}. Raise --max_bytes_per_component (now {max_bytes:,}: one token per byte of "
            f"text kept, and the filters keep ~99% of code and ~39% of prose bytes), install packages with more Python "
            f"source and documentation, or lower --min_tokens")


def _versions() -> dict:
    import importlib.metadata as md

    import gopher_jax
    from gopher_jax.host_record import git_commit

    repo = os.path.dirname(os.path.dirname(os.path.abspath(gopher_jax.__file__)))
    versions = {"python": sys.version.split()[0], "gopher_jax": gopher_jax.__version__,
                "gopher_jax_commit": git_commit(repo)}
    for name in ("sentencepiece", "seqio", "tensorflow", "tensorflow-text", "gensim"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    return versions


def corpus_record(options: BuildOptions, sources: dict, manifest, table: list[dict], tokenizer_path: str,
                  packed_dir: str, seconds: dict) -> dict:
    """Returns corpus.json's content: per component its sources, documents, bytes and tokens; the totals."""
    components = {}
    for c in COMPONENTS:
        stores = {r["split"]: r for r in table if r["component"] == c}
        splits = manifest.components[c].splits
        train = stores.get("train", {"tokens": 0, "rows": 0, "bytes": 0})
        components[c] = {
            **sources[c], "stages": list(manifest.components[c].stages),
            "documents": {s: splits[s].documents for s in ("train", "validation")},
            "bytes": {s: splits[s].bytes for s in ("train", "validation")},
            "train_tokens": train["tokens"], "validation_tokens": stores.get("validation", {"tokens": 0})["tokens"],
            "train_rows": train["rows"],
            "bytes_per_token": train["bytes"] / train["tokens"] if train["tokens"] else None}
    total = sum(v["train_tokens"] for v in components.values())
    for v in components.values():
        # Weights proportional to tokens: the mixture reads every component at the pace that ends them together.
        v["weight"] = v["train_tokens"] / total if total else 0.0
    return {"components": components, "total_train_tokens": total,
            "total_validation_tokens": sum(v["validation_tokens"] for v in components.values()),
            "min_tokens": options.min_tokens, "max_bytes_per_component": options.max_bytes_per_component,
            "seq_len": options.seq_len, "mixture_name": MIXTURE_NAME,
            "validation_fraction": options.validation_fraction,
            "tokenizer": {"model_type": "char", "pieces": VOCAB_SIZE,
                          "tokens_per_document": "UTF-8 bytes + 2 (leading space piece, EOS)"},
            "paths": {"manifest": os.path.join(manifest.root, "manifest.json"), "tokenizer": tokenizer_path,
                      "packed_root": packed_dir, "data_gin": os.path.join(os.path.abspath(options.out), "data.gin")},
            "command": options.command, "versions": _versions(), "host": host_record(), "seconds": seconds}


def data_gin(record: dict) -> str:
    """Returns data.gin: the bindings that train on the packed stores of the corpus `record` describes."""
    paths = record["paths"]
    weights = ", ".join(f'"{c}": {v["weight"]:.6f}' for c, v in record["components"].items())
    sizes = ", ".join(f"{c} {v['train_tokens']:,}" for c, v in record["components"].items())
    total = record["total_train_tokens"]
    return f"""# The scaling corpus: {total:,} train tokens ({sizes}), byte-level ({VOCAB_SIZE} pieces).
# Built by `{record['command'] or 'gopher-jax data build-scaling-corpus'}`; figures and sources in corpus.json.
# Use after a run and a model file:
#   gopher-jax train --gin_file=gin_configs/runs/pretrain.gin --gin_file=gin_configs/models/tiny.gin \\
#       --gin_file={paths['data_gin']} --workdir=RUN
# The packed stores record the processed shards' absolute paths: rebuild the corpus rather than move it.
import data_tasks.massivetext

register_massivetext_tasks.manifest = "{os.path.dirname(paths['manifest'])}"
register_massivetext_tasks.mixture_name = "{MIXTURE_NAME}"
# Proportional to train tokens, so no component repeats before the other is used up.
register_massivetext_tasks.weights = {{{weights}}}
train.tokenizer = "{paths['tokenizer']}"
train.seq_len = {record['seq_len']}  # the stores are packed at this length
ModelConfig.vocab_size = {VOCAB_SIZE}
packed_data.root = "{paths['packed_root']}"
packed_data.build_missing = False
"""


def _check_out(out: str) -> None:
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ValueError(f"--out={out} exists and is not an empty directory; pass a new or empty directory "
                         "(or delete this one to rebuild)")


def build(options: BuildOptions) -> dict:
    """Builds the corpus in options.out (see the module docstring); returns corpus.json's content.

    Raises CorpusTooSmall (before packing when the processed bytes already fall short) and ValueError
    for a non-empty --out."""
    out = os.path.abspath(options.out)
    _check_out(out)
    roots = list(options.roots) if options.roots is not None else installed_text.default_roots()
    seconds, start = {}, time.perf_counter()

    def step(name: str, t: float) -> None:
        seconds[name] = round(time.perf_counter() - t, 1)
        if options.progress:
            print(f"[{name}] {seconds[name]:.1f} s", file=sys.stderr, flush=True)

    t = time.perf_counter()
    raw_dir = os.path.join(out, "raw")
    sources = scaling_sources.gather(roots, raw_dir, options.max_bytes_per_component, options.embedded,
                                     options.progress, options.workers)
    step("gather", t)
    t = time.perf_counter()
    manifest = process({c: os.path.join(raw_dir, f"{c}.jsonl") for c in COMPONENTS}, os.path.join(out, "processed"),
                       options.validation_fraction, options.num_shards, options.workers, options.progress)
    step("process", t)
    # Byte level: each document packs to its bytes + 2 tokens, so a short corpus fails here, before packing.
    expected = sum(e.splits["train"].bytes + 2 * e.splits["train"].documents for e in manifest.components.values())
    check_size(expected, options.min_tokens, "train tokens expected from the processed text",
               options.max_bytes_per_component)
    t = time.perf_counter()
    tokenizer_path = train_byte_tokenizer(manifest, os.path.join(out, "tokenizer"))
    step("tokenizer", t)
    t = time.perf_counter()
    packed_dir = os.path.join(out, "packed")
    table = pack(manifest, tokenizer_path, packed_dir, options.seq_len, options.workers, options.progress)
    step("pack", t)
    seconds["total"] = round(time.perf_counter() - start, 1)
    record = corpus_record(options, sources, manifest, table, tokenizer_path, packed_dir, seconds)
    check_size(record["total_train_tokens"], options.min_tokens, "packed train tokens", options.max_bytes_per_component)
    atomic_write(os.path.join(out, "corpus.json"), lambda f: json.dump(record, f, indent=1))
    atomic_write(record["paths"]["data_gin"], lambda f: f.write(data_gin(record)))
    return record


def build_scaling_corpus(out: str, **options) -> dict:
    """Builds the corpus in `out` with BuildOptions' defaults, overridden by keyword; returns corpus.json's content."""
    return build(BuildOptions(out=out, **options))
