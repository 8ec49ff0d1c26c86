"""`gopher-jax sweep` end to end on CPU: a 3-arm x 2-seed sweep with two workers, compare on its runs'
own files, no run trained twice, a rerun that trains nothing, and an invalid arm refused up front."""
import json
import os
import time

import pytest

from gopher_jax.cli import main
from gopher_jax.sweep import plan, status
from tests.sweep.conftest import TEST_PARAMS, sweep_argv


def _runs(out):
    return plan.load_plan(out)[1]


def _summary(out, name):
    return json.load(open(os.path.join(out, name, "summary.json")))


def test_sweep_finishes_and_compare_reads_the_runs(finished_sweep, capsys):
    out = finished_sweep
    runs = _runs(out)
    assert len(runs) == 6 and {r.arm for r in runs} == {"position=relative", "position=rope", "position=alibi"}
    assert all(status.run_status(os.path.join(out, r.name)) == status.DONE for r in runs)
    for r in runs:  # each run is an ordinary train workdir with its own config
        config = open(os.path.join(out, r.name, "config.gin")).read()
        assert f"ModelConfig.position = '{r.values['ModelConfig.position']}'" in config
        assert f"train.seed = {r.seed}" in config and _summary(out, r.name)["step"] == 3
    capsys.readouterr()
    assert main(["compare", out, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    rows = {row["arm"]: row for row in table["arms"]}
    assert table["baseline"] == "position=relative" and set(rows) == {r.arm for r in runs}
    for arm, row in rows.items():
        bpb = {r.seed: _summary(out, r.name)["eval_bits_per_byte"] for r in runs if r.arm == arm}
        assert row["n"] == 2 and row["eval_bits_per_byte"] == pytest.approx(sum(bpb.values()) / 2, rel=1e-12)
        assert row["tokens"] == 3 * 8 * 32 and row["flops"] > 0 and row["tokens_per_s"] > 0
        if arm != "position=relative":
            base = {r.seed: _summary(out, r.name)["eval_bits_per_byte"] for r in runs if r.arm == "position=relative"}
            assert row["delta"] == pytest.approx(sum(bpb[s] - base[s] for s in bpb) / 2, rel=1e-9)
            assert row["p_value"] is not None and row["bootstrap_low"] <= row["delta"] <= row["bootstrap_high"]
    assert any(k.startswith("eval_bits_per_byte/") for k in rows["position=rope"])
    for png in ("compare_curves.png", "compare_delta.png"):
        assert os.path.getsize(os.path.join(out, png)) > 5_000


def test_results_jsonl_has_one_record_per_run_with_bindings(finished_sweep, capsys):
    out = finished_sweep
    assert main(["compare", out, "--csv", "--no_plots"]) == 0
    assert capsys.readouterr().out.count("\n") == 4  # header + 3 arms
    records = [json.loads(line) for line in open(os.path.join(out, "results.jsonl"))]
    assert sorted(r["run"] for r in records) == sorted(r.name for r in _runs(out))
    for rec in records:
        assert rec["gin.ModelConfig.position"] == rec["axis.ModelConfig.position"]
        assert str(rec["gin.train.seed"]) == rec["seed"] and rec["gin.train.steps"] == 3
        assert rec["gin.ModelConfig.d_model"] == 64 and rec["eval_bits_per_byte"] == pytest.approx(
            _summary(out, rec["run"])["eval_bits_per_byte"])


def test_two_workers_never_train_the_same_run(finished_sweep):
    owners = set()
    for r in _runs(finished_sweep):
        d = os.path.join(finished_sweep, r.name)
        attempts = [json.loads(line) for line in open(os.path.join(d, "attempts.jsonl"))]
        assert len(attempts) == 1, f"{r.name} trained {len(attempts)} times"
        assert sorted(n for n in os.listdir(d) if n.startswith("lease.")) == ["lease.0.json"]
        owners.add(attempts[0]["owner"].split(":")[2])  # host:pid:tag:suffix
    assert owners == {"w0", "w1"}  # both workers trained


def test_rerun_trains_nothing(finished_sweep):
    before = {r.name: open(os.path.join(finished_sweep, r.name, "attempts.jsonl")).read() for r in _runs(finished_sweep)}
    t0 = time.time()
    assert main(sweep_argv(finished_sweep, "--workers=2")) == 0
    after = {r.name: open(os.path.join(finished_sweep, r.name, "attempts.jsonl")).read() for r in _runs(finished_sweep)}
    assert after == before, "a finished run was trained again"
    print(f"rerun of a finished sweep: {time.time() - t0:.1f} s")


def test_invalid_arm_stops_before_training(tmp_path, capsys):
    out = str(tmp_path / "bad")
    argv = sweep_argv(out, "--workers=2", axes=["train.batch_size=8,6", "train.seed=0"], baseline="")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "arm 'batch_size=6'" in err and "train.batch_size=6" in err and "nothing was trained" in err
    assert "arm 'batch_size=8'" not in err
    assert not os.path.exists(os.path.join(out, plan.PLAN_FILE))
    assert not any(os.path.exists(os.path.join(out, d, "train.log")) for d in (os.listdir(out) if os.path.isdir(out) else []))
    assert main(sweep_argv(out, axes=["ModelConfig.position=rope,bogus"], baseline="")) == 2
    assert "arm 'position=bogus'" in capsys.readouterr().err


def test_dry_run_prints_launch_commands(tmp_path, capsys):
    out = str(tmp_path / "dry")
    assert main(sweep_argv(out, "--dry-run")) == 0
    text = capsys.readouterr().out
    assert text.count("gopher-jax train --gin_file=gin_configs/runs/pretrain.gin") == 6
    assert "--resume" in text and "python -m gopher_jax.sweep.worker --out=" in text
    assert os.path.isfile(os.path.join(out, plan.PLAN_FILE))
    assert not any(os.path.exists(os.path.join(out, r.name, "train.log")) for r in _runs(out))
    assert all(f"--gin_param={p}" in text for p in TEST_PARAMS)


def test_only_selects_runs_by_name_or_arm_and_names_a_bad_one(tmp_path, capsys):
    out = str(tmp_path / "only")
    assert main(sweep_argv(out, "--dry-run", "--only=position=alibi")) == 0
    text = capsys.readouterr().out
    alibi = [r for r in _runs(out) if r.arm == "position=alibi"]
    assert len(alibi) == 2 and text.count("gopher-jax train --gin_file") == 2  # the arm's two seeds
    assert all(r.name in text for r in alibi) and "training 2 of the 6 runs" in text
    assert all(f"--only={r.name}" in text for r in alibi)  # the worker command joins only those runs
    one = _runs(out)[0].name
    assert main(sweep_argv(out, "--dry-run", f"--only={one}")) == 0
    assert capsys.readouterr().out.count("gopher-jax train --gin_file") == 1
    assert main(sweep_argv(out, "--dry-run", "--only=position=nope")) == 2
    err = capsys.readouterr().err
    assert "--only 'position=nope' names no run" in err and "position=rope" in err
