"""Reading a task's file: its public release jsonl (public_formats.py), the internal form, or
HellaSwag's 6-lines-per-item text form.

Internal forms (also what llm-foundry's local eval data uses):
  lambada   {context, continuation}
  choice    {query, choices, gold}                     (PIQA, ARC, OBQA, COPA, SIQA, BoolQ, HellaSwag, RACE)
  partial   {context_options, continuation, gold}      (Winogrande partial scoring)
"""
from __future__ import annotations

import bz2
import json

from gopher_jax.eval.tasks.public_formats import FORMATS, PublicFormat, hellaswag_preprocess

INTERNAL_FIELDS = {
    "lambada": ("context", "continuation"),
    "choice": ("query", "choices", "gold"),
    "choice_answer_norm": ("query", "choices", "gold"),
    "partial": ("context_options", "continuation", "gold"),
}


def read_jsonl(path: str, limit: int = 0) -> list[dict]:
    """Returns the first `limit` (0 = all) JSON objects of a jsonl file; names the line on bad JSON."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON ({e}); expected one JSON object per line") from e
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{n} is a JSON {type(rec).__name__}; expected one JSON object per line")
            docs.append(rec)
            if limit and len(docs) >= limit:
                break
    return docs


def read_hellaswag_txt(path: str, limit: int = 0) -> list[dict]:
    """Returns {query, choices, gold} from the 6-lines-per-item text format (.txt or .txt.bz2):
    'activity_label: context', the gold index, then 4 endings."""
    opener = bz2.open if path.endswith(".bz2") else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6 (context, label, 4 endings per item)")
    docs = []
    for i in range(0, len(lines), 6):
        label = lines[i + 1].strip()
        if not label.isdigit() or int(label) > 3:
            raise ValueError(f"{path}:{i + 2}: label {label!r} should be 0-3")
        docs.append({"query": hellaswag_preprocess(lines[i]),
                     "choices": [hellaswag_preprocess(e) for e in lines[i + 2:i + 6]], "gold": int(label)})
        if limit and len(docs) >= limit:
            break
    return docs


def read_docs(path: str, limit: int = 0) -> list[dict]:
    """Returns the raw records of a jsonl file, or the docs of a HellaSwag txt(.bz2) file."""
    if path.endswith((".txt", ".txt.bz2")):
        return read_hellaswag_txt(path, limit)
    return read_jsonl(path, limit)


def expected_fields(task: str, rule: str, fmt: PublicFormat | None) -> str:
    """The 'what this file should look like' part of a load error: fields, release and one example line."""
    internal = "{" + ", ".join(INTERNAL_FIELDS[rule]) + "}"
    if fmt is None:
        return f"a {task} file is jsonl, one object per line with fields {internal}"
    return (f"a {task} file is jsonl, one object per line with fields {{{', '.join(fmt.fields)}}} as released in "
            f"{fmt.release}, e.g.\n  {fmt.example}\n(the internal form {internal} is read too)")


def load_task_docs(task: str, rule: str, fmt_name: str, path: str, limit: int = 0) -> list[dict]:
    """Returns the first `limit` (0 = all) docs of `path` in the internal form of `rule`, converting
    records in the task's public format; raises ValueError naming the expected fields otherwise."""
    fmt = FORMATS.get(fmt_name)
    if path.endswith((".txt", ".txt.bz2")):
        if task != "hellaswag":
            raise ValueError(f"{path}: only hellaswag reads a .txt file; {expected_fields(task, rule, fmt)}")
        return read_hellaswag_txt(path, limit)
    try:
        recs = read_jsonl(path, limit)
    except ValueError as e:
        raise ValueError(f"{e}; {expected_fields(task, rule, fmt)}") from e
    if not recs:
        raise ValueError(f"{path} holds no records; {expected_fields(task, rule, fmt)}")
    internal = INTERNAL_FIELDS[rule]
    docs = []
    for n, rec in enumerate(recs, 1):
        if all(k in rec for k in internal):
            docs.append(rec)
        elif fmt is not None and fmt.matches(rec):
            try:
                docs.append(fmt.to_doc(rec))
            except (KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
                raise ValueError(f"{path} record {n}: {type(e).__name__} {e}; "
                                 f"{expected_fields(task, rule, fmt)}") from e
        else:
            raise ValueError(f"{path} record {n} has fields {sorted(rec)}; {expected_fields(task, rule, fmt)}")
    return docs
