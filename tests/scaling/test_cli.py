"""`gopher-jax scaling fit|optimal|flops|plot` end to end through the CLI table."""
import json
import os

import pytest

from gopher_jax.cli import main
from gopher_jax.scaling import synthetic
from gopher_jax.scaling.runs import write_csv


@pytest.fixture
def runs_csv(tmp_path):
    path = str(tmp_path / "runs.csv")
    write_csv(synthetic.isoflop_runs(noise=0.005, seed=4), path)
    return path


def test_fit_approach3_json(runs_csv, capsys):
    assert main(["scaling", "fit", "--runs", runs_csv, "--approach", "3", "--json", "--bootstrap", "10",
                 "--starts", "32"]) == 0
    js = json.loads(capsys.readouterr().out)
    for k in ("E", "A", "B", "alpha", "beta"):
        assert k in js and len(js["intervals"][k]) == 2
    assert js["alpha"] == pytest.approx(0.34, abs=0.03)


def test_fit_all_text_and_optimal_from_fit(runs_csv, tmp_path, capsys):
    fit_path = str(tmp_path / "fit.json")
    assert main(["scaling", "fit", "--runs", runs_csv, "--bootstrap", "5", "--starts", "16", "--out", fit_path]) == 0
    text = capsys.readouterr().out
    assert "approach 1: skipped" in text and "approach 2" in text and "alpha" in text
    assert main(["scaling", "optimal", "--flops", "1e21", "--fit", fit_path, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["3"]["source"] == "fitted" and plan["1"]["source"] != "fitted"


def test_fit_errors_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("N,tokens,loss\n1,2,3\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['D'\]"):
        main(["scaling", "fit", "--runs", str(bad)])
    neg = tmp_path / "neg.csv"
    neg.write_text("N,D,loss\n1e6,1e9,3.0\n1e6,1e9,nan\n")
    with pytest.raises(ValueError, match="row 1 has loss=nan"):
        main(["scaling", "fit", "--runs", str(neg)])
    one = tmp_path / "one.csv"
    one.write_text("N,D,loss\n1e6,1e9,3.0\n2e6,1e9,2.9\n")
    assert main(["scaling", "fit", "--runs", str(one), "--approach", "2"]) == 1
    assert "a parabola needs >= 3" in capsys.readouterr().err


def test_optimal_json_keyed_by_approach(capsys):
    assert main(["scaling", "optimal", "--flops", "5.76e23", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert set(plan) == {"1", "2", "3", "kaplan"}
    assert plan["1"]["N"] == pytest.approx(67e9, rel=0.015) and plan["1"]["D"] == pytest.approx(1.45e12, rel=0.05)
    assert plan["1"]["nearest_config"]["gin_file"].endswith("chinchilla_70b.gin")
    assert main(["scaling", "optimal", "--flops", "5.76e23"]) == 0
    assert "chinchilla_70b.gin" in capsys.readouterr().out


def test_flops_command(capsys):
    assert main(["scaling", "flops", "--gin_file=gin_configs/models/tiny.gin", "--seq_len", "256", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["params"] == 4_459_264 and r["train_flops_per_token"]["6nd"] == 6 * 4_459_264  # = the Flax model


def test_plot_command(runs_csv, tmp_path, capsys):
    out = str(tmp_path / "img")
    assert main(["scaling", "plot", "--runs", runs_csv, "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["scaling_contours.png", "scaling_frontier.png", "scaling_isoflop.png"]
