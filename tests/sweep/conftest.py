"""One finished sweep shared by the tests that read it: 3 arms (relative / RoPE / ALiBi) x 2 seeds of a
1-layer, 64-wide variant of tiny.gin, 3 steps each, trained by `gopher-jax sweep --workers=2`."""
import pytest

from gopher_jax.cli import main

# Tiny and short: the runs exist to exercise the runner and compare, not to learn anything.
TEST_PARAMS = ["train.steps=3", "train.seq_len=32", "train.batch_size=8", "train.eval_every=0",
               "train.eval_batches=1", "train.log_every=1", "train.checkpoint_every=3",
               "ModelConfig.num_layers=1", "ModelConfig.scan_unroll=1", "ModelConfig.d_model=64",
               "ModelConfig.num_heads=2"]
AXES = ["ModelConfig.position=relative,rope,alibi", "train.seed=0,1"]


def sweep_argv(out, *extra, params=TEST_PARAMS, axes=AXES, baseline="position=relative") -> list[str]:
    """Returns `gopher-jax sweep` arguments for a flags-defined test sweep into `out`."""
    return ["sweep", f"--out={out}", *[f"--gin_param={p}" for p in params], *[f"--axis={a}" for a in axes],
            *([f"--baseline={baseline}"] if baseline else []), *extra]


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory):
    """Returns the directory of the 3 x 2 sweep, trained with two local workers."""
    out = str(tmp_path_factory.mktemp("sweep") / "positions")
    assert main(sweep_argv(out, "--workers=2")) == 0
    return out
