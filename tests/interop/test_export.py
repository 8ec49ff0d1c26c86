"""`gopher-jax export --format=hf`: transformers' own classes reproduce our logits (fp32, <= 1e-4) on
real held-out text, for each exportable architecture; a model no class represents exactly is refused."""
import json
import os

import numpy as np
import pytest

from gopher_jax import cli
from gopher_jax.eval import checkpoint_loader
from gopher_jax.interop import hf_mapping
from gopher_jax.interop.export import export_hf
from gopher_jax.model.config import ModelConfig
from tests.interop import helpers

TOLERANCE = 1e-4  # max abs logit difference, float32 on both sides


def held_out_tokens(hf_dir: str, length: int = 48) -> np.ndarray:
    """[batch, length] ids of real held-out passages, tokenised by the exported tokenizer (AutoTokenizer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    rows = [tok(text)["input_ids"][:length] for text in helpers.held_out_texts()]
    assert all(len(r) == length for r in rows)
    return np.asarray(rows)


def max_logit_difference(run: str, hf_dir: str) -> float:
    loaded = checkpoint_loader.load(run)
    tokens = held_out_tokens(hf_dir)
    ours = helpers.our_logits(loaded.config, loaded.params, tokens)
    theirs = helpers.hf_logits(hf_dir, tokens)
    assert ours.shape == theirs.shape == (*tokens.shape, loaded.config.vocab_size)
    return float(np.abs(ours - theirs).max())


def test_trained_rope_swiglu_model_matches_transformers_llama(trained_run, tmp_path, capsys):
    out = str(tmp_path / "hf")
    assert cli.main(["export", f"--workdir={trained_run}", "--format=hf", f"--out={out}"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 1000
    assert (config["rms_norm_eps"], config["rope_theta"]) == (1e-5, 5000.0)
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json", "model.safetensors",
                                       "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                                       "tokenizer_config.json"]
    diff = max_logit_difference(trained_run, out)
    print(f"llama (trained rope+swiglu): max abs logit difference {diff:.2e}")
    assert diff <= TOLERANCE
    capsys.readouterr()
    # The common call generate(ids, pad_token_id=tokenizer.pad_token_id), with no attention mask, continues
    # the prompt exactly as `gopher-jax sample` does (greedy): the pad token is not the start token
    # (<pad>, id 0, which every prompt begins with), so generate() masks nothing out.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id == tok.eos_token_id != tok.bos_token_id == config["bos_token_id"] == 0
    prompt = "It is a truth universally"
    ids = torch.tensor([tok(prompt)["input_ids"]])
    new = 12
    gen = model.generate(ids, pad_token_id=tok.pad_token_id, max_new_tokens=new, do_sample=False,
                         output_logits=True, return_dict_in_generate=True)
    assert cli.main(["sample", f"--workdir={trained_run}", f"--prompt={prompt}", "--temperature=0",
                     f"--max_new_tokens={new}", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out.strip().splitlines()[-1])[0]["completion"]
    hf = gen.sequences[0, ids.shape[1]:].tolist()
    hf = hf[:hf.index(tok.eos_token_id)] if tok.eos_token_id in hf else hf
    prompt_ids = ids[0, 1:].tolist()
    assert ours == tok.decode(prompt_ids + hf)[len(tok.decode(prompt_ids)):]
    # The check can fail: generate()'s first-step logits are our model's after the whole prompt, start
    # token included, and hiding the start token (what a <pad> pad token made generate() do) moves them.
    loaded = checkpoint_loader.load(trained_run)
    reference = helpers.our_logits(loaded.config, loaded.params, ids.numpy())[0, -1]
    assert np.abs(gen.logits[0][0].numpy() - reference).max() <= TOLERANCE
    hidden = torch.ones_like(ids)
    hidden[0, 0] = 0
    masked = model.generate(ids, attention_mask=hidden, pad_token_id=tok.pad_token_id, max_new_tokens=1,
                            do_sample=False, output_logits=True, return_dict_in_generate=True)
    assert np.abs(masked.logits[0][0].numpy() - reference).max() > 100 * TOLERANCE


VARIANTS = {
    # Llama: grouped-query attention, untied output, head_dim != d_model / num_heads.
    "llama_gqa_untied": ("ModelConfig.mlp = 'swiglu'\nModelConfig.num_kv_heads = 2\n"
                         "ModelConfig.tie_embeddings = False\nModelConfig.head_dim = 24", "LlamaForCausalLM", 0),
    # Llama: multi-query attention, unscanned layers (layers_0, layers_1 in the checkpoint).
    "llama_mqa_unscanned": ("ModelConfig.mlp = 'swiglu'\nModelConfig.num_kv_heads = 1\nModelConfig.scan_layers = False",
                            "LlamaForCausalLM", 0),
    # Falcon: the parallel block (one shared LayerNorm), GQA, biases everywhere.
    "falcon_parallel_gqa_bias": ("ModelConfig.mlp = 'gelu'\nModelConfig.norm = 'layernorm'\nModelConfig.block = "
                                 "'parallel'\nModelConfig.num_kv_heads = 2\nModelConfig.use_bias = True",
                                 "FalconForCausalLM", 0),
    # Falcon: sequential block, MQA, untied; written as several safetensors shards + index.
    "falcon_sequential_mqa_untied": ("ModelConfig.mlp = 'gelu'\nModelConfig.norm = 'layernorm'\n"
                                     "ModelConfig.num_kv_heads = 1\nModelConfig.tie_embeddings = False",
                                     "FalconForCausalLM", 150_000),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_exportable_architecture_matches_transformers(name, tmp_path, sp_model):
    gin_text, architecture, shard_bytes = VARIANTS[name]
    # Init + N(0, 0.1) noise on every parameter: norm scales/shifts and biases far from 1/0.
    run = helpers.write_run(str(tmp_path / "run"), helpers.SMALL + "ModelConfig.position = 'rope'\n" + gin_text,
                            sp_model, steps=0, perturb=0.1)
    out = str(tmp_path / "hf")
    result = export_hf(run, out, **({"max_shard_bytes": shard_bytes} if shard_bytes else {}))
    assert result["architecture"] == architecture
    if shard_bytes:
        assert len(result["files"]) > 1 and os.path.isfile(os.path.join(out, "model.safetensors.index.json"))
    diff = max_logit_difference(run, out)
    print(f"{name}: max abs logit difference {diff:.2e}")
    assert diff <= TOLERANCE


def _config(text: str) -> ModelConfig:
    fields = dict(line.split(" = ") for line in text.strip().splitlines())
    return ModelConfig(**{k.split(".")[1]: eval(v) for k, v in fields.items()})  # noqa: S307 — test literals


@pytest.mark.parametrize("bindings, named, fix", [
    # Gopher's default: Transformer-XL relative positions + GELU -> closest is Llama with rope + swiglu.
    ("ModelConfig.position = 'relative'", "position='relative'", "gin_configs/ablations/rope.gin"),
    ("ModelConfig.position = 'alibi'\nModelConfig.mlp = 'swiglu'", "ALiBi", "gin_configs/ablations/rope.gin"),
    ("ModelConfig.position = 'learned'\nModelConfig.mlp = 'swiglu'", "learned", "gin_configs/ablations/rope.gin"),
    ("ModelConfig.position = 'rope'", "mlp='gelu'", "gin_configs/ablations/swiglu.gin"),
    # The parallel block with RMSNorm: no class (Falcon's norm is LayerNorm) -> Llama, sequential.
    ("ModelConfig.position = 'rope'\nModelConfig.mlp = 'swiglu'\nModelConfig.block = 'parallel'",
     "block='parallel'", "ModelConfig.block='sequential'"),
    # Falcon's sequential block has no GQA.
    ("ModelConfig.position = 'rope'\nModelConfig.norm = 'layernorm'\nModelConfig.num_kv_heads = 4",
     "num_kv_heads=4", "gin_configs/ablations/parallel_block.gin"),
])
def test_unexportable_config_names_the_switch_and_the_closest_ablation(bindings, named, fix):
    with pytest.raises(hf_mapping.UnsupportedArchitecture) as e:
        hf_mapping.architecture(_config(bindings))
    assert named in str(e.value) and fix in str(e.value)


def test_export_cli_refuses_gopher_default_before_reading_weights(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.gin").write_text("ModelConfig.num_layers = 2\n")  # Gopher defaults: relative positions
    out = tmp_path / "hf"
    assert cli.main(["export", f"--workdir={run}", "--format=hf", f"--out={out}"]) == 2
    err = capsys.readouterr().err
    assert "ModelConfig.position='relative'" in err and "--gin_file=gin_configs/ablations/rope.gin" in err
    assert not out.exists()


def test_lm_eval_hf_backend_scores_the_export_like_our_adapter_scores_the_run(trained_run, tmp_path):
    """The worked example's last step (docs/interop.md): lm-eval's HF backend on the exported directory
    gives the log-likelihoods lm-eval gets through our own adapter on the run."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from gopher_jax.eval.lm_eval_adapter import GopherJaxLM

    out = str(tmp_path / "hf")
    export_hf(trained_run, out)
    texts = helpers.held_out_texts()
    pairs = [Instance("loglikelihood", {}, (t[:100], t[100:130]), i) for i, t in enumerate(texts)]
    rolling = [Instance("loglikelihood_rolling", {}, (t[:140],), i) for i, t in enumerate(texts)]
    ours = GopherJaxLM.from_workdir(trained_run, mesh="single", batch_size=4)
    # Context/continuation tasks: add_bos_token=True puts the start token before every context.
    hf = HFLM(pretrained=out, device="cpu", dtype="float32", batch_size=4, add_bos_token=True)
    theirs_ll, ours_ll = hf.loglikelihood(pairs), ours.loglikelihood(pairs)
    assert [g for _, g in theirs_ll] == [g for _, g in ours_ll]
    np.testing.assert_allclose([ll for ll, _ in theirs_ll], [ll for ll, _ in ours_ll], rtol=1e-5, atol=1e-4)
    # Perplexity (rolling) tasks: lm-eval adds its prefix token (the BOS, our start token) itself, so
    # the tokenizer must not (add_bos_token=False), else the start token is scored as a text token.
    hf = HFLM(pretrained=out, device="cpu", dtype="float32", batch_size=4, add_bos_token=False)
    np.testing.assert_allclose(hf.loglikelihood_rolling(rolling), ours.loglikelihood_rolling(rolling),
                               rtol=1e-5, atol=1e-4)
