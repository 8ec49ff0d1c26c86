"""The one table between our parameters and Hugging Face transformers checkpoints.

Which transformers class represents a `ModelConfig` exactly (same logits, not approximately):

- Llama (`LlamaForCausalLM`): RMSNorm + RoPE + SwiGLU, sequential block, no biases; MHA/MQA/GQA,
  tied or untied embeddings, any head_dim.
- Falcon (`FalconForCausalLM`): LayerNorm (with shift) + RoPE + GELU (tanh form, transformers'
  "gelu_pytorch_tanh"); the parallel block with MHA/MQA/GQA (one shared norm,
  `new_decoder_architecture` with `num_ln_in_parallel_attn=1`), or the sequential block with MHA or
  MQA; biases on every dense layer or none; d_model == num_heads * head_dim.

Layout facts both directions rely on (checked against transformers by tests/interop):
- Our RoPE is the rotate-half form (`positions.apply_rope`), the same as transformers' `rotate_half`,
  with the same frequencies 1/theta^(2i/head_dim): q/k weights need no permutation (the
  permutation in Meta-to-HF scripts undoes Meta's interleaved pairs, which we do not use).
- Our norms multiply by `scale` (not 1 + scale), eps inside the square root, in float32: the same
  as LlamaRMSNorm and torch LayerNorm.
- Attention scores are scaled by head_dim**-0.5 in both; no logit scaling on either side.
- Dense kernels are [in..., out...]; torch Linear weights are [out, in]: flatten and transpose.
- The embedding table has `padded_vocab_size` rows (sharding); HF gets the first `vocab_size`.
  On import the padding rows are zeros (their logits are sliced off, so they never matter).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

LLAMA, FALCON = "llama", "falcon"
ARCHITECTURES = {LLAMA: "LlamaForCausalLM", FALCON: "FalconForCausalLM"}

# ModelConfig.position values no transformers class reproduces, and why (named in export errors).
_POSITION_WHY = {
    "relative": "Transformer-XL relative positions (Gopher's default) exist in no transformers class",
    "alibi": ("no transformers class computes our ALiBi exactly (Falcon rounds the slopes to bfloat16 and "
              "scales them by 1/sqrt(head_dim), MPT uses the exact-erf GELU, Bloom adds an embedding LayerNorm)"),
    "learned": "learned absolute positions are not mapped (GPT-2 would also need LayerNorm, GELU and MHA)",
}
ROPE_GIN = "--gin_file=gin_configs/ablations/rope.gin"


class UnsupportedArchitecture(ValueError):
    """A ModelConfig (or HF config) that no supported class represents exactly."""


def _llama_problems(cfg) -> list[tuple[str, str]]:
    """Returns (what is wrong, the fix) for exporting `cfg` as Llama; empty when exact."""
    out = []
    if cfg.position != "rope":
        out.append((f"ModelConfig.position={cfg.position!r}: {_POSITION_WHY[cfg.position]}", ROPE_GIN))
    if cfg.mlp != "swiglu":
        out.append((f"ModelConfig.mlp={cfg.mlp!r} (Llama's MLP is SwiGLU)",
                    "--gin_file=gin_configs/ablations/swiglu.gin"))
    if cfg.norm != "rmsnorm":
        out.append((f"ModelConfig.norm={cfg.norm!r} (Llama uses RMSNorm)",
                    "ModelConfig.norm='rmsnorm' (drop gin_configs/ablations/layernorm.gin)"))
    if cfg.block != "sequential":
        out.append((f"ModelConfig.block={cfg.block!r} (Llama's block is sequential)",
                    "ModelConfig.block='sequential' (drop gin_configs/ablations/parallel_block.gin)"))
    if cfg.use_bias:
        out.append(("ModelConfig.use_bias=True (Llama's RMSNorm has no shift)", "ModelConfig.use_bias=False"))
    return out


def _falcon_problems(cfg) -> list[tuple[str, str]]:
    """Returns (what is wrong, the fix) for exporting `cfg` as Falcon; empty when exact."""
    out = []
    if cfg.position != "rope":
        out.append((f"ModelConfig.position={cfg.position!r}: {_POSITION_WHY[cfg.position]}", ROPE_GIN))
    if cfg.norm != "layernorm":
        out.append((f"ModelConfig.norm={cfg.norm!r} (Falcon uses LayerNorm)",
                    "--gin_file=gin_configs/ablations/layernorm.gin"))
    if cfg.mlp != "gelu":
        out.append((f"ModelConfig.mlp={cfg.mlp!r} (Falcon's MLP is GELU)", "ModelConfig.mlp='gelu' (drop swiglu.gin)"))
    if cfg.num_heads * cfg.head_dim != cfg.d_model:
        out.append((f"num_heads * head_dim = {cfg.num_heads * cfg.head_dim} != d_model = {cfg.d_model} "
                    f"(Falcon derives head_dim from d_model)",
                    f"ModelConfig.head_dim={cfg.d_model // cfg.num_heads}" if cfg.d_model % cfg.num_heads == 0
                    else "a head count that divides d_model"))
    if cfg.block == "sequential" and cfg.kv_heads not in (1, cfg.num_heads):
        out.append((f"ModelConfig.num_kv_heads={cfg.num_kv_heads} with the sequential block (Falcon's "
                    f"sequential block has MHA or MQA only)", "--gin_file=gin_configs/ablations/parallel_block.gin"))
    if cfg.use_bias and not cfg.tie_embeddings:
        out.append(("ModelConfig.use_bias=True with untied embeddings (Falcon's lm_head has no bias)",
                    "ModelConfig.tie_embeddings=True"))
    return out


def architecture(cfg) -> str:
    """Returns LLAMA or FALCON, the class that represents `cfg` exactly.

    Raises UnsupportedArchitecture naming every offending switch and the closest exportable
    ablation (the class needing the fewest changes) — never an approximate mapping.
    """
    candidates = {LLAMA: _llama_problems(cfg), FALCON: _falcon_problems(cfg)}
    for arch, problems in candidates.items():
        if not problems:
            return arch
    arch, problems = min(candidates.items(), key=lambda kv: len(kv[1]))
    lines = "\n".join(f"  - {what}\n    fix: {fix}" for what, fix in problems)
    raise UnsupportedArchitecture(
        f"this model has no exact Hugging Face transformers class, so it is not exported (an approximate "
        f"export would silently change the logits). Closest exportable: {ARCHITECTURES[arch]}, after:\n{lines}\n"
        f"Retrain with those gin switches to get an exportable model (docs/interop.md lists what exports).")


def hf_config(cfg, arch: str, *, eos_id: int | None, start_id: int | None, pad_id: int | None = None, **_) -> dict:
    """Returns the config.json dict of `cfg` exported as `arch` (float32 weights).

    `start_id` (SEGMENT_START_ID) is exported as the BOS: our models read every document after it.
    `pad_id` is the tokenizer's pad token, the EOS (tokenizer_export.py says why not the start token).
    """
    common = dict(
        architectures=[ARCHITECTURES[arch]], vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_len, tie_word_embeddings=cfg.tie_embeddings,
        # No BOS piece in our tokenizer: documents are read after the segment-start token (<pad>, 0).
        # pad_token_id is the EOS, never the start token, which generate() would mask out of every prompt.
        bos_token_id=start_id, eos_token_id=eos_id, pad_token_id=pad_id, dtype="float32", torch_dtype="float32",
        # rope_theta for transformers 4.x, rope_parameters for 5.x.
        rope_theta=cfg.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        initializer_range=0.02, use_cache=True)
    if arch == LLAMA:
        return dict(common, model_type="llama", intermediate_size=cfg.ffw_dim, num_key_value_heads=cfg.kv_heads,
                    head_dim=cfg.head_dim, hidden_act="silu", rms_norm_eps=cfg.norm_eps,
                    attention_bias=False, mlp_bias=False, attention_dropout=0.0, pretraining_tp=1)
    parallel = cfg.block == "parallel"
    return dict(common, model_type="falcon", num_kv_heads=cfg.kv_heads, ffn_hidden_size=cfg.ffw_dim,
                activation="gelu_pytorch_tanh", layer_norm_epsilon=cfg.norm_eps, bias=cfg.use_bias,
                alibi=False, parallel_attn=parallel,
                # The parallel block uses the grouped layout (any kv head count) with one shared norm;
                # the sequential one the classic layout, MHA or MQA (multi_query).
                new_decoder_architecture=parallel, num_ln_in_parallel_attn=1 if parallel else None,
                multi_query=cfg.kv_heads == 1, hidden_dropout=0.0, attention_dropout=0.0)


# HF model_type values read as Llama on import, and what each needs to be exactly ours.
IMPORTABLE = ("llama", "mistral")


def model_config_from_hf(hf: dict) -> dict:
    """Returns the ModelConfig fields reproducing a Llama-family HF config.json (dict).

    Raises UnsupportedArchitecture for anything our model cannot compute exactly (biases, rope
    scaling, sliding windows, other activations).
    """
    mtype = hf.get("model_type")
    if mtype not in IMPORTABLE:
        raise UnsupportedArchitecture(f"config.json model_type={mtype!r}: import reads the Llama family "
                                      f"{IMPORTABLE}; export a supported model or convert it to Llama first")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    checks = [
        (hf.get("hidden_act", "silu") == "silu", f"hidden_act={hf.get('hidden_act')!r} (SwiGLU needs 'silu')"),
        (not hf.get("attention_bias", False), "attention_bias=true (our use_bias would also add MLP and norm biases)"),
        (not hf.get("mlp_bias", False), "mlp_bias=true"),
        (rope_type == "default", f"RoPE scaling {rope_type!r} (only plain RoPE is implemented)"),
        (hf.get("pretraining_tp", 1) == 1, f"pretraining_tp={hf.get('pretraining_tp')}"),
        (hf.get("sliding_window") is None or hf["sliding_window"] >= hf.get("max_position_embeddings", 0),
         f"sliding_window={hf.get('sliding_window')} (our attention is full causal)"),
    ]
    bad = [why for ok, why in checks if not ok]
    if bad:
        raise UnsupportedArchitecture("cannot import exactly: " + "; ".join(bad))
    heads = hf["num_attention_heads"]
    kv = hf.get("num_key_value_heads") or heads
    theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    return dict(
        num_layers=hf["num_hidden_layers"], d_model=hf["hidden_size"], num_heads=heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, num_kv_heads=0 if kv == heads else kv,
        d_ff=hf["intermediate_size"], vocab_size=hf["vocab_size"], max_len=hf.get("max_position_embeddings", 2048),
        norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)), position="rope", rope_theta=float(theta),
        mlp="swiglu", block="sequential", use_bias=False, tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One HF tensor and the parameter(s) of ours it is made of.

    `ours` are param paths: inside one layer when `per_layer` (the `{i}` in `hf` is the layer),
    else from the params root. `to_hf(*arrays)` maps one layer's arrays (our layout) to the HF
    array; `from_hf(array)` returns the tuple of our arrays back, bit for bit.
    """

    hf: str
    ours: tuple[tuple[str, ...], ...]
    per_layer: bool
    to_hf: Callable[..., np.ndarray]
    from_hf: Callable[[np.ndarray], tuple[np.ndarray, ...]]


