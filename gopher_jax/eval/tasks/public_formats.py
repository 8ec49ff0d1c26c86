"""Each eval set's public release format, turned into the internal form the scorers read.

Prompts, choices and targets are built as lm-eval-harness 0.4's task YAMLs build them
(doc_to_text / doc_to_choice / doc_to_target), so scores are comparable with lm-eval's:

  lambada_openai  {context, continuation}                 context = text.rsplit(' ', 1)[0], target ' ' + last word
  multiple choice {query, choices, gold}                  scored as ' ' + choice after query
  winogrande      {context_options, continuation, gold}   partial scoring

`text` gives the natural text of one record (its public fields without a prompt template), which
test-set decontamination indexes.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable


@dataclasses.dataclass(frozen=True)
class PublicFormat:
    """One public release: the fields that identify it, one example line, where it lives, converters."""
    name: str
    fields: tuple[str, ...]
    example: str
    release: str
    to_doc: Callable[[dict], dict]  # -> the internal form
    text: Callable[[dict], str]     # -> natural text, for decontamination

    def matches(self, rec: dict) -> bool:
        """True if `rec` carries every identifying field of this format."""
        return all(f in rec for f in self.fields)


# ---- LAMBADA: lm-eval lambada_openai.yaml scores ' ' + text.split(' ')[-1] after the rest.
def _lambada(rec):
    context, sep, last = rec["text"].rpartition(" ")
    if not sep:
        raise ValueError(f"text {rec['text'][:60]!r} has no space to split the last word off")
    return {"context": context, "continuation": last}


# ---- HellaSwag: lm-eval hellaswag/utils.py process_docs + preprocess.
def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag cleanup: WikiHow ' [title]' becomes '. ', other bracketed tags go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(rec):
    ctx = rec["ctx_a"] + " " + rec["ctx_b"].capitalize()
    return {"query": hellaswag_preprocess(rec["activity_label"] + ": " + ctx),
            "choices": [hellaswag_preprocess(e) for e in rec["endings"]], "gold": int(rec["label"])}


# ---- PIQA: lm-eval piqa.yaml.
def _piqa(rec):
    return {"query": f"Question: {rec['goal']}\nAnswer:", "choices": [rec["sol1"], rec["sol2"]],
            "gold": int(rec["label"])}


# ---- ARC / OpenBookQA: AI2's release nests {stem, choices[{text, label}]} under "question";
# Hugging Face flattens it (ARC: question, choices{text, label}; OBQA: question_stem, choices).
def _stem_and_choices(rec) -> tuple[str, list[str], list[str]]:
    q = rec["question"] if "question" in rec else rec["question_stem"]
    if isinstance(q, dict):
        stem, choices = q["stem"], q["choices"]
    else:
        stem, choices = rec.get("question_stem", q), rec["choices"]
    if isinstance(choices, dict):
        return stem, list(choices["text"]), list(choices["label"])
    return stem, [c["text"] for c in choices], [c["label"] for c in choices]


def _gold_label(labels: list[str], key: str) -> int:
    key = str(key).strip()
    if key not in labels:
        raise ValueError(f"answerKey {key!r} is not one of the choice labels {labels}")
    return labels.index(key)


def _arc(rec):
    stem, texts, labels = _stem_and_choices(rec)
    return {"query": f"Question: {stem}\nAnswer:", "choices": texts, "gold": _gold_label(labels, rec["answerKey"])}


def _openbookqa(rec):
    stem, texts, labels = _stem_and_choices(rec)
    return {"query": stem, "choices": texts, "gold": _gold_label(labels, rec["answerKey"])}


def _mc_text(rec):
    stem, texts, labels = _stem_and_choices(rec)
    return f"{stem} {texts[_gold_label(labels, rec['answerKey'])]}"


# ---- WinoGrande: lm-eval winogrande/preprocess_winogrande.py (partial scoring).
def _winogrande(rec):
    s = rec["sentence"]
    if "_" not in s:
        raise ValueError(f"sentence {s[:60]!r} has no '_' blank")
    i = s.index("_")
    answer = str(rec["answer"]).strip()
    if answer not in ("1", "2"):
        raise ValueError(f"answer {rec['answer']!r} should be '1' or '2'")
    return {"context_options": [s[:i] + rec["option1"], s[:i] + rec["option2"]],
            "continuation": s[i + 1:].strip(), "gold": int(answer) - 1}


def _winogrande_text(rec):
    return rec["sentence"].replace("_", rec["option" + str(rec["answer"]).strip()], 1)


# ---- BoolQ: lm-eval super_glue/boolq; the original release says answer: true/false, SuperGLUE label: 0/1.
def _boolq_gold(rec) -> int:
    if "answer" in rec:
        if not isinstance(rec["answer"], bool):
            raise ValueError(f"answer {rec['answer']!r} should be true or false")
        return int(rec["answer"])
    return int(rec["label"])


def _boolq(rec):
    return {"query": f"{rec['passage']}\nQuestion: {rec['question']}?\nAnswer:", "choices": ["no", "yes"],
            "gold": _boolq_gold(rec)}


# ---- COPA: lm-eval super_glue/copa/utils.py: premise without its final period + connector,
# choices with a lower-cased first letter. lm-eval's doc_to_choice also prepends a space, on top of
# the target delimiter, so every continuation starts with two spaces; kept, so scores match lm-eval's.
COPA_CONNECTORS = {"cause": "because", "effect": "therefore"}


def _copa(rec):
    if rec["question"] not in COPA_CONNECTORS:
        raise ValueError(f"question {rec['question']!r} should be 'cause' or 'effect'")
    choice = lambda c: " " + c[:1].lower() + c[1:]  # noqa: E731
    return {"query": rec["premise"].strip()[:-1] + " " + COPA_CONNECTORS[rec["question"]],
            "choices": [choice(rec["choice1"]), choice(rec["choice2"])], "gold": int(rec["label"])}


# ---- Social IQa: lm-eval siqa.yaml; label is "1".."3".
SIQA_ANSWERS = ("answerA", "answerB", "answerC")


def _siqa(rec):
    return {"query": f"Q: {rec['context']} {rec['question']}\nA:",
            "choices": [rec[k] for k in SIQA_ANSWERS if k in rec], "gold": int(rec["label"]) - 1}


def _line(**kw) -> str:
    return json.dumps(kw)


FORMATS = {f.name: f for f in (
    PublicFormat("lambada_openai", ("text",), _line(text="... I don't care about signs"),
                 "lm-eval's lambada_openai: Hugging Face EleutherAI/lambada_openai (config default, split test)",
                 _lambada, lambda r: r["text"]),
    PublicFormat("hellaswag", ("activity_label", "ctx_a", "ctx_b", "endings", "label"),
                 _line(ind=24, activity_label="Roof shingle removal", ctx_a="A man is sitting on a roof.",
                       ctx_b="he", ctx="A man is sitting on a roof. he", split="val", label=3,
                       endings=["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                                "is holding a rubik's cube.", "starts pulling up roofing on a roof."]),
                 "github.com/rowanz/hellaswag data/hellaswag_val.jsonl (Hugging Face Rowan/hellaswag)",
                 _hellaswag, lambda r: f"{r['ctx_a']} {r['ctx_b']} {r['endings'][int(r['label'])]}"),
    PublicFormat("piqa", ("goal", "sol1", "sol2", "label"),
                 _line(goal="How do I ready a guinea pig cage?", sol1="...ripped paper strips...",
                       sol2="...ripped jeans material...", label=0),
                 "Hugging Face ybisk/piqa, split validation (github.com/ybisk/ybisk.github.io/piqa: valid.jsonl "
                 "with labels in valid-labels.lst)",
                 _piqa, lambda r: f"{r['goal']} {r['sol' + str(int(r['label']) + 1)]}"),
    PublicFormat("arc", ("question", "answerKey"),
                 _line(id="Mercury_7175875", question={"stem": "An astronomer observes that a planet rotates faster "
                       "after a meteorite impact. Which is the most likely effect of this increase in rotation?",
                       "choices": [{"text": t, "label": k} for t, k in zip(
                           ["Planetary density will decrease.", "Planetary years will become longer.",
                            "Planetary days will become shorter.", "Planetary gravity will become stronger."],
                           "ABCD")]}, answerKey="C"),
                 "allenai.org/data/arc ARC-{Easy,Challenge}-Test.jsonl (Hugging Face allenai/ai2_arc, "
                 "whose flat question/choices{text,label} form is read too)",
                 _arc, _mc_text),
    PublicFormat("openbookqa", ("answerKey",),
                 _line(id="8-343", question_stem="A person wants to start saving money so that they can afford "
                       "a nice vacation at the end of the year. ...", choices={"text": ["make more phone calls",
                       "quit eating lunch out", "buy less with monopoly money", "have lunch with friends"],
                       "label": ["A", "B", "C", "D"]}, answerKey="B"),
                 "Hugging Face allenai/openbookqa (config main, split test); AI2's OpenBookQA-V1 "
                 "Data/Main/test.jsonl (question{stem, choices}) is read too",
                 _openbookqa, _mc_text),
    PublicFormat("winogrande", ("sentence", "option1", "option2", "answer"),
                 _line(sentence="Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                       option1="Sarah", option2="Maria", answer="2"),
                 "github.com/allenai/winogrande dev.jsonl (Hugging Face allenai/winogrande, "
                 "config winogrande_xl, split validation)",
                 _winogrande, _winogrande_text),
    PublicFormat("boolq", ("question", "passage"),
                 _line(question="is house tax and property tax are same", title="Property tax",
                       answer=True, passage="Property tax or 'house tax' is a local tax on buildings, ..."),
                 "github.com/google-research-datasets/boolean-questions dev.jsonl (Hugging Face google/boolq); "
                 "SuperGLUE's {question, passage, idx, label} is read too",
                 _boolq, lambda r: f"{r['passage']} {r['question']}"),
    PublicFormat("copa", ("premise", "choice1", "choice2", "question", "label"),
                 _line(premise="The man turned on the faucet.", choice1="The toilet filled with water.",
                       choice2="Water flowed from the spout.", question="effect", idx=0, label=1),
                 "SuperGLUE COPA val.jsonl (Hugging Face aps/super_glue, config copa, split validation)",
                 _copa, lambda r: f"{r['premise']} {r['choice' + str(int(r['label']) + 1)]}"),
    PublicFormat("siqa", ("context", "question", "answerA", "answerB", "label"),
                 _line(context="Tracy didn't go home that evening and resisted Riley's attacks.",
                       question="What does Tracy need to do before this?", answerA="make a new plan",
                       answerB="Go home and see Riley", answerC="Find somewhere to go", label="3"),
                 "Hugging Face allenai/social_i_qa, split validation (dev.jsonl with labels in dev-labels.lst)",
                 _siqa, lambda r: f"{r['context']} {r['question']} {r[SIQA_ANSWERS[int(r['label']) - 1]]}"),
)}


def detect(rec: dict) -> PublicFormat | None:
    """Returns the public format whose identifying fields `rec` carries (None if none does)."""
    for f in FORMATS.values():
        if f.name not in ("arc", "openbookqa") and f.matches(rec):
            return f
    if "answerKey" in rec:  # ARC and OpenBookQA share fields; lm-eval prompts them differently
        return FORMATS["openbookqa" if "question_stem" in rec else "arc"]
    return None
