"""Runs for the interop tests: a tokenizer trained on real text, a model trained on it for a few steps
(or randomly initialised and perturbed), saved as a workdir exactly as `gopher-jax train` lays it out."""
import os

import gin
import jax
import numpy as np

from tests.fixtures import paths

TRAIN_TEXT = paths.SHAKESPEARE  # 200 KB of tinyshakespeare
HELD_OUT_TEXT = paths.gutenberg(1342)  # Pride and Prejudice's opening chapters: never trained on

SMALL = """
ModelConfig.num_layers = 2
ModelConfig.d_model = 64
ModelConfig.num_heads = 4
ModelConfig.head_dim = 16
ModelConfig.max_len = 64
ModelConfig.vocab_size = 1000
ModelConfig.norm_eps = 1e-5
ModelConfig.rope_theta = 5000.0
train.steps = 4
train.batch_size = 4
train.seq_len = 64
optimizer.peak_learning_rate = 0.01
optimizer.warmup_steps = 1
"""
ROPE_SWIGLU = "ModelConfig.position = 'rope'\nModelConfig.mlp = 'swiglu'\n"


def train_tokenizer(directory: str, vocab_size: int = 1000) -> str:
    """Returns a SentencePiece BPE model (our trainer's defaults) trained on 200 KB of Shakespeare."""
    from gopher_jax.data.tokenizer import train_tokenizer as train

    with open(TRAIN_TEXT, encoding="utf-8") as f:
        text = f.read()[:200_000]
    return train([text], os.path.join(directory, "sp"), vocab_size=vocab_size)


def held_out_texts(n: int = 4, chars: int = 300) -> list[str]:
    """Real held-out passages (incl. a leading space, curly quotes and a non-ASCII character)."""
    with open(HELD_OUT_TEXT, encoding="utf-8-sig") as f:
        text = f.read()
    start = text.index("It is a truth universally acknowledged")
    out = [text[start + i * chars: start + (i + 1) * chars] for i in range(n)]
    # A leading space (SentencePiece's dummy prefix then gives "▁▁"), accents and a dash.
    return out + [" " + text[start + 5000: start + 5000 + chars // 2] + " — café naïveté, “1811”."]


def _batches(tokenizer_path, batch_size, seq_len, steps, seed):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
    with open(TRAIN_TEXT, encoding="utf-8") as f:
        ids = np.asarray(sp.encode(f.read()[:200_000]), np.int32)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - seq_len - 1, batch_size)
        rows = np.stack([ids[s: s + seq_len + 1] for s in starts])
        yield {"inputs": rows[:, :-1], "targets": rows[:, 1:],
               "loss_weights": np.ones((batch_size, seq_len), np.float32),
               "segment_ids": np.ones((batch_size, seq_len), np.int32),
               "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len)).copy()}


def write_run(workdir: str, gin_text: str, tokenizer_path: str, *, steps: int | None = None, perturb: float = 0.0,
              seed: int = 0) -> str:
    """Trains `steps` (default train.steps; 0 = init only) steps of the gin-configured model on one
    device (real text), saves the checkpoint and config.gin in `workdir` as the training loop does;
    returns `workdir`.

    `perturb` > 0 adds N(0, perturb) noise to every parameter before training, so norm scales and
    biases are far from their init (a mapping that ignored them would fail the logit comparison).
    """
    from gopher_jax import gin_utils
    import gopher_jax.train.loop  # noqa: F401 — registers the configurables
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import DEFAULT_RULES
    from gopher_jax.train.checkpoints import Checkpointer
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.sharded import build_trainer

    gin_utils.parse_gin([], [line for line in (gin_text + f"\ntrain.tokenizer = '{tokenizer_path}'").splitlines()
                             if line.strip()])
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, pipeline=1), jax.devices()[:1])
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, mesh, DEFAULT_RULES)
    with trainer.context():
        state = trainer.init()
        if perturb:
            leaves, tree = jax.tree.flatten(state.params)
            keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
            noisy = [p + perturb * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
            state = state.replace(params=jax.tree.unflatten(tree, noisy))
        steps = train_cfg.steps if steps is None else steps
        for batch in _batches(tokenizer_path, train_cfg.batch_size, train_cfg.seq_len, steps, seed):
            state, _ = trainer.train_step(state, trainer.put_batch(batch))
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.gin"), "w") as f:
        f.write(gin.config_str())
    ckpt = Checkpointer(workdir, async_save=False)
    ckpt.save(steps, state, {"batches_consumed": steps}, force=True)
    ckpt.close()
    return workdir


def our_logits(model_config, params, tokens) -> np.ndarray:
    """Our model's float32 logits [batch, length, vocab_size] for int tokens [batch, length]."""
    from gopher_jax.model.decoder import Decoder

    return np.asarray(Decoder(model_config).apply({"params": params}, np.asarray(tokens, np.int32)))


def hf_logits(hf_dir: str, tokens) -> np.ndarray:
    """transformers' float32 logits for the model saved in `hf_dir` (AutoModelForCausalLM, no custom code)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()
