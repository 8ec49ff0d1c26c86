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


def test_eval_each_task_on_its_public_format_from_a_data_dir(run_dir, capsys, monkeypatch):
    """--data_dir (or GOPHER_JAX_EVAL_DIR) finds each task's release-format file by its default name."""
    monkeypatch.setenv("GOPHER_JAX_EVAL_DIR", "/nonexistent")  # the flag wins over the variable
    for task in ("hellaswag", "winogrande"):
        code = cli.main(["eval", "--workdir", run_dir, "--task", task, "--data_dir", EVAL_DATA, "--limit", "3",
                         "--json", "--mesh", "single"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["task"] == task and out["n"] == 3 and 0 <= out["acc"] <= 1


def test_eval_missing_or_malformed_file_names_the_fields(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GOPHER_JAX_EVAL_DIR", raising=False)
    assert cli.main(["eval", "--workdir", run_dir, "--task", "piqa"]) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "GOPHER_JAX_EVAL_DIR" in err and "{goal, sol1, sol2, label}" in err
    bad = tmp_path / "piqa.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert cli.main(["eval", "--workdir", run_dir, "--task", "piqa", "--data", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "record 1 has fields ['answer', 'question']" in err and '"goal": ' in err


def test_eval_bad_mesh_is_a_clear_error(run_dir, capsys):
    assert cli.main(["eval", "--workdir", run_dir, "--task", "piqa", "--data_dir", EVAL_DATA, "--mesh", "data=3"]) == 2
    assert "mesh" in capsys.readouterr().err


def test_eval_bad_workdir_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["eval", "--workdir", str(tmp_path), "--task", "piqa", "--data_dir", EVAL_DATA]) == 2
    assert "config.gin" in capsys.readouterr().err


def test_sample_dialogue(run_dir, capsys):
    code = cli.main(["sample", "--workdir", run_dir, "--prompt", "Hi", "--prompt", "What is a gopher?",
                     "--dialogue", "--max_new_tokens", "4", "--temperature", "0", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["prompt"] for o in out] == ["Hi", "What is a gopher?"]
    assert all("\nUser:" not in o["completion"] for o in out)
    assert dialogue_prompt("Hi").endswith("User: Hi\nGopher:")
