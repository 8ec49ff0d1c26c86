"""What a training run reads: a registered seqio task or mixture -> packed train stream + held-out sets.

`build_training_data("massivetext", ...)` packs (or reuses the packed cache of) every task of the
mixture, train and validation splits, and returns the tracked-mixture iterator and one held-out set
per component. A plain task is a mixture of one. Component names drop the mixture's common task-name
prefix, so "massivetext_books" reports as "books" (`eval_bits_per_byte/books`).
"""
from __future__ import annotations

import dataclasses
import os
import sys

import gin

from gopher_jax.data import packed_store, task_specs
from gopher_jax.data.mixture_input import Component, EvalSet, MixtureBatches, eval_set

VALIDATION = "validation"


@gin.configurable("packed_data")
@dataclasses.dataclass(frozen=True)
class PackedDataConfig:
    """Where packed rows live (docs/data_input.md#packed-rows)."""

    # Root of the packed stores: "" = $GOPHER_JAX_CACHE_DIR/packed (or ~/.cache/gopher_jax/packed),
    # built on first use. A pod run points it at rows packed beforehand with `gopher-jax data pack`
    # (e.g. "gs://bucket/packed") and sets build_missing=False, so no host tokenizes at start-up.
    root: str = ""
    build_missing: bool = True  # pack a missing or stale store in-process (False: it is an error)


@dataclasses.dataclass
class TrainingData:
    """The train iterator, the held-out sets (one per component) and the components' weights."""

    train: MixtureBatches
    evals: list[EvalSet]
    weights: dict[str, float]  # component -> normalised target weight
    tasks: dict[str, str]  # component -> seqio task name


def mixture_tasks(name: str) -> list[tuple[str, float]]:
    """Returns [(task name, rate)] of a registered mixture, or [(name, 1.0)] for a task.

    Mixtures registered through data_tasks are read from their specs (no seqio, no TensorFlow)."""
    recorded = task_specs.mixture_or_task(name)
    if recorded is not None:
        return recorded
    import seqio
    try:
        provider = seqio.get_mixture_or_task(name)
    except ValueError as e:
        raise ValueError(f"seqio task or mixture {name!r} is not registered ({e}). Set train.train_task to a "
                         "registered name, or bind register_massivetext_tasks.manifest "
                         "(gin_configs/data/massivetext.gin) so `gopher-jax train` registers the mixture") from e
    if isinstance(provider, seqio.Mixture):
        return [(t.name, float(provider.get_rate(t))) for t in provider.tasks]
    return [(provider.name, 1.0)]


def component_names(task_names: list[str]) -> dict[str, str]:
    """Returns task name -> short component name (the common "<prefix>_" of several tasks removed)."""
    if len(task_names) < 2:
        return {t: t for t in task_names}
    prefix = os.path.commonprefix(task_names)
    prefix = prefix[:prefix.rfind("_") + 1] if "_" in prefix else ""
    return {t: t[len(prefix):] or t for t in task_names}


def task_splits(task: str) -> list[str]:
    """Returns the split names of a task (from its spec when data_tasks registered it, else seqio's)."""
    spec = task_specs.task(task)
    if spec is not None:
        return list(spec.splits)
    import seqio
    return list(seqio.get_mixture_or_task(task).splits)


def open_split(task: str, split: str, seq_len: int, progress: bool = True,
               root: str | None = None) -> packed_store.PackedStore:
    """Returns the packed store of one task split under `root` or the configured one (building it if allowed)."""
    cfg = PackedDataConfig()
    return packed_store.open_store(task, split, seq_len, root or cfg.root or None, build_missing=cfg.build_missing,
                                   progress=progress)


def build_training_data(train_task: str, *, seq_len: int, global_batch: int, seed: int, eval_batches: int,
                        eval_task: str = "", process_index: int = 0, process_count: int = 1,
                        progress: bool = True, packed_root: str | None = None) -> TrainingData:
    """Returns the TrainingData of a registered task or mixture (see the module docstring).

    eval_task: a task or mixture whose "validation" split(s) to score instead of the train mixture's.
    eval_batches: global batches scored per component and evaluation (0 = the whole split).
    packed_root: where the packed stores live (default: packed_data.root, else the cache).
    """
    tasks = mixture_tasks(train_task)
    short = component_names([t for t, _ in tasks])
    components = [Component(short[t], rate, open_split(t, "train", seq_len, progress, packed_root)) for t, rate in tasks if rate > 0]
    train = MixtureBatches(components, global_batch=global_batch, seed=seed, process_index=process_index,
                           process_count=process_count)
    eval_tasks = mixture_tasks(eval_task) if eval_task else tasks
    eval_short = component_names([t for t, _ in eval_tasks])
    evals = []
    for t, _ in eval_tasks:
        if VALIDATION not in task_splits(t):
            print(f"note: task {t!r} has no {VALIDATION!r} split; its held-out loss is not reported",
                  file=sys.stderr)
            continue
        store = open_split(t, VALIDATION, seq_len, progress, packed_root)
        if store.rows:
            evals.append(eval_set(eval_short[t], store, global_batch, eval_batches))
    return TrainingData(train=train, evals=evals, weights=dict(train.weights),
                        tasks={short[t]: t for t, _ in tasks})
