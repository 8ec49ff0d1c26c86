"""`gopher-jax import`: a transformers-initialised Llama gives our logits equal to transformers'; export and
import invert each other bit for bit; eval, sample and train --resume run on the imported model (8 devices)."""
import json
import math
import os
import shutil

import jax
import numpy as np
import pytest
import sentencepiece as spm
import torch
from safetensors.numpy import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from gopher_jax import cli
from gopher_jax.data.tokenizer import SEGMENT_START_ID
from gopher_jax.eval import checkpoint_loader
from gopher_jax.interop import hf_mapping
from gopher_jax.interop.export import export_hf
from gopher_jax.interop.import_hf import import_hf
from tests.interop import helpers

TOLERANCE = 1e-4
MESH = "data=2,fsdp=2,tensor=2"  # import places the params sharded over all 8 test devices
RUN_SETTINGS = ["train.steps = 2", "train.batch_size = 8", "train.seq_len = 32", "train.eval_batches = 1",
                "train.log_every = 1", "train.checkpoint_every = 1"]


@pytest.fixture(scope="module")
def hf_llama(tmp_path_factory, sp_model):
    """A randomly initialised transformers Llama (GQA, untied, head_dim != hidden/heads, non-default rope
    theta and eps, perturbed norm weights), saved with save_pretrained, plus our SentencePiece model."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=64,
                         rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 20000.0},
                         tie_word_embeddings=False, initializer_range=0.1)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    out = str(tmp_path_factory.mktemp("hf_llama"))
    model.save_pretrained(out)
    shutil.copyfile(sp_model, os.path.join(out, "tokenizer.model"))
    return out


@pytest.fixture(scope="module")
def imported(hf_llama, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("imported"))
    import_hf(hf_llama, workdir, mesh=MESH, gin_params=RUN_SETTINGS)
    return workdir


def _held_out(sp_model, length=40):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    return np.asarray([([SEGMENT_START_ID] + sp.encode(t))[:length] for t in helpers.held_out_texts()])


def test_imported_transformers_llama_gives_transformers_logits(imported, hf_llama, sp_model):
    loaded = checkpoint_loader.load(imported)
    cfg = loaded.config
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.d_ff, cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings) == (
        2, 24, 160, 20000.0, 1e-5, False)
    tokens = _held_out(sp_model)
    diff = np.abs(helpers.our_logits(cfg, loaded.params, tokens) - helpers.hf_logits(hf_llama, tokens)).max()
    print(f"imported transformers Llama: max abs logit difference {diff:.2e}")
    assert diff <= TOLERANCE
    # The padding rows of the output projection (1,000 -> 1,024) are zeros.
    assert not np.any(np.asarray(loaded.params["logits_dense"]["kernel"])[:, 1000:])


def test_export_of_imported_model_is_the_original_checkpoint_bit_for_bit(imported, hf_llama, tmp_path):
    out = str(tmp_path / "hf")
    export_hf(imported, out)
    original = load_file(os.path.join(hf_llama, "model.safetensors"))
    exported = load_file(os.path.join(out, "model.safetensors"))
    assert sorted(original) == sorted(exported)
    for name in original:
        assert original[name].dtype == exported[name].dtype and np.array_equal(original[name], exported[name]), name


def test_import_of_exported_run_is_the_run_bit_for_bit(trained_run, tmp_path):
    out, again = str(tmp_path / "hf"), str(tmp_path / "again")
    export_hf(trained_run, out)
    import_hf(out, again, mesh="single", gin_params=RUN_SETTINGS)
    x, y = checkpoint_loader.load(trained_run), checkpoint_loader.load(again)
    arch_fields = ("num_layers", "d_model", "num_heads", "head_dim", "kv_heads", "ffw_dim", "vocab_size", "max_len",
                   "norm", "norm_eps", "position", "rope_theta", "mlp", "block", "use_bias", "tie_embeddings")
    assert all(getattr(x.config, f) == getattr(y.config, f) for f in arch_fields)
    flat_x = jax.tree_util.tree_flatten_with_path(jax.device_get(x.params))[0]
    flat_y = dict(jax.tree_util.tree_flatten_with_path(jax.device_get(y.params))[0])
    assert len(flat_x) == len(flat_y)
    for path, a in flat_x:
        b = np.asarray(flat_y[path])
        a = np.asarray(a)
        if "embedder" in jax.tree_util.keystr(path):  # rows past vocab_size: sharding padding, never read
            assert np.array_equal(a[:1000], b[:1000]) and not np.any(b[1000:]), path
        else:
            assert a.dtype == b.dtype and np.array_equal(a, b), path


def test_eval_sample_and_resume_run_on_the_imported_model(imported, hf_llama, sp_model, tmp_path, capsys):
    sp = spm.SentencePieceProcessor(model_file=sp_model)
    texts = [t[:100] for t in helpers.held_out_texts()[:2]]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    # eval (sharded over 8 devices): bits-per-byte equals transformers' own loss on the same tokens.
    assert cli.main(["eval", f"--workdir={imported}", "--task=text", f"--data={data}", f"--mesh={MESH}", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    total_nll = n_bytes = 0.0
    for text in texts:
        ids = sp.encode(text)
        assert len(ids) < 64  # one window: every token is scored after the segment-start token
        logits = helpers.hf_logits(hf_llama, [[SEGMENT_START_ID] + ids[:-1]])[0].astype(np.float64)
        logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(
            -1, keepdims=True)
        total_nll -= logp[np.arange(len(ids)), ids].sum()
        n_bytes += len(text.encode("utf-8"))
    assert metrics["bits_per_byte"] == pytest.approx(total_nll / math.log(2) / n_bytes, rel=1e-4)

    # sample: greedy decoding equals transformers' greedy generate from the same prompt.
    prompt = "It is a truth universally"
    assert cli.main(["sample", f"--workdir={imported}", f"--prompt={prompt}", "--temperature=0",
                     "--max_new_tokens=8", "--json"]) == 0
    completion = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["completion"]
    model = LlamaForCausalLM.from_pretrained(hf_llama, dtype=torch.float32)
    ids = [SEGMENT_START_ID] + sp.encode(prompt)
    # The explicit mask matters: the segment-start token is the pad id, which generate() would mask out.
    generated = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=8, do_sample=False, eos_token_id=sp.eos_id(),
                               pad_token_id=sp.pad_id())[0, len(ids):].tolist()
    generated = generated[:generated.index(sp.eos_id())] if sp.eos_id() in generated else generated
    assert completion == sp.decode(ids[1:] + generated)[len(sp.decode(ids[1:])):]

    # train --resume continues from the imported step-0 checkpoint with the run's own config.gin.
    assert cli.main(["train", f"--gin_file={os.path.join(imported, 'config.gin')}", f"--workdir={imported}",
                     "--resume", "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert "resumed from step 0" in out
    assert 2 in {int(s) for s in os.listdir(os.path.join(imported, "checkpoints")) if s.isdigit()}


def test_import_refuses_what_it_cannot_represent(hf_llama, tmp_path, capsys):
    with open(os.path.join(hf_llama, "config.json")) as f:
        config = json.load(f)
    with pytest.raises(hf_mapping.UnsupportedArchitecture, match="attention_bias"):
        hf_mapping.model_config_from_hf({**config, "attention_bias": True})
    with pytest.raises(hf_mapping.UnsupportedArchitecture, match="linear"):
        hf_mapping.model_config_from_hf({**config, "rope_parameters": {"rope_type": "linear", "factor": 2.0,
                                                                       "rope_theta": 1e4}})
    bad = tmp_path / "gpt2"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert cli.main(["import", f"--hf_dir={bad}", f"--workdir={tmp_path / 'run'}"]) == 2
    assert "model_type='gpt2'" in capsys.readouterr().err
