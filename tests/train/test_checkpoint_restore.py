"""Checkpoints: save on one mesh, restore on another, and the next step is the same."""
import jax
import pytest

from gopher_jax.parallel.mesh import MeshConfig
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.state import make_init_fn
from tests.train.helpers import MODEL, batch, trainer_on


def _abstract(trainer):
    return jax.eval_shape(make_init_fn(MODEL, trainer.tx, 16), jax.random.key(0))


def test_save_on_fsdp_restore_on_tensor_parallel(tmp_path):
    saver = trainer_on(MeshConfig(data=1, fsdp=8), jax.devices())
    with saver.context():
        state = saver.init()
        state, _ = saver.train_step(state, saver.put_batch(batch(seed=1)))
        ckpt = Checkpointer(str(tmp_path))
        ckpt.save(1, state, {"batches_consumed": 1})
        ckpt.wait()
        _, expected = saver.train_step(state, saver.put_batch(batch(seed=2)))
    ckpt.close()

    loader = trainer_on(MeshConfig(data=2, tensor=4), jax.devices())
    ckpt = Checkpointer(str(tmp_path))
    assert ckpt.latest_step() == 1
    restored, data_state = ckpt.restore(None, _abstract(loader), loader.state_shardings)
    assert data_state == {"batches_consumed": 1}
    kernel = restored.params["layers"]["attention"]["query"]["kernel"]
    assert kernel.sharding.spec == loader.state_shardings.params["layers"]["attention"]["query"]["kernel"].spec
    with loader.context():
        _, got = loader.train_step(restored, loader.put_batch(batch(seed=2)))
    assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-6)
    assert float(got["grad_norm"]) == pytest.approx(float(expected["grad_norm"]), rel=1e-5)
    ckpt.close()


def test_restore_without_checkpoint_says_what_to_do(tmp_path):
    trainer = trainer_on()
    with pytest.raises(FileNotFoundError, match="start without --resume"):
        Checkpointer(str(tmp_path)).restore(None, _abstract(trainer), trainer.state_shardings)


def test_each_checkpoint_keeps_the_gin_bindings_it_was_saved_with(tmp_path):
    trainer = trainer_on()
    bindings = "ModelConfig.num_layers = 2\ntrain.spike_policy = 'none'\n"
    with trainer.context():
        state = trainer.init()
        ckpt = Checkpointer(str(tmp_path / "with"), run_config=bindings)
        ckpt.save(1, state, {"batches_consumed": 1})
        ckpt.close()
        bare = Checkpointer(str(tmp_path / "without"))
        bare.save(1, state, {"batches_consumed": 1})
        bare.close()
    for name, expected in (("with", bindings), ("without", None)):
        ckpt = Checkpointer(str(tmp_path / name))
        assert ckpt.saved_run_config(1) == expected
        ckpt.close()
