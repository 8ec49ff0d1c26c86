"""`gopher-jax eval` and `gopher-jax sample` on an in-test checkpoint."""
import json

from gopher_jax import cli
from gopher_jax.sample_cli import dialogue_prompt
from tests.eval.conftest import EVAL_DATA


def test_eval_lambada_json(run_dir, capsys):
    code = cli.main(["eval", "--workdir", run_dir, "--task", "lambada", "--data",
                     f"{EVAL_DATA}/lambada_openai.jsonl", "--limit", "6", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 6 and 0 <= out["acc"] <= 1 and out["ppl"] > 1 and out["tokens_per_s"] > 0
    assert out["mesh"]["data"] == 8 and out["batch_size"] == 16  # default: every local device, data-parallel
    code = cli.main(["eval", "--workdir", run_dir, "--task", "lambada", "--data",
                     f"{EVAL_DATA}/lambada_openai.jsonl", "--limit", "6", "--json", "--mesh", "single"])
    single = json.loads(capsys.readouterr().out)
    assert code == 0 and single["mesh"] == {"single_device": 1}
    assert single["acc"] == out["acc"] and abs(single["ppl"] / out["ppl"] - 1) < 1e-5


def test_eval_bad_mesh_is_a_clear_error(run_dir, capsys):
    assert cli.main(["eval", "--workdir", run_dir, "--task", "piqa", "--mesh", "data=3"]) == 2
    assert "mesh" in capsys.readouterr().err


def test_eval_bad_workdir_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["eval", "--workdir", str(tmp_path), "--task", "piqa"]) == 2
    assert "config.gin" in capsys.readouterr().err


def test_sample_dialogue(run_dir, capsys):
    code = cli.main(["sample", "--workdir", run_dir, "--prompt", "Hi", "--prompt", "What is a gopher?",
                     "--dialogue", "--max_new_tokens", "4", "--temperature", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["prompt"] for o in out] == ["Hi", "What is a gopher?"]
    assert all("\nUser:" not in o["completion"] for o in out)
    assert dialogue_prompt("Hi").endswith("User: Hi\nGopher:")
