"""lm-eval driving a gopher_jax checkpoint through the adapter == our own task code, on local task files.

The task YAMLs point lm-eval's `json` loader at small slices of the shared eval files (written to
tmp_path), so lm-eval's prompt construction, request building and metric aggregation are checked
against ours on real data.
"""
import json
import os

import lm_eval  # in the test extra: a missing install fails here, never skips
import pytest

from gopher_jax.eval.lm_eval_adapter import GopherJaxLM
from gopher_jax.eval.scorer import Scorer
from gopher_jax.eval.tasks import evaluate_task
from gopher_jax.eval.tasks.loaders import read_docs
from gopher_jax.eval.text_lm import TextLM
from tests.eval.conftest import EVAL_DATA

N = 12

MC_YAML = """task: gj_{name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: query
doc_to_target: gold
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""

LAMBADA_YAML = """task: gj_lambada
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: loglikelihood
doc_to_text: "{{{{context}}}}"
doc_to_target: "{{{{' ' + continuation}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def _slice(tmp_path, name, source):
    path = tmp_path / f"{name}.jsonl"
    with open(path, "w") as f:
        for d in read_docs(source, limit=N):
            f.write(json.dumps(d) + "\n")
    return str(path)


def evaluate_both(loaded, tmp_path, tasks):
    """Returns {task: (our metrics, lm-eval metrics)} for {task: (our task name, source file)}."""
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    lm = TextLM(Scorer.for_model(loaded.config, loaded.params, batch_size=8), loaded.tokenizer)
    ours, names = {}, []
    for name, (task, source) in tasks.items():
        path = _slice(tmp_path, name, source)
        yaml = LAMBADA_YAML.format(path=path) if task == "lambada" else MC_YAML.format(name=name, path=path)
        (tmp_path / f"gj_{name}.yaml").write_text(yaml)
        ours[name] = evaluate_task(task, lm, path, limit=N)
        names.append(f"gj_{name}")
    adapter = GopherJaxLM(lm, loaded.config, loaded.params)
    res = lm_eval.simple_evaluate(model=adapter, tasks=names, num_fewshot=0,
                                  task_manager=TaskManager(include_path=str(tmp_path)))["results"]
    return {name: (ours[name], res[f"gj_{name}"]) for name in tasks}


def test_adapter_and_our_scorer_agree(loaded, tmp_path):
    both = evaluate_both(loaded, tmp_path, {
        "lambada": ("lambada", f"{EVAL_DATA}/lambada_openai.jsonl"),
        "piqa": ("piqa", f"{EVAL_DATA}/piqa.jsonl"),
        "hellaswag": ("hellaswag", f"{EVAL_DATA}/hellaswag_val.txt.bz2")})
    ours, theirs = both["lambada"]
    assert theirs["acc,none"] == ours["acc"]
    assert theirs["perplexity,none"] == pytest.approx(ours["ppl"], rel=1e-9)
    for name in ("piqa", "hellaswag"):
        ours, theirs = both[name]
        assert (theirs["acc,none"], theirs["acc_norm,none"]) == (ours["acc"], ours["acc_norm"]), name


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
