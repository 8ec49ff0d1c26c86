"""`ModelConfig`: every architectural switch of the Gopher/Chinchilla family, set from gin.

The defaults describe Gopher's architecture (Rae et al. 2021, Table 1 and Section 3):
RMSNorm pre-norm, Transformer-XL relative positions, GELU MLP of width 4*d_model, tied
embeddings, no biases, a 32,000-token SentencePiece vocabulary and 2048-token context.
The sizes of each published model live in `gin_configs/models/*.gin`.
"""
from __future__ import annotations

import dataclasses

import gin

NORMS = ("rmsnorm", "layernorm")
POSITIONS = ("relative", "rope", "alibi", "learned")
MLPS = ("gelu", "swiglu")
BLOCKS = ("sequential", "parallel")
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attn_mlp_out")
DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = ("auto", "xla", "cpu_fused")
MATMUL_IMPLS = ("auto", "xla", "xla_f32acc", "cpu_gemm", "mkl")  # gopher_jax/kernels/matmul_impl.py


@gin.configurable
@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of one decoder-only transformer. Frozen: derive variants with `replace`."""

    # --- sizes (Gopher Table 1) ---
    num_layers: int = 8  # transformer blocks
    d_model: int = 512  # residual stream width
    num_heads: int = 16  # query heads
    head_dim: int = 32  # "key/value size" per head; num_heads * head_dim need not equal d_model
    num_kv_heads: int = 0  # key/value heads: 0 = num_heads (MHA), 1 = MQA, in between = GQA
    d_ff: int = 0  # MLP hidden width; 0 = 4 * d_model as in Gopher
    vocab_size: int = 32_000  # tokenizer vocabulary (the logits the user sees have this size)
    vocab_pad_multiple: int = 128  # embedding rows padded up to a multiple of this, for sharding
    max_len: int = 2048  # training context; the learned-position table size (others extrapolate)

    # --- architecture switches ---
    norm: str = "rmsnorm"  # "rmsnorm" (Gopher) | "layernorm"
    norm_eps: float = 1e-6  # added to the mean square / variance inside the norm
    position: str = "relative"  # "relative" (Transformer-XL) | "rope" | "alibi" | "learned"
    rope_theta: float = 10_000.0  # RoPE base wavelength
    mlp: str = "gelu"  # "gelu" | "swiglu" (gated: three d x d_ff matrices instead of two)
    block: str = "sequential"  # "sequential" | "parallel" (Falcon/PaLM: attn and MLP from one norm)
    use_bias: bool = False  # biases on every dense layer and norm
    tie_embeddings: bool = True  # one V x d matrix for input embedding and output logits

    # --- initialisation ---
    init_std: float = 0.0  # std of dense kernels; 0 = 1/sqrt(fan_in)
    embed_init_std: float = 0.0  # std of the embedding table; 0 = 1/sqrt(d_model)
    scale_output_init: bool = True  # divide residual-branch output kernels' std by sqrt(2 * layers)

    # --- compilation and numerics ---
    scan_layers: bool = True  # jax.lax.scan over layers: compile time independent of depth
    # Layers per scan iteration (lax.scan's unroll; >= num_layers unrolls fully). The parameter
    # layout stays stacked either way; unrolling trades compile time for skipping the loop's
    # stacked-residual buffers (zero-filled, then written a layer at a time).
    scan_unroll: int = 1
    remat_policy: str = "none"  # "none" | "full" | "dots" | "dots_no_batch" | "save_attn_mlp_out"
    # "xla": attention from jnp ops (what TPUs/GPUs compile well); "cpu_fused": the flash-style C++
    # kernel of gopher_jax/kernels (CPU only; compiled on first use); "auto": cpu_fused on a
    # one-device CPU mesh when the kernel builds, else xla. Same numerics to fp32 rounding.
    attention_impl: str = "auto"
    # GEMM of every Dense layer and the output head (forward, dx, dW): "xla" (XLA's dot in `dtype`,
    # what TPUs/GPUs compile well); "xla_f32acc" (XLA's dot with fp32 accumulation: on XLA:CPU the
    # bf16 x bf16 -> fp32 dot runs on the bf16 units); "cpu_gemm" (the C++ kernel of
    # gopher_jax/kernels, one-device CPU only); "mkl" (the same through Intel oneMKL, one-device CPU,
    # needs the optional `mkl` wheel: the `cpu` extra); "auto": per GEMM shape, the fastest of these measured
    # on this host (cached per host, printed at start-up) on a one-device CPU, else "xla".
    matmul_impl: str = "auto"
    dtype: str = "float32"  # activation / matmul dtype ("bfloat16" for mixed precision)
    param_dtype: str = "float32"  # parameter storage dtype

    def __post_init__(self):
        _check_choice("norm", self.norm, NORMS)
        _check_choice("position", self.position, POSITIONS)
        _check_choice("mlp", self.mlp, MLPS)
        _check_choice("block", self.block, BLOCKS)
        _check_choice("remat_policy", self.remat_policy, REMAT_POLICIES)
        _check_choice("attention_impl", self.attention_impl, ATTENTION_IMPLS)
        _check_choice("matmul_impl", self.matmul_impl, MATMUL_IMPLS)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("param_dtype", self.param_dtype, DTYPES)
        for name in ("num_layers", "d_model", "num_heads", "head_dim", "vocab_size", "max_len",
                     "vocab_pad_multiple", "scan_unroll"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ModelConfig.{name}={getattr(self, name)} must be positive")
        kv = self.kv_heads
        if kv <= 0 or self.num_heads % kv:
            raise ValueError(
                f"ModelConfig.num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads} "
                f"(use 0 for multi-head, 1 for multi-query, or a divisor such as "
                f"{[d for d in range(1, self.num_heads + 1) if self.num_heads % d == 0]})")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim={self.head_dim} must be even for position='rope'")

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads actually used."""
        return self.num_kv_heads or self.num_heads

    @property
    def ffw_dim(self) -> int:
        """MLP hidden width actually used."""
        return self.d_ff or 4 * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding table: vocab_size rounded up to vocab_pad_multiple."""
        m = self.vocab_pad_multiple
        return -(-self.vocab_size // m) * m

    def replace(self, **changes) -> "ModelConfig":
        """Returns a copy with the given fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"ModelConfig.{field}={value!r} is not one of {choices}")
