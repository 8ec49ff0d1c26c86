"""`gopher-jax data pack`: tokenize and pack a processed corpus's components into a packed-data root.

    gopher-jax data pack --manifest=gs://bucket/massivetext_processed --tokenizer=gs://bucket/spm.model \
        --seq_len=2048 --out=gs://bucket/packed [--components=books,news] [--splits=train,validation]

Registers the manifest's components as seqio tasks (`data_tasks.massivetext.register_massivetext_tasks`,
the registration `gopher-jax train` uses, so the task names and preprocessing match the run's) and
builds every (component, split) packed store under OUT (`gopher_jax.data.packed_store.open_store`).
A store already there and up to date is reused, so a rerun is a no-op and machines packing different
--components fill one OUT (each store is its own directory, OUT/<task>/<split>/L<seq_len>/).
A pod run then reads them with no tokenizing at start-up:

    --gin_param='packed_data.root="gs://bucket/packed"' --gin_param='packed_data.build_missing=False'

With --gin_file/--gin_param (e.g. the run's own gin files) the unset flags come from the run's
bindings: --manifest from register_massivetext_tasks.manifest, --tokenizer from train.tokenizer,
--seq_len from train.seq_len, --out from packed_data.root, --mixture_name from
register_massivetext_tasks.mixture_name, and the components from the positive
register_massivetext_tasks.weights (otherwise every component of the manifest).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from gopher_jax import gin_utils

SPLITS = ("train", "validation")
DEFAULT_MIXTURE = "massivetext"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the command's flags (and gin's) to parser."""
    parser.add_argument("--manifest", default=None,
                        help="`gopher-jax data process` output directory holding manifest.json (local or gs://)")
    parser.add_argument("--tokenizer", default=None,
                        help="SentencePiece .model the run trains with (its train.tokenizer)")
    parser.add_argument("--seq_len", type=int, default=None, help="the run's train.seq_len")
    parser.add_argument("--out", default=None,
                        help="packed-data root to fill (the run's packed_data.root; local or gs://)")
    parser.add_argument("--components", default="",
                        help="comma-separated components to pack (default: every component of the manifest)")
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to pack")
    parser.add_argument("--mixture_name", default=None,
                        help=f"task-name prefix, the run's register_massivetext_tasks.mixture_name "
                             f"(default {DEFAULT_MIXTURE!r})")
    parser.add_argument("--json", default="", help="also write the table as JSON here")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")
    gin_utils.add_gin_arguments(parser)


def _bound(name: str):
    """Returns the gin binding of `name`, or None when it is not bound."""
    import gin
    try:
        return gin.query_parameter(name)
    except ValueError:
        return None


def _split_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _resolve(args: argparse.Namespace) -> dict:
    """Returns the settings of this run (flags, else gin bindings); raises ValueError naming a missing flag."""
    if args.gin_file or args.gin_param:
        # Every configurable a run's gin files bind must be known before parsing (as `gopher-jax train` does).
        import data_tasks  # noqa: F401  (registrations: register_massivetext_tasks.*)
        import gopher_jax.data.input_pipeline  # noqa: F401
        import gopher_jax.data.training_data  # noqa: F401  (packed_data.*)
        import gopher_jax.model.config  # noqa: F401
        import gopher_jax.parallel.mesh  # noqa: F401
        import gopher_jax.parallel.rules  # noqa: F401
        import gopher_jax.train.checkpoint_errors  # noqa: F401
        import gopher_jax.train.config  # noqa: F401
        gin_utils.parse_gin(args.gin_file, args.gin_param)
    manifest = args.manifest or _bound("register_massivetext_tasks.manifest")
    settings = {
        "manifest": manifest,
        "tokenizer": args.tokenizer or _bound("train.tokenizer") or None,
        "seq_len": args.seq_len if args.seq_len is not None else _bound("train.seq_len"),
        "out": args.out or _bound("packed_data.root") or None,
        "mixture_name": args.mixture_name or _bound("register_massivetext_tasks.mixture_name") or DEFAULT_MIXTURE,
        "gin_weights": _bound("register_massivetext_tasks.weights") is not None,
    }
    missing = {"manifest": "--manifest=DIR (a `gopher-jax data process` output directory)",
               "tokenizer": "--tokenizer=MODEL (the SentencePiece .model the run trains with)",
               "seq_len": "--seq_len=N (the run's train.seq_len)",
               "out": "--out=ROOT (the directory the run's packed_data.root will name)"}
    absent = [how for k, how in missing.items() if not settings[k]]
    if absent:
        raise ValueError("missing " + "; ".join(absent))
    if settings["seq_len"] < 2:
        raise ValueError(f"--seq_len={settings['seq_len']} must be at least 2")
    splits = _split_list(args.splits)
    bad = [s for s in splits if s not in SPLITS]
    if not splits or bad:
        raise ValueError(f"--splits={args.splits!r}: expected a comma-separated subset of {list(SPLITS)}")
    settings["splits"] = splits
    settings["components"] = _split_list(args.components)
    return settings


