"""Language-model evaluation: loss (nats/token), perplexity and bits-per-byte of held-out text.

Documents longer than the model's window are scored with a sliding window (`stride` new tokens
per window, the rest as context), so every token is scored exactly once. Bits-per-byte divides
by the UTF-8 bytes of the raw text, which makes models with different tokenizers comparable
(Gopher reports the Pile this way). Sources: text files (.txt = one document per file; .jsonl =
a 'text' field per line) or a seqio task (its raw 'targets_pretokenized' text).
"""
from __future__ import annotations

import json
import math
from typing import Iterable, Iterator

import numpy as np

from gopher_jax.eval.scorer import rolling_windows


def read_text_documents(path: str, text_key: str = "text", limit: int = 0) -> Iterator[str]:
    """Yields documents: the whole file for .txt, one `text_key` field per line for .jsonl."""
    if path.endswith(".jsonl"):
        n = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    doc = json.loads(line)
                    if text_key not in doc:
                        raise ValueError(f"{path}: a line has no {text_key!r} field (keys {sorted(doc)}); "
                                         f"pass --text_key")
                    yield doc[text_key]
                    n += 1
                    if limit and n >= limit:
                        return
    else:
        with open(path, encoding="utf-8") as f:
            yield f.read()


def seqio_documents(task: str, split: str | None = None, limit: int = 0) -> Iterator[tuple[list[int], str]]:
    """Yields (token ids incl. EOS, raw text) of a seqio task's documents."""
    from gopher_jax.data.input_pipeline import _task_token_arrays

    for n, (tokens, raw) in enumerate(_task_token_arrays(task, split)):
        if limit and n >= limit:
            return
        yield [int(t) for t in np.asarray(tokens) if t != 0], raw.decode("utf-8") if isinstance(raw, bytes) else raw


def evaluate_documents(scorer, docs: Iterable[tuple[list[int], str]], prefix_id: int,
                       stride: int | None = None) -> dict:
    """Returns {'loss' (nats/token), 'ppl', 'bits_per_byte', 'tokens', 'bytes', 'documents'} over
    (token ids, raw text) documents, each scored from a document start (`prefix_id`)."""
    total_ll = 0.0
    tokens = num_bytes = n_docs = 0
    requests = []
    for ids, text in docs:
        requests += rolling_windows(ids, prefix_id, scorer.window, stride)
        tokens += len(ids)
        num_bytes += len(text.encode("utf-8"))
        n_docs += 1
    if not tokens:
        raise ValueError("no tokens to evaluate: the documents are empty")
    total_ll = sum(ll for ll, _ in scorer.loglikelihood(requests))
    loss = -total_ll / tokens
    return {"loss": loss, "ppl": math.exp(loss), "bits_per_byte": -total_ll / math.log(2) / num_bytes,
            "tokens": tokens, "bytes": num_bytes, "documents": n_docs}


def evaluate_text(text_lm, path: str, stride: int | None = None, text_key: str = "text", limit: int = 0) -> dict:
    """Returns `evaluate_documents` metrics of a .txt/.jsonl file, tokenised with text_lm's tokenizer."""
    docs = ((text_lm.encode(t), t) for t in read_text_documents(path, text_key, limit))
    return evaluate_documents(text_lm.scorer, docs, text_lm.prefix_id, stride)
