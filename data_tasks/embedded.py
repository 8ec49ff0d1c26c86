"""seqio tasks for the embedded default corpus: a small MassiveText-shaped mixture.

Registration only: the corpus and its processing are gopher_jax.data.embedded_corpus and
embedded_mixture; the tasks and mixture are registered exactly like real MassiveText
(data_tasks.massivetext) from the processed output's manifest, at Gopher Table 2's weights.
"""
from __future__ import annotations

from data_tasks import massivetext
from gopher_jax.data import embedded_mixture

MIXTURE = "embedded"


def register_embedded_mixture(vocab_path: str, cache_dir: str | None = None, verbose: bool = True,
                              defer_seqio: bool = False) -> str:
    """Registers `embedded_<component>` tasks and the `embedded` mixture; returns the mixture name.

    The first call builds the processed corpus (filters, dedup, splits; ~10 s, cached).
    defer_seqio: as in register_massivetext_tasks (seqio registration only when a store is built).
    """
    root = embedded_mixture.ensure_processed(cache_dir)
    return massivetext.register_massivetext_tasks(
        vocab_path, manifest=root, weights=massivetext.GOPHER_MASSIVETEXT_SAMPLING, mixture_name=MIXTURE,
        verbose=verbose, defer_seqio=defer_seqio)
