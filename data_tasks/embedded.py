"""seqio tasks for the embedded default corpus (gensim's Lee news + English Wikipedia excerpt).

Registration only: the corpus is gopher_jax.data.embedded_corpus, the preprocessors come from seqio
and gopher_jax.data.input_pipeline. The vocabulary path is known only at runtime (the tokenizer is
trained on first use), so nothing is registered at import; call `register_embedded_tasks`.
"""
from __future__ import annotations

import functools

import seqio

from gopher_jax.data import embedded_corpus
from gopher_jax.data import input_pipeline

TRAIN_TASK = "embedded_train"
EVAL_TASK = "embedded_validation"


def register_embedded_tasks(vocab_path: str, cache_dir: str | None = None) -> tuple[str, str]:
    """Registers the train and held-out tasks with a SentencePiece vocabulary at `vocab_path`.

    Returns (train_task_name, eval_task_name). Idempotent: calling again with the same vocabulary is
    a no-op; with a different one, the tasks are re-registered with the new vocabulary.
    """
    for name, split in ((TRAIN_TASK, embedded_corpus.TRAIN), (EVAL_TASK, embedded_corpus.HELD_OUT)):
        if name in seqio.TaskRegistry.names():
            existing = seqio.TaskRegistry.get(name)
            if existing.output_features["targets"].vocabulary.sentencepiece_model_file == vocab_path:
                continue
            seqio.TaskRegistry.remove(name)
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(
                functools.partial(embedded_corpus.tf_dataset, cache_dir=cache_dir), splits=(split,)),
            preprocessors=[
                functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
                seqio.preprocessors.tokenize,
                seqio.preprocessors.append_eos,
                input_pipeline.split_targets_to_length,
            ],
            output_features={"targets": seqio.Feature(
                seqio.SentencePieceVocabulary(vocab_path), add_eos=True, dtype="int32")},
            # Documents are already shuffled at the source; this buffer mixes their 256-token chunks
            # (a long article is ~100 chunks). 10k (the whole split) would delay the first batch ~10 s.
            shuffle_buffer_size=1_000,
        )
    return TRAIN_TASK, EVAL_TASK
