"""Eval on a device mesh (batch over data/fsdp, params sharded by the run's rules) equals one device,
and the loader reads only the params subtree of a checkpoint."""
import math

import jax
import numpy as np
import pytest

from gopher_jax.eval import checkpoint_loader, perplexity
from gopher_jax.eval.scorer import Scorer


def _requests():
    rng = np.random.default_rng(0)
    return [(rng.integers(3, 4096, n).tolist(), rng.integers(3, 4096, m).tolist())
            for n, m in [(5, 1), (20, 4), (1, 7), (12, 2), (25, 3), (60, 4), (3, 30), (9, 9), (2, 2)]]


@pytest.mark.parametrize("mesh, shards", [("data=2,fsdp=2,tensor=2", 4), ("data=8", 8)])
def test_sharded_scoring_matches_one_device(loaded, run_dir, mesh, shards):
    on_mesh = checkpoint_loader.load(run_dir, mesh=mesh)
    assert dict(on_mesh.mesh.shape) == {**{"data": 1, "fsdp": 1, "tensor": 1, "pipeline": 1},
                                        **{k: int(v) for k, v in (p.split("=") for p in mesh.split(","))}}
    embedding = on_mesh.params["embedder"]["embedding"]
    if "tensor" in mesh:  # params are sharded as in training, not replicated
        assert len(embedding.addressable_shards) == 8 and embedding.addressable_shards[0].data.shape[0] == 4096 // 2
    reqs = _requests()
    one = Scorer.for_model(loaded.config, loaded.params, batch_size=6)
    sharded = Scorer.for_loaded(on_mesh, batch_size=6)  # padded up to a multiple of the batch shards
    assert sharded.batch_shards == shards and sharded.batch_size == -(-6 // shards) * shards
    a, b = one.loglikelihood(reqs), sharded.loglikelihood(reqs)
    np.testing.assert_allclose([x for x, _ in b], [x for x, _ in a], rtol=0, atol=1e-5)
    assert [g for _, g in b] == [g for _, g in a]
    # Perplexity and bits-per-byte go through the same scorer.
    docs = [(np.random.default_rng(1).integers(3, 4096, 150).tolist(), "x" * 400)]
    pa, pb = (perplexity.evaluate_documents(s, docs, 1, stride=32) for s in (one, sharded))
    assert pb["tokens"] == pa["tokens"] and pb["bits_per_byte"] == pytest.approx(pa["bits_per_byte"], abs=1e-6)
    assert math.isclose(pb["ppl"], pa["ppl"], rel_tol=1e-6)


def test_loader_reads_only_params(loaded, run_dir, monkeypatch):
    """Partial restore: identical params to a full train-state restore; no optimizer leaf is read."""
    from orbax.checkpoint._src.serialization import jax_array_handlers, type_handlers

    from gopher_jax.model.config import ModelConfig
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.optimizer import make_optimizer
    from gopher_jax.train.state import abstract_params, make_init_fn

    read = []
    for cls in (jax_array_handlers.ArrayHandler, type_handlers.NumpyHandler, type_handlers.ScalarHandler):
        original = cls.deserialize

        async def spy(self, infos, args=None, _original=original):
            read.extend(i.name for i in infos)
            return await _original(self, infos, args)

        monkeypatch.setattr(cls, "deserialize", spy)
    partial = checkpoint_loader.load(run_dir)
    assert read and all(n.startswith("params.") for n in read), read
    assert len(read) == len(jax.tree.leaves(partial.params))

    # The whole train state restored (what the loader used to do) has the same params.
    read.clear()
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    tx = make_optimizer(opt_cfg, train_cfg.steps, abstract_params(model_cfg, train_cfg.seq_len))
    abstract = jax.eval_shape(make_init_fn(model_cfg, tx, train_cfg.seq_len), jax.random.key(0))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    ckpt = Checkpointer(run_dir, async_save=False)
    state, _ = ckpt.restore(partial.step, abstract, jax.tree.map(lambda _: one, abstract))
    ckpt.manager.close()
    assert any(n.startswith("opt_state.") for n in read)  # the spy sees optimizer leaves when they are read
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), state.params,
                 partial.params)
    assert jax.tree.structure(state.params) == jax.tree.structure(partial.params)


def test_parse_mesh_errors_name_the_flag():
    with pytest.raises(ValueError, match="--mesh='datas=2'"):
        checkpoint_loader.parse_mesh("datas=2")
    assert checkpoint_loader.parse_mesh("single") is None
    assert checkpoint_loader.parse_mesh("fsdp=-1,tensor=2").tensor == 2
