"""Our tasks against lm-eval's own: lm-eval's installed task YAMLs (included unchanged, only their
dataset pointed at the fixture files) build the same prompts, choices and targets as our loaders,
and lm-eval driving a checkpoint through the adapter (in Python and from its own command line)
reports the metrics our scorer does."""
import glob
import json
import os

import lm_eval  # in the test extra: a missing install fails here, never skips
import pytest

from gopher_jax.eval.lm_eval_adapter import GopherJaxLM
from gopher_jax.eval.scorer import Scorer
from gopher_jax.eval.tasks import evaluate_task, load_docs
from gopher_jax.eval.tasks.loaders import read_jsonl
from gopher_jax.eval.text_lm import TextLM
from tests.eval.conftest import EVAL_DATA

LM_EVAL_TASKS = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
# our task -> (lm-eval's YAML under lm_eval/tasks, our fixture file)
REFERENCE = {
    "lambada": ("lambada/lambada_openai.yaml", "lambada_openai.jsonl"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag.jsonl"),
    "piqa": ("piqa/piqa.yaml", "piqa.jsonl"),
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy.jsonl"),
    "arc_challenge": ("arc/arc_challenge.yaml", "arc_challenge.jsonl"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "openbookqa.jsonl"),
    "winogrande": ("winogrande/default.yaml", "winogrande.jsonl"),
    "boolq": ("super_glue/boolq/default.yaml", "boolq.jsonl"),
    "copa": ("super_glue/copa/default.yaml", "copa.jsonl"),
    "siqa": ("siqa/siqa.yaml", "siqa.jsonl"),
}
N = 8  # documents scored per task by the model-driven tests

YAML = """include: {base}
task: gj_{name}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: {path}
    validation: {path}
    test: {path}
"""


def _lm_eval_input(task: str, ours: str, tmp) -> tuple[str, str]:
    """Returns (file lm-eval reads, file we read). lm-eval reads Hugging Face's layouts: ARC's flat
    question/choices and SuperGLUE BoolQ's label; our fixtures hold the original releases. The
    SIQA fixture lacks answerC (tests/fixtures/SOURCES.md): both read a copy with one added."""
    recs = read_jsonl(ours)
    if task.startswith("arc"):
        recs = [{"question": r["question"]["stem"], "answerKey": r["answerKey"],
                 "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                             "label": [c["label"] for c in r["question"]["choices"]]}} for r in recs]
    elif task == "boolq":
        recs = [{**r, "label": int(r["answer"])} for r in recs]
    elif task == "siqa":
        recs = [{**r, "answerC": "None of these."} for r in recs]
    else:
        return ours, ours
    path = tmp / f"{task}_lm_eval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path), str(path) if task == "siqa" else ours


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """{task: (lm-eval Task on the fixture, the file our loader reads)}, and the include directory."""
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    tmp = tmp_path_factory.mktemp("lm_eval_tasks")
    ours = {}
    for task, (base, fixture) in REFERENCE.items():
        theirs, ours[task] = _lm_eval_input(task, os.path.join(EVAL_DATA, fixture), tmp)
        (tmp / f"gj_{task}.yaml").write_text(YAML.format(base=os.path.join(LM_EVAL_TASKS, base), name=task,
                                                         path=theirs))
    # Only our YAMLs are indexed (each includes lm-eval's), not lm-eval's thousands of tasks.
    manager = TaskManager(include_path=str(tmp), include_defaults=False)
    tasks = manager.load([f"gj_{t}" for t in REFERENCE])["tasks"]
    return {t: (tasks[f"gj_{t}"], ours[t]) for t in REFERENCE}, manager, tmp


def _gold(target, choices) -> int:
    if isinstance(target, str):
        return int(target) if target.strip().isdigit() else choices.index(target)
    return int(target)


@pytest.mark.parametrize("task", sorted(REFERENCE))
def test_prompts_choices_and_targets_are_lm_evals(reference, task):
    ref, ours_path = reference[0][task]
    theirs = list(ref.eval_docs)
    ours = load_docs(task, ours_path)
    assert len(theirs) == len(ours) == 50
    for doc, mine in zip(theirs, ours):
        if task == "lambada":
            assert (mine["context"], " " + mine["continuation"]) == (ref.doc_to_text(doc), ref.doc_to_target(doc))
        elif task == "winogrande":  # partial scoring: the options are the contexts, the target is shared
            assert mine == {"context_options": ref.doc_to_choice(doc), "continuation": ref.doc_to_target(doc),
                            "gold": ref.doc_to_text(doc)}
        else:
            choices = ref.doc_to_choice(doc)
            assert mine == {"query": ref.doc_to_text(doc), "choices": choices,
                            "gold": _gold(ref.doc_to_target(doc), choices)}
        assert ref.config.target_delimiter == " " and ref.config.fewshot_delimiter == "\n\n"


def test_adapter_and_our_scorer_agree(loaded, reference):
    refs, manager, _ = reference
    lm = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=8), loaded.tokenizer)
    names = ("lambada", "hellaswag", "winogrande", "copa")
    ours = {t: evaluate_task(t, lm, refs[t][1], limit=N) for t in names}
    adapter = GopherJaxLM(lm, loaded.config, loaded.params)
    res = lm_eval.simple_evaluate(model=adapter, tasks=[f"gj_{t}" for t in names], num_fewshot=0, limit=N,
                                  task_manager=manager)["results"]
    assert res["gj_lambada"]["acc,none"] == ours["lambada"]["acc"]
    assert res["gj_lambada"]["perplexity,none"] == pytest.approx(ours["lambada"]["ppl"], rel=1e-9)
    assert res["gj_hellaswag"]["acc_norm,none"] == ours["hellaswag"]["acc_norm"]
    for t in names[1:]:
        assert res[f"gj_{t}"]["acc,none"] == ours[t]["acc"], t


def test_lm_evals_own_command_line_runs_the_model(run_dir, loaded, reference, tmp_path, capsys, monkeypatch):
    """`gopher-jax-lm-eval` is lm-eval's CLI with `--model gopher_jax` registered (lm-eval 0.4 has no
    model plugin entry points); its JSON results equal our scorer on the same items."""
    from lm_eval.tasks import TaskManager

    from gopher_jax.eval.lm_eval_cli import main

    _, _, include = reference
    # Only cost, not behaviour: the CLI's TaskManager would index lm-eval's thousands of built-in task
    # YAMLs (~15 s here) besides --include_path; ours include the two they need by absolute path.
    defaults = TaskManager.__init__.__defaults__
    assert defaults == (None, None, True, None)  # (verbosity, include_path, include_defaults, metadata)
    monkeypatch.setattr(TaskManager.__init__, "__defaults__", (None, None, False, None))
    main(["--model", "gopher_jax", "--model_args", f"workdir={run_dir},batch_size=8", "--tasks", "gj_piqa",
          "--include_path", str(include), "--limit", "4", "--output_path", str(tmp_path)])
    assert "gj_piqa" in capsys.readouterr().out  # lm-eval's results table
    results = json.load(open(glob.glob(str(tmp_path / "**" / "results_*.json"), recursive=True)[0]))
    lm = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=8), loaded.tokenizer)
    ours = evaluate_task("piqa", lm, os.path.join(EVAL_DATA, "piqa.jsonl"), limit=4)
    assert results["results"]["gj_piqa"]["acc,none"] == ours["acc"]
    assert results["results"]["gj_piqa"]["acc_norm,none"] == ours["acc_norm"]


