"""The IsoFLOP sweep generator, and collection + fits on synthetic metrics.jsonl files."""
import json
import os

import numpy as np
import pytest

from gopher_jax.cli import main
from gopher_jax.scaling import sweep as S
from gopher_jax.scaling.approach2 import fit_approach2
from gopher_jax.scaling.laws import chinchilla_loss
from gopher_jax.scaling.model_zoo import load_config
from gopher_jax.scaling.runs import read_csv
from gopher_jax.scaling.synthetic import isoflop_exponents, write_fake_metrics

SIZES = "2x64,2x96,4x128,4x192,6x256"
BUDGETS = "1e12,3e12,1e13"
LAW = dict(E=2.0, A=300.0, B=250.0, alpha=0.3, beta=0.3)  # a toy law whose optimum sits inside the tiny sizes


def fake_training(manifest, *, eval_lines=True, seed=0):
    """Writes a metrics.jsonl per run as `gopher-jax train` would: loss falls along LAW."""
    write_fake_metrics(manifest, LAW, eval_lines=eval_lines, seed=seed)


def isoflop_exponents_of_the_law(runs):
    """Returns (a, b) of the generating LAW's own IsoFLOP optima along these runs' budgets."""
    return isoflop_exponents(runs, LAW)


def test_plan_spends_each_budget(tmp_path):
    base = load_config("gin_configs/models/tiny.gin")
    sizes = [S.Size.parse(s) for s in SIZES.split(",")]
    m = S.plan_sweep([1e12, 1e13], sizes, base=base, out_dir=str(tmp_path), seq_len=128, batch_size=8,
                     run_gin=["gin_configs/runs/pretrain.gin"], model_gin=["gin_configs/models/tiny.gin"])
    assert m["runs"] and all(r["steps"] >= 20 for r in m["runs"])
    for r in m["runs"]:
        assert r["C"] == pytest.approx(r["budget"], rel=0.5 / r["steps"] + 1e-9)  # step rounding only
        assert r["tokens"] == r["steps"] * 8 * 128
    S.write_sweep(m, str(tmp_path))
    text = open(os.path.join(m["runs"][0]["workdir"], "overrides.gin")).read()
    assert "ModelConfig.num_layers = 2" in text and "ModelConfig.num_heads = 2" in text
    assert f"train.steps = {m['runs'][0]['steps']}" in text and "train.seq_len = 128" in text
    with pytest.raises(ValueError, match="LAYERSxWIDTH"):
        S.Size.parse("big")
    with pytest.raises(ValueError, match="multiple of head_dim"):
        S.Size.parse("2x100")


def test_dry_run_prints_commands(tmp_path, capsys):
    assert main(["scaling", "sweep", "--out", str(tmp_path), "--budgets", BUDGETS, "--sizes", SIZES, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("gopher-jax train --gin_file=gin_configs/runs/pretrain.gin") == 15
    assert os.path.isfile(tmp_path / "manifest.json")


def test_collect_and_fit_synthetic_sweep(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["scaling", "sweep", "--out", out, "--budgets", BUDGETS, "--sizes", SIZES, "--dry-run"]) == 0
    manifest = S.load_manifest(out)
    fake_training(manifest)
    missing_dir = manifest["runs"][-1]["workdir"]
    os.remove(os.path.join(missing_dir, "metrics.jsonl"))  # one run has not trained yet
    assert main(["scaling", "sweep", "--out", out, "--collect", "--fit", "--bootstrap", "10"]) == 0
    text = capsys.readouterr().out
    assert "no metrics yet for" in text and "approach 2" in text
    runs = read_csv(os.path.join(out, "runs.csv"))
    assert len(runs) == len(manifest["runs"]) - 1
    # the final loss is the held-out eval loss, and D is the tokens of the last step
    assert np.all(runs.D == np.array([r["tokens"] for r in manifest["runs"][:-1]]))
    curves = read_csv(os.path.join(out, "curves.csv"))
    assert curves.run is not None and len(curves) == 10 * len(runs)
    fit = json.load(open(os.path.join(out, "fit.json")))
    assert fit["3"]["alpha"] == pytest.approx(0.3, abs=0.05) and fit["3"]["beta"] == pytest.approx(0.3, abs=0.05)
    # The generating law's own IsoFLOP exponents here are ~0.54, not beta/(alpha+beta) = 0.5: N counts
    # the embeddings and C is the App. F count, not 6ND. Kaplan's 0.73 must fail.
    a_true, b_true = isoflop_exponents_of_the_law(runs)
    assert 0.52 < a_true < 0.56 and 0.52 < b_true < 0.56
    # with one run missing, the last budget's parabola has 4 sizes: a looser match
    assert fit["2"]["a"] == pytest.approx(a_true, abs=0.04) and fit["2"]["b"] == pytest.approx(b_true, abs=0.04)
    # the complete sweep: within 0.015 of the law's exponents
    fake_training(manifest)
    complete = S.collect(manifest)[0]
    fit2 = fit_approach2(complete, n_boot=0).params
    a_true, b_true = isoflop_exponents_of_the_law(complete)
    assert fit2["a"] == pytest.approx(a_true, abs=0.015) and fit2["b"] == pytest.approx(b_true, abs=0.015)
    for name in ("frontier", "isoflop", "contours", "envelope"):
        assert os.path.getsize(os.path.join(out, f"scaling_{name}.png")) > 10_000


def test_run_local_records_failures(tmp_path):
    """A run that fails to train is recorded through the sweep runner: its exit code, no DONE, its log."""
    bad_data = tmp_path / "bad_data.gin"
    bad_data.write_text("train.train_task = 'no_such_task'\n")
    out = str(tmp_path / "sweep")
    m = S.plan_sweep([1e11], [S.Size.parse("2x64")], base=load_config("gin_configs/models/tiny.gin"), out_dir=out,
                     seq_len=32, batch_size=8, min_steps=1, model_gin=["gin_configs/models/tiny.gin"],
                     run_gin=["gin_configs/runs/pretrain.gin", str(bad_data)])
    S.write_sweep(m, out)
    logs = []
    codes = S.run_local(out, log=logs.append)
    name = m["runs"][0]["name"]
    assert codes == {name: 1} and not os.path.exists(os.path.join(out, name, "DONE"))
    assert "train.log" in logs[-1] and "no_such_task" in open(os.path.join(out, name, "train.log")).read()