def _check_inputs(s: dict):
    """Returns the manifest; raises ValueError/FileNotFoundError naming the flag and the fix."""
    import tensorflow as tf

    from gopher_jax.data.manifest import read_manifest
    try:
        manifest = read_manifest(s["manifest"])
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--manifest={s['manifest']}: {e}") from None
    if not tf.io.gfile.exists(s["tokenizer"]):
        raise ValueError(f"--tokenizer={s['tokenizer']}: no such file; pass the SentencePiece .model the run "
                         "trains with (its train.tokenizer), e.g. from `gopher-jax data train-tokenizer`")
    unknown = sorted(set(s["components"]) - set(manifest.components))
    if unknown:
        raise ValueError(f"--components names {unknown}, which the manifest {manifest.root}/manifest.json does not "
                         f"have (it has {sorted(manifest.components)}); fix the name, or process that component "
                         f"with `gopher-jax data process --input NAME=PATH --output {manifest.root}`")
    return manifest


def _register(s: dict, manifest) -> list[str]:
    """Registers the tasks to pack; returns the component names, in manifest order."""
    from data_tasks import massivetext

    def has_train(name):
        train = manifest.components[name].splits.get("train")
        return train is not None and train.documents > 0

    if s["gin_weights"]:  # the run's own (gin-bound) weights decide its components
        import seqio
        mixture = massivetext.register_massivetext_tasks(s["tokenizer"], manifest=manifest.root,
                                                         mixture_name=s["mixture_name"], verbose=False)
        prefix = f"{mixture}_"
        chosen = [t.name[len(prefix):] for t in seqio.get_mixture_or_task(mixture).tasks]
        if s["components"]:
            off = [n for n in s["components"] if n not in chosen]
            if off:
                raise ValueError(f"--components names {off}, which register_massivetext_tasks.weights leaves out "
                                 f"(weight 0, or no data); the run trains on {chosen}")
            chosen = [n for n in chosen if n in s["components"]]
        return chosen
    chosen = s["components"] or sorted(manifest.components)
    empty = [n for n in chosen if not has_train(n)]
    if empty and s["components"]:
        raise ValueError(f"--components names {empty}, which have no training documents in "
                         f"{manifest.root}/manifest.json (everything was filtered out, or went to validation); "
                         "leave them out or reprocess them")
    for n in empty:
        print(f"note: component {n!r} has no training documents; not packed", file=sys.stderr)
    chosen = [n for n in chosen if n not in empty]
    if not chosen:
        raise ValueError(f"--manifest={manifest.root}: no component has training documents")
    massivetext.register_massivetext_tasks(s["tokenizer"], manifest=manifest.root,
                                           weights={n: 1.0 for n in chosen}, mixture_name=s["mixture_name"],
                                           verbose=False)
    return chosen


def pack(s: dict, progress: bool = True) -> list[dict]:
    """Packs (or reuses) every selected (component, split) store under s["out"]; returns one row each.

    Row: component, task, split, status ("packed" | "reused"), rows, tokens, documents, bytes,
    padding_fraction (share of row positions that are padding), seconds, directory.
    """
    import seqio

    from gopher_jax.data import packed_store

    manifest = _check_inputs(s)
    components = _register(s, manifest)
    out, seq_len = s["out"], s["seq_len"]
    table = []
    for name in components:
        task = f"{s['mixture_name']}_{name}"
        for split in s["splits"]:
            if split not in seqio.get_mixture_or_task(task).splits:
                print(f"note: {name} has no {split!r} documents in the manifest; nothing to pack", file=sys.stderr)
                continue
            directory = packed_store.store_dir(out, task, split, seq_len)
            before = packed_store.read_meta(directory)
            t = time.perf_counter()
            store = packed_store.open_store(task, split, seq_len, out, build_missing=True, progress=progress)
            seconds = time.perf_counter() - t
            m = store.meta
            positions = m.rows * m.seq_len
            table.append({"component": name, "task": task, "split": split,
                          "status": "reused" if before == m else "packed", "rows": m.rows, "tokens": m.tokens,
                          "documents": m.documents, "bytes": m.bytes,
                          "padding_fraction": 1 - m.tokens / positions if positions else 0.0,
                          "seconds": seconds, "directory": directory})
    return table


def format_table(table: list[dict]) -> str:
    """Returns the printed table (padding = share of row positions holding no token)."""
    lines = [f"{'component':<14}{'split':<12}{'status':<8}{'rows':>10}{'tokens':>14}{'documents':>11}"
             f"{'bytes':>15}{'padding':>9}{'seconds':>9}"]
    for r in table:
        lines.append(f"{r['component']:<14}{r['split']:<12}{r['status']:<8}{r['rows']:>10,}{r['tokens']:>14,}"
                     f"{r['documents']:>11,}{r['bytes']:>15,}{r['padding_fraction']:>9.2%}{r['seconds']:>9.1f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Packs the stores, prints the table and the gin bindings to use them; returns 0, or 2 on bad input."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        settings = _resolve(args)
        table = pack(settings, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as e:
        print(f"gopher-jax data pack: {e}", file=sys.stderr)
        return 2
    print(format_table(table))
    print(f"\npacked root: {settings['out']} (seq_len {settings['seq_len']}, tasks {settings['mixture_name']}_*). "
          f"Train from it without packing at start-up:\n"
          f"  --gin_param='packed_data.root=\"{settings['out']}\"' --gin_param='packed_data.build_missing=False'")
    if args.json:
        from gopher_jax.atomic_write import atomic_write
        atomic_write(args.json, lambda f: json.dump({"settings": settings,
                                                     "stores": table}, f, indent=1))
    return 0
