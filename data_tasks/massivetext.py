"""seqio tasks for the six MassiveText components and their Gopher mixture; public TFDS stand-ins.

Registration only (logic: gopher_jax.data.mixture, gopher_jax.data.input_pipeline). MassiveText
itself is not public: point each component at shards you produced with `gopher-jax data
process` (TFRecord, feature "text") via gin, e.g. in gin_configs/data/massivetext.gin:

    register_massivetext_tasks.paths = {"massiveweb": "gs://bucket/massiveweb/part-*.tfrecord", ...}

The public stand-ins (c4, wikipedia, pg19 for books) read TFDS datasets, which users with the
data (a GCS TFDS bucket or a local TFDS build) can point `tfds_data_dir` at. Nothing here
downloads anything at import or registration time.
"""
from __future__ import annotations

import functools
from typing import Mapping

import gin
import seqio
import tensorflow as tf

from gopher_jax.data import input_pipeline, mixture

# Gopher (Rae et al. 2021) Table 2, "sampling proportion" of each MassiveText subset in training.
GOPHER_MASSIVETEXT_SAMPLING = {
    "massiveweb": 0.48, "books": 0.27, "c4": 0.10, "news": 0.10, "github": 0.03, "wikipedia": 0.02}
gin.constant("GOPHER_MASSIVETEXT_SAMPLING", GOPHER_MASSIVETEXT_SAMPLING)  # %GOPHER_MASSIVETEXT_SAMPLING in gin
COMPONENTS = tuple(GOPHER_MASSIVETEXT_SAMPLING)

# Public stand-ins: TFDS name and the feature holding the text.
PUBLIC_SOURCES = {
    "c4": ("c4/en:3.1.0", "text"),
    "wikipedia": ("wikipedia/20230601.en:1.0.0", "text"),
    "pg19": ("pg19:0.1.1", "book_text"),
}
# Stand-in weights derived from Gopher's: web-like text (MassiveWeb, C4, News) -> c4, Books ->
# pg19, Wikipedia -> wikipedia; GitHub has no stand-in here. Renormalised when mixed.
PUBLIC_SAMPLING = {"c4": 0.48 + 0.10 + 0.10, "pg19": 0.27, "wikipedia": 0.02}


def _output_features(vocab_path: str) -> dict:
    return {"targets": seqio.Feature(seqio.SentencePieceVocabulary(vocab_path), add_eos=True, dtype="int32")}


def _preprocessors(text_key: str) -> list:
    return [functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos,
            input_pipeline.split_targets_to_length]


def _add_task(name: str, source, text_key: str, vocab_path: str) -> None:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, preprocessors=_preprocessors(text_key),
                           output_features=_output_features(vocab_path), shuffle_buffer_size=10_000)


def _add_mixture(name: str, tasks_and_rates: list[tuple[str, float]]) -> None:
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    # Tracked blending (MT-NLG): the realised mix stays at the target weights.
    seqio.MixtureRegistry.add(name, tasks_and_rates, sample_fn=mixture.tracked_sample_fn)


@gin.configurable
def register_massivetext_tasks(vocab_path: str, paths: Mapping[str, str] = gin.REQUIRED,
                               weights: Mapping[str, float] = GOPHER_MASSIVETEXT_SAMPLING,
                               mixture_name: str = "massivetext") -> str:
    """Registers `massivetext_<component>` tasks over TFRecord shards and their mixture.

    paths: component -> file pattern (TFRecord of tf.train.Example with a "text" feature, as
    written by `gopher-jax data process`). Components without a path are left out of the
    mixture (their weight is redistributed by renormalisation). Returns the mixture name.
    """
    unknown = sorted(set(paths) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"register_massivetext_tasks.paths has unknown components {unknown}; "
                         f"expected some of {COMPONENTS}")
    if not paths:
        raise ValueError("register_massivetext_tasks.paths is empty: give at least one component's shards")
    for comp, pattern in paths.items():
        source = seqio.TFExampleDataSource(
            {"train": pattern}, feature_description={"text": tf.io.FixedLenFeature([], tf.string)})
        _add_task(f"massivetext_{comp}", source, "text", vocab_path)
    _add_mixture(mixture_name, [(f"massivetext_{c}", weights[c]) for c in COMPONENTS if c in paths])
    return mixture_name


@gin.configurable
def register_public_standins(vocab_path: str, tfds_data_dir: str | None = None,
                             weights: Mapping[str, float] = PUBLIC_SAMPLING,
                             mixture_name: str = "massivetext_public") -> str:
    """Registers TFDS-backed c4 / wikipedia / pg19 tasks and their mixture; returns its name.

    tfds_data_dir: where the prepared TFDS datasets live (e.g. "gs://tfds-data/datasets", or a
    local directory built with `tfds build`); nothing is downloaded until the tasks are read.
    """
    for name, (tfds_name, text_key) in PUBLIC_SOURCES.items():
        source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)
        _add_task(f"public_{name}", source, text_key, vocab_path)
    _add_mixture(mixture_name, [(f"public_{n}", w) for n, w in weights.items()])
    return mixture_name
