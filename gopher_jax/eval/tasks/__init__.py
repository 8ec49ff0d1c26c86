"""Zero/one/few-shot tasks by name: which scoring rule each uses and its default data file."""
from __future__ import annotations

import os

from gopher_jax.eval.tasks import lambada, multiple_choice, winogrande
from gopher_jax.eval.tasks.loaders import read_docs

# Relative to the repository: ../shared/data/eval (never copied into the repo).
DEFAULT_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))), "..", "shared", "data", "eval")

# name -> (scoring rule, default file name)
TASKS = {
    "lambada": ("lambada", "lambada_openai.jsonl"),
    "piqa": ("choice", "piqa.jsonl"),
    "arc_easy": ("choice", "arc_easy.jsonl"),
    "arc_challenge": ("choice", "arc_challenge.jsonl"),
    "openbookqa": ("choice", "openbook_qa.jsonl"),
    "copa": ("choice", "copa.jsonl"),
    "siqa": ("choice", "siqa.jsonl"),
    "boolq": ("choice", "boolq.jsonl"),
    "hellaswag": ("choice", "hellaswag_val.txt.bz2"),
    "winogrande": ("partial", "winogrande.jsonl"),
    # RACE-style answer-context normalisation; no RACE file is shipped: pass --data.
    "race": ("choice_answer_norm", ""),
}


def default_data(task: str) -> str:
    """Returns the task's default file under ../shared/data/eval ('' if it has none)."""
    name = TASKS[task][1]
    return os.path.normpath(os.path.join(DEFAULT_DATA_DIR, name)) if name else ""


def evaluate_task(task: str, lm, data: str = "", shots: int = 0, limit: int = 0, seed: int = 1234) -> dict:
    """Returns the metrics dict of `task` on `data` (default file if ''), first `limit` docs (0 = all)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    path = data or default_data(task)
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path!r} for task {task!r} not found; pass --data PATH "
                                f"(the shared eval sets live in ../shared/data/eval)")
    # Few-shot examples are drawn from the loaded docs, so --limit also bounds their pool.
    docs = read_docs(path, limit)
    rule = TASKS[task][0]
    if rule == "lambada":
        return lambada.evaluate(lm, docs, shots, seed)
    if rule == "partial":
        return winogrande.evaluate(lm, docs, shots, seed)
    answer_context = "Answer:" if rule == "choice_answer_norm" else ""
    return multiple_choice.evaluate(lm, docs, shots, seed, answer_context)
