"""seqio tasks for the six MassiveText components and their Gopher mixture; public TFDS stand-ins.

Registration only (logic: gopher_jax.data). MassiveText itself is not public: process your text
with `gopher-jax data process --input massiveweb=... --input books=... --output OUT` (local or
gs://) and name OUT in gin, e.g. gin_configs/data/massivetext.gin:

    register_massivetext_tasks.manifest = "gs://bucket/massivetext_processed"

OUT/manifest.json lists each component's train and validation shards, so that one binding is all
a run needs. Each component becomes the task `<mixture>_<component>` with "train" and
"validation" splits, and the mixture `<mixture>` (also registered as `<mixture>_validation`,
read with split="validation") samples them at the given weights, tracked (MT-NLG).

The public stand-ins (c4, wikipedia, pg19 for books) read TFDS datasets, which users with the
data (a GCS TFDS bucket or a local TFDS build) can point `tfds_data_dir` at. Nothing here
downloads anything at import or registration time.
"""
from __future__ import annotations

import functools
import math
import sys
from typing import Mapping, Sequence

import gin

from gopher_jax.data import input_pipeline, mixture, task_specs
from gopher_jax.data.manifest import CorpusManifest, read_manifest

# seqio (and through it TensorFlow) is imported when a task is registered with seqio, not here:
# `gopher-jax train` on packed stores records the mixture in gopher_jax.data.task_specs and never
# needs it (docs/data_input.md).

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
    import seqio
    return {"targets": seqio.Feature(seqio.SentencePieceVocabulary(vocab_path), add_eos=True, dtype="int32")}


def _preprocessors(text_key: str) -> list:
    import seqio
    return [functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
            seqio.preprocessors.tokenize,
            seqio.preprocessors.append_eos,
            input_pipeline.split_targets_to_length]


def _add_task(name: str, source, text_key: str, vocab_path: str) -> None:
    import seqio
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(name, source=source, preprocessors=_preprocessors(text_key),
                           output_features=_output_features(vocab_path), shuffle_buffer_size=10_000)


def _add_mixture(name: str, tasks_and_rates: list[tuple[str, float]]) -> None:
    import seqio
    if name in seqio.MixtureRegistry.names():
        seqio.MixtureRegistry.remove(name)
    # Tracked blending (MT-NLG): the realised mix stays at the target weights.
    seqio.MixtureRegistry.add(name, tasks_and_rates, sample_fn=mixture.tracked_sample_fn)


def _check_weights(weights: Mapping[str, float], binding: str) -> None:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"{binding}={weights!r} must be a non-empty dict of component -> weight, e.g. "
                         "%GOPHER_MASSIVETEXT_SAMPLING")
    bad = {k: w for k, w in weights.items()
           if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"{binding} has negative or non-numeric weights {bad}; weights must be >= 0 "
                         f"(0 leaves a component out)")


def _manifests(manifest: str | Sequence[str]) -> list[CorpusManifest]:
    paths = [manifest] if isinstance(manifest, str) else list(manifest)
    if not paths:
        raise ValueError("register_massivetext_tasks.manifest is empty: name the `gopher-jax data process` "
                         "output directory (or several)")
    return [read_manifest(p) for p in paths]


