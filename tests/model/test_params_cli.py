"""`gopher-jax params` end to end through the CLI entry point."""
import json

import pytest

from gopher_jax import cli


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def test_params_json_for_280b(capsys):
    code, out = run_cli(capsys, "params", "--gin_file=gin_configs/models/gopher_280b.gin", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["total"] == pytest.approx(280e9, rel=0.01)
    assert report["non_embedding"] == report["total"] - 32_000 * 16_384
    layer_q = next(p for p in report["params"] if p["path"] == "layers/attention/query/kernel")
    assert layer_q["shape"] == [80, 16384, 128, 128]
    assert layer_q["axes"] == ["layers", "embed", "heads", "kv"]


def test_params_table_with_override(capsys):
    code, out = run_cli(capsys, "params", "--gin_file=gin_configs/models/tiny.gin",
                        "--gin_file=gin_configs/ablations/swiglu.gin", "--gin_param=ModelConfig.num_layers=2")
    assert code == 0
    assert "layers/mlp" in out and "non_embedding" in out


def test_every_parameter_has_logical_axes(capsys):
    code, out = run_cli(capsys, "params", "--gin_file=gin_configs/models/tiny.gin",
                        "--gin_file=gin_configs/ablations/untied.gin", "--json")
    from gopher_jax.model import axes
    for p in json.loads(out)["params"]:
        assert len(p["axes"]) == len(p["shape"]) and set(p["axes"]) <= set(axes.ALL), p


def test_unknown_gin_file_lists_known_ones():
    with pytest.raises(FileNotFoundError, match="gopher_44m.gin"):
        cli.main(["params", "--gin_file=gin_configs/models/nope.gin"])


def test_unknown_command_exits_2(capsys):
    assert cli.main(["trian"]) == 2
    assert "unknown command" in capsys.readouterr().err
