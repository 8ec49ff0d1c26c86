"""seqio Task/Mixture registrations (registration only; the logic lives in gopher_jax.data).

The layering is one-way: these modules import gopher_jax.data, never the reverse. Commands
(`gopher-jax train`, `eval`, the benchmarks) call `register_for_training` before they read data;
gin files import the registration modules they configure (`import data_tasks.massivetext`).
"""
from __future__ import annotations

from data_tasks import embedded, massivetext  # noqa: F401  (their gin configurables must be known)
from gopher_jax.gin_utils import is_bound


def register_for_training(vocab_path: str, train_task: str = "", verbose: bool = True) -> str:
    """Registers what a run trains on and returns the task or mixture name to train on.

    train_task "" (the default) is the embedded mixture, unless gin binds
    `register_massivetext_tasks.manifest` (gin_configs/data/massivetext.gin), which registers the
    MassiveText mixture. A name of an already registered task or mixture is returned unchanged.
    Both mixtures are recorded in gopher_jax.data.task_specs and registered with seqio only when a
    packed store has to be built, so training from packed rows never imports TensorFlow.
    """
    if is_bound("register_massivetext_tasks.manifest"):
        name = massivetext.register_massivetext_tasks(vocab_path, verbose=verbose, defer_seqio=True)
        return train_task or name
    if train_task:
        return train_task
    return embedded.register_embedded_mixture(vocab_path, verbose=verbose, defer_seqio=True)
