"""Readers for the evaluation file formats in ../shared/data/eval (and lm-eval-style jsonl).

Each returns a list of dicts in one of three shapes:
  LAMBADA     {context, continuation}
  choice      {query, choices, gold}                     (PIQA, ARC, OBQA, COPA, SIQA, BoolQ, HellaSwag)
  partial     {context_options, continuation, gold}      (Winogrande partial scoring)
"""
from __future__ import annotations

import bz2
import json
import re


def read_jsonl(path: str, limit: int = 0) -> list[dict]:
    """Returns the first `limit` (0 = all) JSON objects of a jsonl file; names the line on bad JSON."""
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n} is not valid JSON ({e}); expected one object per line") from e
            if limit and len(docs) >= limit:
                break
    return docs


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: drop WikiHow '[title]' markers and other bracketed tags."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


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
    """Returns docs from a jsonl or HellaSwag txt(.bz2) file."""
    if path.endswith((".txt", ".txt.bz2")):
        return read_hellaswag_txt(path, limit)
    return read_jsonl(path, limit)
