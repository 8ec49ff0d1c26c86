"""Config validation before compile: each error names the gin parameter, its value and a valid value."""
import pytest

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig
from gopher_jax.parallel.rules import DEFAULT_RULES
from gopher_jax.train.config import TrainConfig
from gopher_jax.train.validate import ConfigError, validate

TINY = ModelConfig(num_layers=4, num_heads=8, head_dim=32, d_model=256, vocab_size=4096, max_len=256)
TRAIN = TrainConfig(batch_size=8, seq_len=128)


def check(model=TINY, train=TRAIN, mesh=MeshConfig(), devices=8, processes=1, pieces=4096):
    return validate(model, train, mesh, DEFAULT_RULES, num_devices=devices, num_processes=processes,
                    tokenizer_pieces=pieces)


def test_a_valid_config_passes_and_returns_the_mesh():
    assert check() == {"data": 8, "fsdp": 1, "tensor": 1, "pipeline": 1}
    assert check(mesh=MeshConfig(data=2, fsdp=2, tensor=2))["tensor"] == 2


def test_heads_vs_tensor_axis():
    with pytest.raises(ConfigError) as e:
        check(model=TINY.replace(num_heads=6, num_kv_heads=0), mesh=MeshConfig(data=2, tensor=4))
    msg = str(e.value)
    assert "ModelConfig.num_heads=6" in msg and "MeshConfig.tensor=4" in msg and "MeshConfig.tensor in [2]" in msg


def test_kv_heads_vs_tensor_axis_under_mqa():
    with pytest.raises(ConfigError, match=r"ModelConfig.num_kv_heads=1 .* MeshConfig.tensor=2"):
        check(model=TINY.replace(num_kv_heads=1), mesh=MeshConfig(data=4, tensor=2))


def test_batch_vs_data_axes():
    with pytest.raises(ConfigError) as e:
        check(train=TrainConfig(batch_size=12, microbatches=2, seq_len=128))
    msg = str(e.value)
    assert "train.batch_size=12 / train.microbatches=2 = 6" in msg and "MeshConfig.data=8" in msg
    assert "use train.batch_size=16" in msg
    assert check(train=TrainConfig(batch_size=16, microbatches=2, seq_len=128))


def test_batch_vs_processes():
    with pytest.raises(ConfigError, match=r"train.batch_size=8 does not split over 3 processes.*train.batch_size=9"):
        check(processes=3, mesh=MeshConfig(data=-1))


def test_layers_vs_pipeline_stages():
    with pytest.raises(ConfigError, match=r"ModelConfig.num_layers=4 does not split into MeshConfig.pipeline=8 "
                                          r"stages; use MeshConfig.pipeline in \[1, 2, 4\]"):
        check(mesh=MeshConfig(data=1, pipeline=8))


def test_vocab_vs_tokenizer():
    with pytest.raises(ConfigError, match=r"ModelConfig.vocab_size=4096 is smaller than the tokenizer's 32000 "
                                          r"pieces.*ModelConfig.vocab_size=32000"):
        check(pieces=32000)


def test_sequence_length_vs_learned_positions():
    with pytest.raises(ConfigError, match=r"train.seq_len=512 exceeds ModelConfig.max_len=256.*"
                                          r"use train.seq_len=256 or ModelConfig.max_len=512"):
        check(model=TINY.replace(position="learned"), train=TrainConfig(batch_size=8, seq_len=512))
    check(model=TINY.replace(position="rope"), train=TrainConfig(batch_size=8, seq_len=512))  # extrapolates


def test_mesh_size_vs_device_count():
    with pytest.raises(ConfigError) as e:
        check(mesh=MeshConfig(data=4, tensor=4))
    msg = str(e.value)
    assert "needs 16 devices" in msg and "8 are available" in msg and "MeshConfig.data=-1" in msg
    with pytest.raises(ConfigError, match=r"MeshConfig.dcn_data=3 .* use a divisor of 8"):
        check(mesh=MeshConfig(dcn_data=3))


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as e:
        check(model=TINY.replace(num_layers=3, position="learned"), mesh=MeshConfig(data=4, pipeline=2),
              train=TrainConfig(batch_size=6, seq_len=1024), pieces=5000)
    lines = [l for l in str(e.value).splitlines() if l.strip().startswith("- ")]
    assert len(lines) == 4, str(e.value)  # seq_len, vocab, batch, layers


def test_every_batch_of_the_ramp_is_checked_against_the_data_axes():
    with pytest.raises(ConfigError) as e:
        check(train=TrainConfig(batch_size=8, seq_len=128, batch_ramp=((4096, 12),)))
    msg = str(e.value)
    assert "train.batch_ramp batch at 4,096 tokens=12 / train.microbatches=1 = 12" in msg and "that ramp batch=16" in msg
    assert check(train=TrainConfig(batch_size=8, seq_len=128, batch_ramp=((4096, 16),)))
