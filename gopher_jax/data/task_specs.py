"""What registered tasks and mixtures are made of, in plain Python: readable without seqio or TensorFlow.

seqio's registries hold the tasks that *build* packed stores (they tokenize through tf.data). Once
the stores exist, a training run needs only each task's vocabulary file and the source files of
each split, and each mixture's tasks and rates. `data_tasks` records them here when it registers,
so `gopher-jax train` resolves its mixture, checks its stores against their sources and reads them
without importing TensorFlow (~5-10 s of start-up). Building a missing or stale store asks for the
seqio task then (`ensure_seqio`), which registers it on first use.

Tasks registered directly with seqio (not through `data_tasks`) have no spec; the readers fall back
to seqio's registry for them.
"""
from __future__ import annotations

import dataclasses
import glob
import os
from typing import Callable, Mapping


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One text task: its SentencePiece model and, per split, the glob of the files it reads."""

    name: str
    vocab_path: str
    splits: Mapping[str, str]  # split -> file pattern (local path or URL glob)
    register_seqio: Callable[[], None]  # registers this task (and its mixture) with seqio


@dataclasses.dataclass(frozen=True)
class MixtureSpec:
    """A weighted mixture of registered tasks (rates normalised to sum to 1)."""

    name: str
    tasks_and_rates: tuple[tuple[str, float], ...]


_TASKS: dict[str, TaskSpec] = {}
_MIXTURES: dict[str, MixtureSpec] = {}
_SEQIO_DONE: set = set()  # the register_seqio callables already run (held, so never reused)


def add_task(spec: TaskSpec) -> None:
    """Records (or replaces) a task spec."""
    _TASKS[spec.name] = spec


def add_mixture(spec: MixtureSpec) -> None:
    """Records (or replaces) a mixture spec."""
    _MIXTURES[spec.name] = spec


def task(name: str) -> TaskSpec | None:
    """Returns the spec of task `name`, or None when it was not registered through data_tasks."""
    return _TASKS.get(name)


def mixture_or_task(name: str) -> list[tuple[str, float]] | None:
    """Returns [(task, rate)] of a recorded mixture, [(name, 1.0)] of a recorded task, else None."""
    if name in _MIXTURES:
        return list(_MIXTURES[name].tasks_and_rates)
    if name in _TASKS:
        return [(name, 1.0)]
    return None


def ensure_seqio(name: str) -> None:
    """Registers the seqio task (or every task of the mixture) behind a recorded spec, once.

    Does nothing for names with no spec (tasks registered with seqio directly)."""
    if name in _MIXTURES:
        for task_name, _ in _MIXTURES[name].tasks_and_rates:
            ensure_seqio(task_name)
        return
    spec = _TASKS.get(name)
    if spec is not None and spec.register_seqio not in _SEQIO_DONE:
        spec.register_seqio()
        _SEQIO_DONE.add(spec.register_seqio)


def list_files(pattern: str) -> list[str]:
    """Returns the sorted files matching a glob: local paths through `glob`, URLs through tf.io.gfile.

    The same list seqio's file sources read for the pattern, so fingerprints built from either agree.
    """
    if "://" in pattern:
        import tensorflow as tf
        return sorted(tf.io.gfile.glob(pattern))
    return sorted(glob.glob(pattern))


def file_size(path: str) -> int:
    """Returns the size in bytes of a local file or a URL (tf.io.gfile)."""
    if "://" in path:
        import tensorflow as tf
        return int(tf.io.gfile.stat(path).length)
    return os.path.getsize(path)
