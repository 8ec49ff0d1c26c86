"""Zero/one/few-shot tasks by name: the scoring rule, public format and default file name of each."""
from __future__ import annotations

import dataclasses
import os

from gopher_jax.eval.tasks import lambada, multiple_choice, winogrande
from gopher_jax.eval.tasks.loaders import expected_fields, load_task_docs
from gopher_jax.eval.tasks.public_formats import FORMATS

# A directory holding the tasks' files under their default names (docs/evaluation.md); --data_dir wins.
EVAL_DIR_ENV = "GOPHER_JAX_EVAL_DIR"


@dataclasses.dataclass(frozen=True)
class Task:
    """rule: how docs are scored; format: key of public_formats.FORMATS ('' = internal form only);
    files: names looked for in the eval directory, ours first, then the release's own if distinctive."""
    rule: str
    format: str
    files: tuple[str, ...]


TASKS = {
    "lambada": Task("lambada", "lambada_openai", ("lambada_openai.jsonl", "lambada_test.jsonl")),
    "hellaswag": Task("choice", "hellaswag", ("hellaswag.jsonl", "hellaswag_val.jsonl")),
    "piqa": Task("choice", "piqa", ("piqa.jsonl",)),
    "arc_easy": Task("choice", "arc", ("arc_easy.jsonl", "ARC-Easy-Test.jsonl")),
    "arc_challenge": Task("choice", "arc", ("arc_challenge.jsonl", "ARC-Challenge-Test.jsonl")),
    "openbookqa": Task("choice", "openbookqa", ("openbookqa.jsonl",)),
    "winogrande": Task("partial", "winogrande", ("winogrande.jsonl",)),
    "boolq": Task("choice", "boolq", ("boolq.jsonl",)),
    "copa": Task("choice", "copa", ("copa.jsonl",)),
    "siqa": Task("choice", "siqa", ("siqa.jsonl",)),
    # RACE-style answer-context normalisation (Gopher/GPT-3) on the internal form only.
    "race": Task("choice_answer_norm", "", ("race.jsonl",)),
}


def data_path(task: str, data: str = "", data_dir: str = "") -> str:
    """Returns the file to read for `task`: `data` if given, else its default name in `data_dir` (or
    $GOPHER_JAX_EVAL_DIR). Raises FileNotFoundError saying how to point at the data."""
    spec = TASKS[task]
    fmt = FORMATS.get(spec.format)
    how = (f"pass --data FILE, or --data_dir DIR (or {EVAL_DIR_ENV}=DIR) holding {' or '.join(spec.files)}; "
           + expected_fields(task, spec.rule, fmt))
    if data:
        if not os.path.isfile(data):
            raise FileNotFoundError(f"data file {data!r} for task {task!r} not found; {how}")
        return data
    directory = data_dir or os.environ.get(EVAL_DIR_ENV, "")
    if not directory:
        raise FileNotFoundError(f"task {task!r} has no data file: {how}")
    for name in spec.files:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{directory!r} has no {' or '.join(spec.files)} for task {task!r}; {how}")


def load_docs(task: str, data: str = "", data_dir: str = "", limit: int = 0) -> list[dict]:
    """Returns the first `limit` (0 = all) docs of `task` in its scorer's internal form."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    spec = TASKS[task]
    return load_task_docs(task, spec.rule, spec.format, data_path(task, data, data_dir), limit)


def evaluate_task(task: str, lm, data: str = "", shots: int = 0, limit: int = 0, seed: int = 1234,
                  data_dir: str = "") -> dict:
    """Returns the metrics dict of `task` on its file (see data_path), first `limit` docs (0 = all)."""
    # Few-shot examples are drawn from the loaded docs, so --limit also bounds their pool.
    return evaluate_docs(task, lm, load_docs(task, data, data_dir, limit), shots, seed)


def evaluate_docs(task: str, lm, docs: list[dict], shots: int = 0, seed: int = 1234) -> dict:
    """Returns the metrics dict of `task` on docs already in its internal form (see load_docs)."""
    rule = TASKS[task].rule
    if rule == "lambada":
        return lambada.evaluate(lm, docs, shots, seed)
    if rule == "partial":
        return winogrande.evaluate(lm, docs, shots, seed)
    answer_context = "Answer:" if rule == "choice_answer_norm" else ""
    return multiple_choice.evaluate(lm, docs, shots, seed, answer_context)