@gin.configurable
def register_massivetext_tasks(vocab_path: str, manifest: str | Sequence[str] = gin.REQUIRED,
                               weights: Mapping[str, float] = GOPHER_MASSIVETEXT_SAMPLING,
                               mixture_name: str = "massivetext", verbose: bool = True,
                               defer_seqio: bool = False) -> str:
    """Registers one task per processed component and their weighted mixture; returns the mixture name.

    manifest: a `gopher-jax data process` output directory (or a list of them) holding manifest.json.
    weights: component -> sampling weight (default Gopher Table 2). Components the manifests do not
    have are left out and the rest renormalised; the table of given and realised weights is printed.
    defer_seqio: record the tasks in gopher_jax.data.task_specs only and register them with seqio
    when a packed store must be built (`gopher-jax train` does: no TensorFlow once packed).
    Raises ValueError (naming the binding and the fix) for negative or all-zero weights, unknown
    components, a component with no training documents or shards that match no file.
    """
    binding = "register_massivetext_tasks.weights"
    _check_weights(weights, binding)
    components: dict[str, tuple[CorpusManifest, str]] = {}
    for m in _manifests(manifest):
        for name in m.components:
            if name in components:
                raise ValueError(f"component {name!r} is in two manifests ({components[name][0].root} and "
                                 f"{m.root}); register_massivetext_tasks.manifest must name each component once")
            components[name] = (m, name)
    known = set(COMPONENTS) | set(components)
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"{binding} names unknown components {unknown}: they are neither MassiveText components "
                         f"{list(COMPONENTS)} nor in the manifest(s) ({sorted(components)}); fix the name or "
                         "process that component with `gopher-jax data process`")
    used, left_out = [], []
    for name in weights:
        if weights[name] == 0:
            continue
        if name not in components:
            left_out.append(name)
            continue
        m, _ = components[name]
        train = m.components[name].splits.get("train")
        if train is None or not train.documents:
            raise ValueError(f"component {name!r} has no training documents in {m.root}/manifest.json (every "
                             f"document was filtered out, or it went entirely to validation); set its weight to 0 "
                             f"in {binding} or reprocess it")
        used.append(name)
    if not used:
        raise ValueError(f"{binding}={dict(weights)} leaves no component with data: the manifest(s) have "
                         f"{sorted(components)}; give at least one of them a positive weight")
    task_splits = {f"{mixture_name}_{name}": _split_patterns(components[name][0], name) for name in used}
    rates = mixture.normalize_weights({n: weights[n] for n in used})
    tasks_and_rates = [(f"{mixture_name}_{n}", rates[n]) for n in used]

    def register_seqio() -> None:
        import seqio
        import tensorflow as tf
        for task_name, splits in task_splits.items():
            source = seqio.TFExampleDataSource(
                dict(splits), feature_description={"text": tf.io.FixedLenFeature([], tf.string)})
            _add_task(task_name, source, "text", vocab_path)
        _add_mixture(mixture_name, tasks_and_rates)
        _add_mixture(f"{mixture_name}_validation", tasks_and_rates)

    for task_name, splits in task_splits.items():
        task_specs.add_task(task_specs.TaskSpec(task_name, vocab_path, splits, register_seqio))
    for name in (mixture_name, f"{mixture_name}_validation"):
        task_specs.add_mixture(task_specs.MixtureSpec(name, tuple(tasks_and_rates)))
    if not defer_seqio:
        task_specs.ensure_seqio(tasks_and_rates[0][0])
    if verbose:
        print(_weights_table(mixture_name, weights, rates, components, left_out), file=sys.stderr, flush=True)
    return mixture_name


def _split_patterns(m: CorpusManifest, name: str) -> dict[str, str]:
    """Returns {split: tfrecord glob} of a component's non-empty splits; raises if a glob matches no file."""
    splits = {}
    for split in ("train", "validation"):
        entry = m.components[name].splits.get(split)
        if entry is None or not entry.documents:
            continue
        pattern = m.pattern(name, split, "tfrecord")
        if not task_specs.list_files(pattern):
            raise ValueError(f"component {name!r} split {split!r}: {pattern} matches no file, though "
                             f"{m.root}/manifest.json lists {entry.documents} documents; the shards were "
                             f"moved or deleted: rerun `gopher-jax data process --output {m.root}`")
        splits[split] = pattern
    return splits


def _weights_table(mixture_name, weights, rates, components, left_out) -> str:
    lines = [f"mixture {mixture_name!r}: {len(rates)} components"
             + (f"; left out (no data): {', '.join(left_out)}, weights renormalised" if left_out else ""),
             f"  {'component':<12}{'given':>8}{'realised':>10}{'train docs':>12}{'train MB':>10}{'valid docs':>12}"]
    for name in weights:
        if name in rates:
            m, _ = components[name]
            splits = m.components[name].splits
            valid = splits.get("validation")
            lines.append(f"  {name:<12}{weights[name]:>8.3f}{rates[name]:>10.4f}{splits['train'].documents:>12,}"
                         f"{splits['train'].bytes / 1e6:>10.2f}{(valid.documents if valid else 0):>12,}")
        else:
            lines.append(f"  {name:<12}{weights[name]:>8.3f}{0.0:>10.4f}{'-':>12}{'-':>10}{'-':>12}")
    return "\n".join(lines)


@gin.configurable
def register_public_standins(vocab_path: str, tfds_data_dir: str | None = None,
                             weights: Mapping[str, float] = PUBLIC_SAMPLING,
                             mixture_name: str = "massivetext_public") -> str:
    """Registers TFDS-backed c4 / wikipedia / pg19 tasks and their mixture; returns its name.

    tfds_data_dir: where the prepared TFDS datasets live (e.g. "gs://tfds-data/datasets", or a
    local directory built with `tfds build`); nothing is downloaded until the tasks are read.
    """
    import seqio
    for name, (tfds_name, text_key) in PUBLIC_SOURCES.items():
        source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=tfds_data_dir)
        _add_task(f"public_{name}", source, text_key, vocab_path)
    _add_mixture(mixture_name, [(f"public_{n}", w) for n, w in weights.items()])
    return mixture_name
