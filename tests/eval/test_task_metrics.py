"""Metric code on hand-built tasks with a fake model whose log-probs are fixed: the answers are known."""
import bz2
import math
import os

import pytest

from gopher_jax.eval.tasks import (EVAL_DIR_ENV, evaluate_task, fewshot, lambada, load_docs, loaders,
                                   multiple_choice, winogrande)

from tests.eval.conftest import EVAL_DATA


class FakeLM:
    """loglikelihood from a table: {continuation: (logprob, greedy)}; records what it was asked."""

    def __init__(self, table, by_context=None):
        self.table, self.by_context, self.asked = table, by_context or {}, []

    def loglikelihood(self, pairs):
        self.asked += list(pairs)
        return [self.by_context.get((c, x), self.table.get(x, (-100.0, False))) for c, x in pairs]


def test_lambada_acc_and_ppl():
    docs = [{"context": "a b", "continuation": "cat"}, {"context": "c d", "continuation": "dog"}]
    lm = FakeLM({" cat": (-1.0, True), " dog": (-3.0, False)})
    m = lambada.evaluate(lm, docs)
    assert m["acc"] == 0.5 and m["ppl"] == pytest.approx(math.exp(2.0))
    assert lm.asked == [("a b", " cat"), ("c d", " dog")]


def test_multiple_choice_acc_vs_acc_norm():
    # Q1: "b" has the higher total log-prob (-4 > -5) but "aaaaaaaaaa" the higher per character
    # (-0.5 > -4): acc picks b (wrong), acc_norm picks the gold a. Q2: both pick the gold "cc".
    docs = [{"query": "Q1", "choices": ["aaaaaaaaaa", "b"], "gold": 0},
            {"query": "Q2", "choices": ["cc", "dddd"], "gold": 0}]
    lm = FakeLM({" aaaaaaaaaa": (-5.0, False), " b": (-4.0, False), " cc": (-1.0, False), " dddd": (-3.0, False)})
    m = multiple_choice.evaluate(lm, docs)
    assert m == {"acc": 0.5, "acc_norm": 1.0, "n": 2}


def test_answer_context_normalisation():
    docs = [{"query": "Q", "choices": ["x", "y"], "gold": 1}]
    # Conditional: x wins (-1 > -2); but x is just likely a priori (-0.5 vs -3): normalised, y wins.
    lm = FakeLM({}, by_context={("Q", " x"): (-1.0, 0), ("Q", " y"): (-2.0, 0),
                                ("Answer:", " x"): (-0.5, 0), ("Answer:", " y"): (-3.0, 0)})
    m = multiple_choice.evaluate(lm, docs, answer_context="Answer:")
    assert m["acc"] == 0.0 and m["acc_answer_norm"] == 1.0


def test_winogrande_partial_scoring():
    docs = [{"context_options": ["A so A", "A so B"], "continuation": "won.", "gold": 1}]
    lm = FakeLM({}, by_context={("A so A", " won."): (-4.0, 0), ("A so B", " won."): (-2.0, 0)})
    assert winogrande.evaluate(lm, docs)["acc"] == 1.0


def test_fewshot_reproducible_and_excludes_the_doc():
    a = [fewshot.fewshot_indices(10, i, 3, seed=7) for i in range(10)]
    assert a == [fewshot.fewshot_indices(10, i, 3, seed=7) for i in range(10)]
    assert all(i not in idx and len(set(idx)) == 3 for i, idx in enumerate(a))
    assert a != [fewshot.fewshot_indices(10, i, 3, seed=8) for i in range(10)]
    docs = [{"query": f"Q{i}", "choices": ["x", "y"], "gold": i % 2} for i in range(4)]
    ctx = multiple_choice.requests(docs, shots=1, seed=0)[0][0]
    assert ctx.endswith("\n\nQ0") and ctx.count("\n\n") == 1 and ctx.startswith("Q")


def test_hellaswag_txt_parser(tmp_path):
    text = "Roof: A man [title] is on a roof. he\n2\n is a.\nb [step]\nc\nd\n"
    path = tmp_path / "h.txt.bz2"
    path.write_bytes(bz2.compress(text.encode()))
    docs = loaders.read_docs(str(path))
    # lm-eval strips before removing tags, so "b [step]" keeps a trailing space (kept for fidelity).
    assert docs == [{"query": "Roof: A man. is on a roof. he", "choices": ["is a.", "b ", "c", "d"], "gold": 2}]


def test_hellaswag_txt_and_release_jsonl_agree(tmp_path):
    """The 6-line text form written from the release jsonl reads back as the same docs, except that
    lm-eval capitalises ctx_b, which the text form (ctx_a and ctx_b merged) cannot know."""
    recs = loaders.read_jsonl(os.path.join(EVAL_DATA, "hellaswag.jsonl"))
    lines = [f"{r['activity_label']}: {r['ctx_a']} {r['ctx_b'].capitalize()}".strip() + f"\n{r['label']}\n"
             + "\n".join(r["endings"]) for r in recs]
    path = tmp_path / "hellaswag_val.txt"
    path.write_text("\n".join(lines) + "\n")
    assert loaders.read_docs(str(path)) == load_docs("hellaswag", os.path.join(EVAL_DATA, "hellaswag.jsonl"))


def test_every_fixture_file_loads(monkeypatch):
    monkeypatch.setenv(EVAL_DIR_ENV, EVAL_DATA)  # default file names in the directory
    for task in ("lambada", "piqa", "arc_easy", "arc_challenge", "openbookqa", "copa", "siqa", "boolq",
                 "hellaswag", "winogrande"):
        lm = FakeLM({})
        m = evaluate_task(task, lm, limit=4)
        assert m["n"] == 4, task
        # LAMBADA asks one continuation per doc; the others one per choice (at least two).
        assert len(lm.asked) == 4 if task == "lambada" else len(lm.asked) >= 8, task


def test_unknown_task_and_missing_file(monkeypatch):
    monkeypatch.delenv(EVAL_DIR_ENV, raising=False)
    with pytest.raises(ValueError, match="unknown task"):
        evaluate_task("nope", FakeLM({}))
    with pytest.raises(FileNotFoundError, match="--data"):
        evaluate_task("race", FakeLM({}))
