"""Dense projections with logical axis names, shared by attention, MLP and the output layer.

Our own small module rather than nn.DenseGeneral: DenseGeneral initialises a flattened kernel
and reshapes it, which clashes with logical-axis constraints under a mesh; here the kernel is
created in its real shape and fan-in is computed over the contracted axes.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gopher_jax.model.config import ModelConfig

# Flax collections of the zero-bubble pipeline's split backward (parallel/pipeline/deferred_wgrad.py):
# every Dense stores its matmul input in WGRAD_INPUTS and exposes its output cotangent through a
# perturbation in WGRAD_COTANGENTS. Both are absent in ordinary training, where they cost nothing.
WGRAD_INPUTS = "wgrad_inputs"
WGRAD_COTANGENTS = "wgrad_cotangents"


def kernel_init(config: ModelConfig, names: Sequence[str], *, in_axes: Sequence[int] = (0,),
                residual_output: bool = False):
    """Returns a boxed initializer: std = init_std or 1/sqrt(fan_in), shrunk for residual outputs."""
    scale = 1.0
    if residual_output and config.scale_output_init:
        scale = 1.0 / (2.0 * config.num_layers)  # GPT-2/Megatron: keeps the residual stream's variance flat
    if config.init_std:
        init = nn.initializers.normal(config.init_std * math.sqrt(scale))
    else:
        in_axes = tuple(in_axes)
        out_axes = tuple(i for i in range(len(names)) if i not in in_axes)
        init = nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal",
                                                in_axis=in_axes, out_axis=out_axes)
    return nn.with_logical_partitioning(init, tuple(names))


def _impl_dot(a, b, impl, **kw):
    from gopher_jax.kernels.matmul_impl import dot
    return dot(a, b, impl=impl, **kw)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul(x, w, impl="xla", out_dtype=None):
    """Returns x @ w for x [..., n] and w [n, m] with the GEMM `impl` (kernels/matmul_impl.py).

    w may be wider than x (fp32 master weights under ModelConfig.dtype="bfloat16"): it is
    multiplied in x's dtype and its gradient comes back in w's dtype, which the non-"xla" impls
    write straight from their fp32 sums. The result is in `out_dtype` (a dtype name; default x's).

    Autodiff of a dot leaves it to XLA which operand of the weight gradient x^T @ dy to
    transpose, and on CPU it transposes the large activation gradient dy (a full memory pass of
    [tokens, out] per layer, ~40% of the MLP's time at the gopher_44m shape). Here the backward
    transposes x, which for every projection but the output is the smaller operand, and the
    weight gradient comes out in the kernel's own layout. With impl="xla" numerically identical
    to `(x @ w.astype(x.dtype)).astype(out_dtype)`; the other impls accumulate in fp32 and round
    once to the output dtype.
    """
    return _matmul_fwd(x, w, impl, out_dtype)[0]


def _matmul_fwd(x, w, impl, out_dtype):
    wc, out = w.astype(x.dtype), jnp.dtype(out_dtype or x.dtype)
    res = (x, wc, jnp.zeros((0,), w.dtype))  # the empty array carries w's dtype to the backward
    if impl == "xla":
        return jnp.dot(x, wc).astype(out), res
    y = _impl_dot(x.reshape(-1, x.shape[-1]), wc, impl, out_dtype=out)
    return y.reshape(*x.shape[:-1], w.shape[-1]), res


def _matmul_bwd(impl, out_dtype, res, dy):
    x, w, w_dtype = res
    dy = dy.astype(x.dtype)
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    if impl == "xla":
        dw = jnp.dot(x2.T, dy2)
        dx = jnp.dot(dy, w.T)
    else:
        dw = _impl_dot(x2, dy2, impl, trans_a=True, out_dtype=w_dtype.dtype)
        dx = _impl_dot(dy2, w, impl, trans_b=True).reshape(x.shape)
    return dx.astype(x.dtype), dw.astype(w_dtype.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def matmul_transposed(x, w, impl="xla", out_dtype=None):
    """Returns x @ w.T for x [..., n] and w [m, n] (tied-embedding logits against the [vocab, d] table).

    Dtypes as `matmul` (the output head asks for fp32 logits: with the non-"xla" impls they are
    the fp32 sums, never rounded to bf16). The backward computes the table gradient as
    (x^T @ dy)^T (impl="xla": it transposes the small activation and the [d, vocab] result
    instead of the [tokens, vocab] logit gradient) or, with the other impls, as dy^T @ x with the
    transpose folded into the GEMM.
    """
    return _matmul_transposed_fwd(x, w, impl, out_dtype)[0]


def _matmul_transposed_fwd(x, w, impl, out_dtype):
    wc, out = w.astype(x.dtype), jnp.dtype(out_dtype or x.dtype)
    res = (x, wc, jnp.zeros((0,), w.dtype))
    if impl == "xla":
        return jnp.dot(x, wc.T).astype(out), res
    y = _impl_dot(x.reshape(-1, x.shape[-1]), wc, impl, trans_b=True, out_dtype=out)
    return y.reshape(*x.shape[:-1], w.shape[0]), res


def _matmul_transposed_bwd(impl, out_dtype, res, dy):
    x, w, w_dtype = res
    dy = dy.astype(x.dtype)
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1])
    if impl == "xla":
        dw = jnp.dot(x2.T, dy2).T
        dx = jnp.dot(dy, w)
    else:
        dw = _impl_dot(dy2, x2, impl, trans_a=True, out_dtype=w_dtype.dtype)
        dx = _impl_dot(dy2, w, impl).reshape(x.shape)
    return dx.astype(x.dtype), dw.astype(w_dtype.dtype)


matmul_transposed.defvjp(_matmul_transposed_fwd, _matmul_transposed_bwd)


def matmul_impl_for(config: ModelConfig, dtype, rows: int, n_in: int, n_out: int, *,
                    transposed_w: bool = False) -> str:
    """Returns the concrete GEMM for a [rows, n_in] @ [n_in, n_out] matmul under `config.matmul_impl`."""
    from gopher_jax.kernels import matmul_impl
    if config.matmul_impl == "auto":
        return matmul_impl.choose(dtype, rows, n_in, n_out, transposed_b=transposed_w)
    matmul_impl.check_explicit(config.matmul_impl)
    return config.matmul_impl


class Dense(nn.Module):
    """Contracts the last `num_in` axes of x with a kernel [*in_dims, *features] named `names`."""

    config: ModelConfig
    features: tuple[int, ...]
    names: tuple[str, ...]
    num_in: int = 1
    residual_output: bool = False

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        in_dims = x.shape[-self.num_in:]
        kernel = self.param(
            "kernel",
            kernel_init(cfg, self.names, in_axes=range(self.num_in), residual_output=self.residual_output),
            (*in_dims, *self.features), jnp.dtype(cfg.param_dtype))
        dtype = jnp.dtype(cfg.dtype)
        lead, n_in = x.shape[:-self.num_in], math.prod(in_dims)
        x2 = x.astype(dtype).reshape(*lead, n_in)
        split = not self.is_initializing()  # (init makes every collection mutable: create params only)
        if split and self.is_mutable_collection(WGRAD_INPUTS):  # zero-bubble: keep x for the deferred dW
            self.put_variable(WGRAD_INPUTS, "x", x2)
        w = kernel.reshape(n_in, -1)  # param dtype: matmul multiplies in `dtype`, dW comes back in w's
        # Initialisation only needs shapes: no GEMM probe for its (often smaller) batch.
        impl = matmul_impl_for(cfg, dtype, math.prod(lead), n_in, w.shape[1]) if split else "xla"
        y = matmul(x2, w, impl)
        if split:
            # A zero added to the output when the pipeline passes this collection; its gradient is dy,
            # which the weight-gradient pass turns into dW = x^T dy (pipeline/deferred_wgrad.py).
            y = self.perturb("dy", y, collection=WGRAD_COTANGENTS)
        y = y.reshape(*lead, *self.features)
        if cfg.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, self.names[self.num_in:]),
                              self.features, jnp.dtype(cfg.param_dtype))
            y = y + bias.astype(dtype)
        return y


def dense(config: ModelConfig, features, names: Sequence[str], *, axis=-1, residual_output=False,
          name: str | None = None) -> Dense:
    """Returns a Dense over input `axis` (an int or a tuple of trailing axes) to `features`."""
    features = tuple(features) if isinstance(features, tuple) else (features,)
    num_in = len(axis) if isinstance(axis, tuple) else 1
    return Dense(config, features, tuple(names), num_in=num_in, residual_output=residual_output, name=name)