def _linear(ours: Sequence[str], hf: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Tensor:
    """A dense kernel [*in, *out] <-> torch Linear weight [prod(out), prod(in)]."""
    n_in = int(np.prod(in_shape))
    return Tensor(hf, (tuple(ours),), True,
                  lambda a: a.reshape(n_in, -1).T,
                  lambda w: (w.T.reshape(*in_shape, *out_shape),))


def _same(ours: Sequence[str], hf: str, per_layer: bool = True) -> Tensor:
    return Tensor(hf, (tuple(ours),), per_layer, lambda a: a, lambda w: (w,))


def _vocab_rows(cfg, ours: Sequence[str], hf: str) -> Tensor:
    """The embedding [padded_vocab, d] <-> [vocab, d]: padding rows dropped / zero-filled."""
    v, pad = cfg.vocab_size, cfg.padded_vocab_size - cfg.vocab_size
    return Tensor(hf, (tuple(ours),), False, lambda a: a[:v],
                  lambda w: (np.pad(w, [(0, pad), (0, 0)]),))


def _vocab_cols(cfg, ours: Sequence[str], hf: str) -> Tensor:
    """The untied output kernel [d, padded_vocab] <-> lm_head [vocab, d]."""
    v, pad = cfg.vocab_size, cfg.padded_vocab_size - cfg.vocab_size
    return Tensor(hf, (tuple(ours),), False, lambda a: a[:, :v].T,
                  lambda w: (np.pad(w.T, [(0, 0), (0, pad)]),))


def _fused_qkv(cfg, kind: str, hf: str) -> Tensor:
    """Falcon's query_key_value: per kv head j, its `group` query heads, then key j, then value j.

    This grouped order is also Falcon's classic layout for MHA ([q, k, v] per head) and MQA
    (all queries, then the key, then the value), so one mapping serves every case.
    """
    d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    g = h // k
    lead = (d,) if kind == "kernel" else ()

    def to_hf(q, key, value):
        q = q.reshape(*lead, k, g, hd)
        fused = np.concatenate([q, key[..., None, :], value[..., None, :]], axis=-2)  # [*lead, k, g+2, hd]
        fused = fused.reshape(*lead, -1)
        return fused.T if kind == "kernel" else fused

    def from_hf(w):
        fused = (w.T if kind == "kernel" else w).reshape(*lead, k, g + 2, hd)
        return (fused[..., :g, :].reshape(*lead, h, hd), fused[..., g, :], fused[..., g + 1, :])

    paths = tuple(("attention", name, kind) for name in ("query", "key", "value"))
    return Tensor(hf, paths, True, to_hf, from_hf)


def tensors(cfg, arch: str) -> list[Tensor]:
    """Returns every HF tensor of `cfg` exported as `arch`, with its mapping from our params."""
    d, h, k, hd, f = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim, cfg.ffw_dim
    if arch == LLAMA:
        out = [
            _vocab_rows(cfg, ("embedder", "embedding"), "model.embed_tokens.weight"),
            _same(("attention_norm", "scale"), "model.layers.{i}.input_layernorm.weight"),
            _linear(("attention", "query", "kernel"), "model.layers.{i}.self_attn.q_proj.weight", (d,), (h, hd)),
            _linear(("attention", "key", "kernel"), "model.layers.{i}.self_attn.k_proj.weight", (d,), (k, hd)),
            _linear(("attention", "value", "kernel"), "model.layers.{i}.self_attn.v_proj.weight", (d,), (k, hd)),
            _linear(("attention", "out", "kernel"), "model.layers.{i}.self_attn.o_proj.weight", (h, hd), (d,)),
            _same(("mlp_norm", "scale"), "model.layers.{i}.post_attention_layernorm.weight"),
            _linear(("mlp", "wi_gate", "kernel"), "model.layers.{i}.mlp.gate_proj.weight", (d,), (f,)),
            _linear(("mlp", "wi", "kernel"), "model.layers.{i}.mlp.up_proj.weight", (d,), (f,)),
            _linear(("mlp", "wo", "kernel"), "model.layers.{i}.mlp.down_proj.weight", (f,), (d,)),
            _same(("final_norm", "scale"), "model.norm.weight", per_layer=False),
        ]
        if not cfg.tie_embeddings:
            out.append(_vocab_cols(cfg, ("logits_dense", "kernel"), "lm_head.weight"))
        return out

    p = "transformer.h.{i}."
    norms = [("norm", "input_layernorm")] if cfg.block == "parallel" else [
        ("attention_norm", "input_layernorm"), ("mlp_norm", "post_attention_layernorm")]
    out = [_vocab_rows(cfg, ("embedder", "embedding"), "transformer.word_embeddings.weight")]
    for ours, theirs in norms:
        out += [_same((ours, "scale"), p + theirs + ".weight"), _same((ours, "bias"), p + theirs + ".bias")]
    out += [
        _fused_qkv(cfg, "kernel", p + "self_attention.query_key_value.weight"),
        _linear(("attention", "out", "kernel"), p + "self_attention.dense.weight", (h, hd), (d,)),
        _linear(("mlp", "wi", "kernel"), p + "mlp.dense_h_to_4h.weight", (d,), (f,)),
        _linear(("mlp", "wo", "kernel"), p + "mlp.dense_4h_to_h.weight", (f,), (d,)),
    ]
    if cfg.use_bias:
        out += [
            _fused_qkv(cfg, "bias", p + "self_attention.query_key_value.bias"),
            _same(("attention", "out", "bias"), p + "self_attention.dense.bias"),
            _same(("mlp", "wi", "bias"), p + "mlp.dense_h_to_4h.bias"),
            _same(("mlp", "wo", "bias"), p + "mlp.dense_4h_to_h.bias"),
        ]
    out += [_same(("final_norm", "scale"), "transformer.ln_f.weight", per_layer=False),
            _same(("final_norm", "bias"), "transformer.ln_f.bias", per_layer=False)]
    if not cfg.tie_embeddings:
        out.append(_vocab_cols(cfg, ("logits_dense", "kernel"), "lm_head.weight"))
    return out


def unscanned_path(layer: int, path: Sequence[str]) -> tuple[str, ...]:
    """Returns the root path of a per-layer parameter in the unrolled layout (`scan_layers=False`)."""
    return (f"layers_{layer}", *path)


def get_path(tree: dict, path: Sequence[str]):
    """Returns tree[path[0]][path[1]]..., with a KeyError naming the whole path."""
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, dict) or key not in node:
            raise KeyError(f"parameter {'/'.join(path)} not found "
                           f"(missing {key!r} under {'/'.join(path[:i]) or 'root'})")
        node = node[key]
    return node


def covered_paths(cfg, arch: str) -> set[tuple[str, ...]]:
    """Returns the param paths the table reads (per-layer ones under `layers`), to check completeness."""
    return {("layers", *path) if t.per_layer else path for t in tensors(cfg, arch) for path in t.ours}
