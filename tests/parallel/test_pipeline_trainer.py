"""The pipelined train step (1F1B on pipeline 2 x tensor 2 x data 2, full remat, 8 microbatches as
2 accumulated pipeline passes of 4) equals the plain single-device step; its checkpoint keeps the
[num_layers, ...] layout, so it restores and continues with pipeline=4 (GPipe) and without a pipeline,
with the same next-step loss. One test: the compiled steps are shared (the suite runs on 2 cores)."""
import jax
import numpy as np
import pytest

from gopher_jax.parallel.mesh import MeshConfig
from gopher_jax.train.checkpoints import Checkpointer
from tests.parallel.pipeline_helpers import FAST_COMPILE, MODEL, the_batch, trainer

REMAT = MODEL.replace(remat_policy="full")


def _compiled_step(t, state):
    return t.train_step.lower(state, t.put_batch(the_batch())).compile(FAST_COMPILE)


def test_pipelined_step_equals_plain_step_and_checkpoint_moves_between_pipeline_degrees(tmp_path):
    plain = trainer(model=REMAT, microbatches=1)  # one device, no pipeline
    piped = trainer(MeshConfig(data=2, tensor=2, pipeline=2), schedule="1f1b", microbatches=8,
                    pipeline_microbatches=4, model=REMAT)
    assert piped.state_shardings.params["layers"]["mlp"]["wi"]["kernel"].spec == jax.sharding.PartitionSpec(
        "pipeline", None, "tensor")

    with plain.context():
        plain_state = plain.init()
        plain_step = _compiled_step(plain, plain_state)
        ref_state, ref = plain_step(plain_state, plain.put_batch(the_batch(seed=1)))
        ref_state = jax.device_get(ref_state)
    with piped.context():
        state = piped.init()
        step = _compiled_step(piped, state)
        state, metrics = step(state, piped.put_batch(the_batch(seed=1)))
        host = jax.device_get(state)
        ckpt = Checkpointer(str(tmp_path))
        ckpt.save(1, state, {"batches_consumed": 1})
        ckpt.wait()
        _, expected = step(state, piped.put_batch(the_batch(seed=2)))
    ckpt.close()

    # 1. the pipelined step is the plain step: loss, gradients (Adam's first moment), new parameters
    assert float(metrics["loss"]) == pytest.approx(float(ref["loss"]), rel=1e-5)
    assert float(metrics["grad_norm"]) == pytest.approx(float(ref["grad_norm"]), rel=1e-4)
    mu, ref_mu = host.opt_state[1][0].mu, ref_state.opt_state[1][0].mu  # (1 - b1) x clipped gradient
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-7), mu, ref_mu)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), host.params, ref_state.params)
    assert host.params["layers"]["mlp"]["wi"]["kernel"].shape[0] == MODEL.num_layers  # stored layout unchanged

    # 2. the checkpoint continues on pipeline=4 (GPipe) and on no pipeline (the plain trainer)
    pp4 = trainer(MeshConfig(data=2, pipeline=4), schedule="gpipe", microbatches=4, model=REMAT)
    for loader, step_fn in ((pp4, None), (plain, plain_step)):
        ckpt = Checkpointer(str(tmp_path))
        restored, _ = ckpt.restore(None, loader.abstract_state, loader.state_shardings)
        ckpt.close()
        kernel = restored.params["layers"]["mlp"]["wi"]["kernel"]
        assert kernel.sharding.spec == loader.state_shardings.params["layers"]["mlp"]["wi"]["kernel"].spec
        with loader.context():
            step_fn = step_fn or _compiled_step(loader, restored)
            _, got = step_fn(restored, loader.put_batch(the_batch(seed=2)))
        assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-5), loader.mesh.shape
        assert float(got["grad_norm"]) == pytest.approx(float(expected["grad_norm"]), rel=1e-4), loader.mesh.shape
