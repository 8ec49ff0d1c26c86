"""Each task reads its public release format (fixture files), its alternative release forms and the
internal form; a missing or malformed file is an error naming the expected fields with an example.
(tests/eval/test_lm_eval_adapter.py checks the prompts against lm-eval's own task definitions.)"""
import json
import os

import pytest

from gopher_jax.data.corpus.eval_sets import load_eval_texts
from gopher_jax.eval.tasks import EVAL_DIR_ENV, TASKS, data_path, load_docs
from gopher_jax.eval.tasks.loaders import read_jsonl
from tests.eval.conftest import EVAL_DATA

FIXTURE = {task: os.path.join(EVAL_DATA, spec.files[0]) for task, spec in TASKS.items() if task != "race"}


def write_jsonl(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def test_lambada_splits_the_last_word_as_lm_eval():
    rec = read_jsonl(FIXTURE["lambada"], limit=1)[0]
    doc = load_docs("lambada", FIXTURE["lambada"], limit=1)[0]
    assert doc == {"context": rec["text"].rsplit(" ", 1)[0], "continuation": "signs"}
    assert doc["context"].endswith("I don't care about")


def test_multiple_choice_prompts_on_the_first_fixture_item():
    first = {task: load_docs(task, FIXTURE[task], limit=1)[0] for task in FIXTURE}
    assert first["piqa"]["query"] == "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:"
    assert first["hellaswag"] == {"query": "Roof shingle removal: A man is sitting on a roof. He", "gold": 3,
                                  "choices": ["is using wrap to wrap a pair of skis.", "is ripping level tiles off.",
                                              "is holding a rubik's cube.", "starts pulling up roofing on a roof."]}
    assert first["arc_challenge"]["gold"] == 2 and first["arc_challenge"]["query"].startswith("Question: An astr")
    assert first["copa"] == {"query": "The man turned on the faucet therefore", "gold": 1,
                             "choices": [" the toilet filled with water.", " water flowed from the spout."]}
    assert first["boolq"]["choices"] == ["no", "yes"] and first["boolq"]["query"].endswith(
        "\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert first["siqa"]["query"] == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. "
                                      "What does Tracy need to do before this?\nA:")
    assert first["siqa"]["choices"] == ["make a new plan", "Find somewhere to go"]  # the fixture has no answerC
    assert first["winogrande"] == {"context_options": ["Sarah was a much better surgeon than Maria so Sarah",
                                                       "Sarah was a much better surgeon than Maria so Maria"],
                                   "continuation": "always got the easier cases.", "gold": 1}


def test_alternative_release_forms_read_the_same(tmp_path):
    # ARC: AI2's nested jsonl (the fixture) == Hugging Face's flat question/choices{text,label}.
    flat = [{"id": str(i), "question": r["question"]["stem"], "answerKey": r["answerKey"],
             "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                         "label": [c["label"] for c in r["question"]["choices"]]}}
            for i, r in enumerate(read_jsonl(FIXTURE["arc_easy"]))]
    assert load_docs("arc_easy", write_jsonl(tmp_path / "a.jsonl", flat)) == load_docs("arc_easy", FIXTURE["arc_easy"])
    # OpenBookQA: Hugging Face's flat form (the fixture) == AI2's nested OpenBookQA-V1 jsonl.
    nested = [{"id": str(i), "answerKey": r["answerKey"], "question": {"stem": r["question_stem"], "choices": [
        {"text": t, "label": k} for t, k in zip(r["choices"]["text"], r["choices"]["label"])]}}
        for i, r in enumerate(read_jsonl(FIXTURE["openbookqa"]))]
    assert load_docs("openbookqa", write_jsonl(tmp_path / "o.jsonl", nested)) == load_docs("openbookqa",
                                                                                          FIXTURE["openbookqa"])
    # BoolQ: the original answer true/false == SuperGLUE's label 0/1.
    glue = [{"question": r["question"], "passage": r["passage"], "idx": i, "label": int(r["answer"])}
            for i, r in enumerate(read_jsonl(FIXTURE["boolq"]))]
    assert load_docs("boolq", write_jsonl(tmp_path / "b.jsonl", glue)) == load_docs("boolq", FIXTURE["boolq"])


def test_internal_form_is_still_read(tmp_path):
    docs = load_docs("piqa", FIXTURE["piqa"], limit=5)
    assert load_docs("piqa", write_jsonl(tmp_path / "p.jsonl", docs)) == docs


def test_directory_flag_and_environment_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(EVAL_DIR_ENV, raising=False)
    assert data_path("hellaswag", data_dir=EVAL_DATA) == FIXTURE["hellaswag"]
    monkeypatch.setenv(EVAL_DIR_ENV, EVAL_DATA)
    assert data_path("winogrande") == FIXTURE["winogrande"]
    # The release's own distinctive file name is found too.
    (tmp_path / "ARC-Easy-Test.jsonl").write_text(open(FIXTURE["arc_easy"]).read())
    assert data_path("arc_easy", data_dir=str(tmp_path)) == str(tmp_path / "ARC-Easy-Test.jsonl")


def test_missing_file_names_the_fields_and_how_to_point_at_it(tmp_path, monkeypatch):
    monkeypatch.delenv(EVAL_DIR_ENV, raising=False)
    with pytest.raises(FileNotFoundError) as e:
        load_docs("winogrande")
    msg = str(e.value)
    assert "--data" in msg and "--data_dir" in msg and EVAL_DIR_ENV in msg and "winogrande.jsonl" in msg
    assert "{sentence, option1, option2, answer}" in msg and '"option1": "Sarah"' in msg
    with pytest.raises(FileNotFoundError, match="has no piqa.jsonl"):
        load_docs("piqa", data_dir=str(tmp_path))


@pytest.mark.parametrize("task,rec,expect", [
    ("piqa", {"goal": "g", "sol1": "a"}, "{goal, sol1, sol2, label}"),                  # a field missing
    ("winogrande", {"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}, "no '_' blank"),
    ("arc_easy", {"question": {"stem": "s", "choices": [{"text": "t", "label": "A"}]}, "answerKey": "E"},
     "answerKey 'E'"),
    ("copa", {"premise": "p.", "choice1": "a", "choice2": "b", "question": "why", "label": 0}, "'cause' or"),
    ("boolq", {"question": "q", "passage": "p", "answer": "yes"}, "true or false"),
    ("lambada", {"text": "oneword"}, "no space"),
])
def test_malformed_record_is_named_with_an_example(tmp_path, task, rec, expect):
    path = write_jsonl(tmp_path / "bad.jsonl", [rec])
    with pytest.raises(ValueError) as e:
        load_docs(task, path)
    msg = str(e.value)
    assert expect in msg and "record 1" in msg and "e.g.\n  {" in msg, msg


def test_not_json_and_empty_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"goal": "g"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2 is not valid JSON"):
        load_docs("piqa", str(bad))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no records.*goal, sol1, sol2, label"):
        load_docs("piqa", str(empty))


def test_decontamination_reads_every_public_fixture():
    """Decontamination indexes the natural text of each release record (no prompt template)."""
    texts = {task: load_eval_texts(path) for task, path in FIXTURE.items()}
    assert all(len(t) == 50 for t in texts.values())
    assert texts["copa"][0] == "The man turned on the faucet. Water flowed from the spout."
    assert texts["winogrande"][0] == "Sarah was a much better surgeon than Maria so Maria always got the easier cases."
    assert texts["hellaswag"][0] == "A man is sitting on a roof. he starts pulling up roofing on a roof."
    assert texts["lambada"][0] == read_jsonl(FIXTURE["lambada"], limit=1)[0]["text"]
    assert texts["siqa"][0].endswith("What does Tracy need to do before this? Find somewhere to go")
    assert texts["arc_easy"][0].endswith("food webs? Sunlight is the source of energy for nearly all ecosystems.")
