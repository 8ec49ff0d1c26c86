"""Loading evaluation sets as plain texts, for test-set decontamination.

Formats: each eval set's public release jsonl, recognised by its fields with the same definitions
`gopher-jax eval` reads (gopher_jax/eval/tasks/public_formats.py: LAMBADA {text}, HellaSwag,
PIQA, ARC, OpenBookQA, WinoGrande, BoolQ, COPA, Social IQa); the internal/llm-foundry forms
{context, continuation}, {query, choices, gold}, {context_options, continuation, gold}; {text};
HellaSwag's 6-line text blocks (*hellaswag*.txt[.bz2]); any other .txt is split like training text.
"""
from __future__ import annotations

import json
import os

from gopher_jax.data.corpus.reader import _open, split_text
from gopher_jax.eval.tasks.public_formats import detect


def _record_text(rec: dict, path: str, line: int) -> str:
    if "text" in rec:
        return rec["text"]
    if "context_options" in rec:
        return f"{rec['context_options'][rec['gold']]} {rec['continuation']}"
    if "context" in rec and "continuation" in rec:
        return f"{rec['context']} {rec['continuation']}"
    if "query" in rec and "choices" in rec:
        gold = rec.get("gold")
        answer = rec["choices"][gold] if isinstance(gold, int) and 0 <= gold < len(rec["choices"]) else ""
        return f"{rec['query']} {answer}".strip()
    fmt = detect(rec)
    if fmt is not None:
        try:
            return fmt.text(rec)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ValueError(f"{path}:{line + 1}: a {fmt.name} record with a bad field ({type(e).__name__} {e}); "
                             f"expected e.g. {fmt.example}") from e
    raise ValueError(f"{path}:{line + 1}: unknown eval record keys {sorted(rec)}; expected a public release "
                     "record (docs/evaluation.md lists each), text, context+continuation, "
                     "query+choices+gold or context_options+continuation+gold")


def _hellaswag(text: str) -> list[str]:
    lines = text.split("\n")
    out = []
    for i in range(0, len(lines) - 5, 6):
        ctx = lines[i].split(": ", 1)[-1]  # drop the "activity_label: " prefix
        try:
            gold = int(lines[i + 1])
        except ValueError:
            continue
        out.append(f"{ctx} {lines[i + 2 + gold]}")
    return out


def load_eval_texts(path: str) -> list[str]:
    """Returns the texts of one evaluation file (see the module docstring for formats)."""
    with _open(path) as f:
        raw = f.read().decode("utf-8", errors="replace")
    name = os.path.basename(path)
    if ".jsonl" in name or name.endswith(".json"):
        return [_record_text(json.loads(line), path, i) for i, line in enumerate(raw.split("\n")) if line.strip()]
    if "hellaswag" in name:
        return _hellaswag(raw)
    return [t for t in split_text(raw) if t.strip()]


def load_eval_sets(paths: list[str]) -> list[str]:
    """Returns the texts of every evaluation file or directory in paths."""
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs)
        elif os.path.exists(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"eval set {p!r} does not exist (DecontamConfig.eval_paths / --eval)")
    return [t for f in files for t in load_eval_texts(f)]