def test_rolling_and_generate(loaded):
    from lm_eval.api.instance import Instance

    lm = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=4), loaded.tokenizer)
    adapter = GopherJaxLM(lm, loaded.config, loaded.params, max_gen_toks=3)
    text = "A gopher is a small burrowing rodent. " * 6
    inst = Instance("loglikelihood_rolling", {}, (text,), 0)
    assert adapter.loglikelihood_rolling([inst]) == pytest.approx(lm.loglikelihood_rolling([text]))
    gen = adapter.generate_until([Instance("generate_until", {}, ("Hello", {"until": ["\n"]}), 0)])
    assert len(gen) == 1 and "\n" not in gen[0]


def test_adapter_from_a_workdir_on_a_mesh(loaded, run_dir):
    """lm_eval --model_args 'workdir=RUN,mesh=data=2;tensor=4': sharded scoring equals one device."""
    from lm_eval.api.instance import Instance

    adapter = GopherJaxLM.create_from_arg_string(f"workdir={run_dir},batch_size=4,mesh=data=2;tensor=4")
    assert dict(adapter.text_lm.scorer.mesh.shape)["tensor"] == 4
    single = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=4), loaded.tokenizer)
    text = "A gopher is a small burrowing rodent. " * 6
    inst = Instance("loglikelihood_rolling", {}, (text,), 0)
    # A sum over ~90 tokens of float32 log-probs whose reduction order differs: relative tolerance.
    assert adapter.loglikelihood_rolling([inst]) == pytest.approx(single.loglikelihood_rolling([text]), rel=1e-7)
    pair = Instance("loglikelihood", {}, ("A gopher is", " a rodent"), 0)
    (ll, greedy), = adapter.loglikelihood([pair])
    (ll1, greedy1), = single.loglikelihood([pair.args])
    assert ll == pytest.approx(ll1, abs=1e-5) and greedy == greedy1
