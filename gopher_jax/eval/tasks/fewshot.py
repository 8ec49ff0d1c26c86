"""Few-shot example selection: reproducible from a seed, never the evaluated document itself."""
from __future__ import annotations

import numpy as np

FEWSHOT_DELIMITER = "\n\n"  # lm-eval's default between examples


def fewshot_indices(num_docs: int, doc_index: int, shots: int, seed: int) -> list[int]:
    """Returns `shots` distinct indices != doc_index, the same for the same (seed, doc_index)."""
    if shots <= 0:
        return []
    if shots >= num_docs:
        raise ValueError(f"--shots={shots} needs more than {num_docs} documents to draw from; lower --shots")
    rng = np.random.default_rng([seed, doc_index])
    pool = rng.choice(num_docs - 1, size=shots, replace=False)
    return [int(i) + (i >= doc_index) for i in pool]  # skip over the evaluated document


def fewshot_prefix(docs: list[dict], doc_index: int, shots: int, seed: int, render) -> str:
    """Returns the rendered examples joined by blank lines, ending with a delimiter ('' for 0 shots)."""
    idx = fewshot_indices(len(docs), doc_index, shots, seed)
    return "".join(render(docs[i]) + FEWSHOT_DELIMITER for i in idx)
