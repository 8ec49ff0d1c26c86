"""Sweep specs (file and flags) expand into named, hashed runs; bad specs fail naming the problem."""
import json

import pytest

from gopher_jax.sweep import plan, spec

BASE = ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin"]


def test_spec_file_expands_to_the_product(tmp_path):
    sw = spec.load_spec("gin_configs/sweeps/positions.gin")
    runs = plan.expand(sw)
    assert len(runs) == 9 and len({r.name for r in runs}) == 9
    assert sorted({r.arm for r in runs}) == ["position=alibi", "position=relative", "position=rope"]
    rope1 = next(r for r in runs if r.arm == "position=rope" and r.seed == "1")
    assert rope1.name.startswith("position-rope_seed-1_") and len(rope1.config_hash) == plan.HASH_CHARS
    assert rope1.params[-2:] == ("ModelConfig.position='rope'", "train.seed=1")  # axes after the base
    assert "train.steps = 60" in rope1.params and rope1.gin_files == tuple(BASE)
    assert plan.baseline_arm(sw, runs) == "position=relative"
    # the same spec names the same runs (finished runs are found again), a changed binding a new one
    assert [r.name for r in plan.expand(spec.load_spec("gin_configs/sweeps/positions.gin"))] == [r.name for r in runs]
    changed = spec.from_mapping({"base_gin_files": BASE, "base_params": ["train.steps = 61"],
                                 "axes": {"ModelConfig.position": ["rope"], "train.seed": [1]}})
    assert plan.expand(changed)[0].config_hash != rope1.config_hash
    path = plan.write_plan(str(tmp_path), sw, runs)
    loaded, again = plan.load_plan(str(tmp_path))
    assert again == runs and loaded["baseline"] == "position=relative"
    assert json.load(open(tmp_path / rope1.name / "sweep_run.json"))["arm"] == "position=rope" and path


def test_file_axes_dicts_and_zip():
    sw = spec.load_spec("gin_configs/sweeps/block_variants.gin")
    runs = plan.expand(sw)
    assert len(runs) == 8 and plan.baseline_arm(sw, runs) == "block=serial,mlp=gelu"
    par = next(r for r in runs if r.values["block"] == "parallel" and r.values["mlp"] == "gelu")
    assert par.gin_files == (*BASE, "gin_configs/ablations/parallel_block.gin")
    zipped = spec.from_mapping({"base_gin_files": BASE, "axes": {
        "ModelConfig.num_layers": [2, 4], "ModelConfig.d_model": [128, 256], "train.seed": [0, 1]},
        "zip": [["ModelConfig.num_layers", "ModelConfig.d_model"]]})
    runs = plan.expand(zipped)
    assert len(runs) == 4 and {r.arm for r in runs} == {"num_layers=2,d_model=128", "num_layers=4,d_model=256"}


def test_flags_build_the_same_spec():
    flags = spec.from_flags(BASE, ["train.steps = 60", "train.seq_len = 64", "train.log_every = 5",
                                   "train.eval_every = 20", "train.eval_batches = 4", "train.checkpoint_every = 60"],
                            ["ModelConfig.position=relative,rope,alibi", "train.seed=0,1,2"], baseline="position=relative")
    assert [r.name for r in plan.expand(flags)] == [r.name for r in plan.expand(spec.load_spec(
        "gin_configs/sweeps/positions.gin"))]
    named = spec.parse_axis_flag("block=serial:,parallel:gin_configs/ablations/parallel_block.gin")
    assert [(v.label, v.gin_files) for v in named.values] == [
        ("serial", ()), ("parallel", ("gin_configs/ablations/parallel_block.gin",))]


@pytest.mark.parametrize("fields, match", [
    ({"axes": {"position": ["relative", "rope.gin"]}}, "'relative' is neither a gin file"),
    ({"axes": {"train.seed": [0, 1]}, "zip": [["train.seed", "nope"]]}, "not in sweep.axes"),
    ({"axes": {"a.b": [1, 2], "c.d": [1]}, "zip": [["a.b", "c.d"]]}, "equal lengths"),
    ({"axes": {"train.seed": [0]}, "baseline": "position=rope"}, "no axis 'position'"),
    ({"axes": {"ModelConfig.position": ["rope"]}, "baseline": "position=alibi"}, "has labels"),
    ({"axes": {}, "bogus": 1}, "unknown field"),
])
def test_bad_specs_name_the_problem(fields, match):
    with pytest.raises(spec.SweepSpecError, match=match):
        spec.from_mapping({"base_gin_files": BASE, **fields})


def test_spec_file_only_holds_sweep_fields(tmp_path):
    p = tmp_path / "bad.gin"
    p.write_text("train.steps = 3\n")
    with pytest.raises(spec.SweepSpecError, match="only `sweep.FIELD = value`"):
        spec.load_spec(str(p))
