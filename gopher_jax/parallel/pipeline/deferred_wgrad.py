"""Zero-bubble's split backward: the input gradient now (I), the matmul weight gradients later (W).

ZB-H1 (Qi et al. 2023) fills the pipeline bubble with weight-gradient work that nothing downstream
waits for. That only pays if W does not redo I's work. Differentiating the stage twice (once for dx,
once for dW) does: every layer's dW needs the cotangent at that layer's output, i.e. the whole dx
chain again. The split here is per matmul, as in the paper:

  R  forward; keeps the residuals of the pullback w.r.t. (stage input, non-kernel parameters) and,
     for every `Dense`, its matmul input x (flax collection WGRAD_INPUTS, model/dense.py)
  I  that pullback: dx (sent upstream), the small parameters' gradients (norm scales, biases, the
     relative-position projection, embedding and head on the first/last stage), and every Dense's
     output cotangent dy, read off a zero perturbation added to its output (WGRAD_COTANGENTS)
  W  dW = x^T dy for every Dense kernel: one matmul per kernel, no chain, ~a third of the backward

Dense kernels are ~all of a layer's weight-gradient FLOPs (12 d^2 of 12 d^2 + O(d) per token); the
head and embedding matmuls stay in I (they are on the first/last stage only, <1% of 280B's stage).
`tests/parallel/test_pipeline_step.py` checks that R + I + W give the unpipelined gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

KERNEL = "kernel"  # the parameter name of model/dense.py's Dense kernel


def _is_kernel(path) -> bool:
    return getattr(path[-1], "key", None) == KERNEL


def split_kernels(layers):
    """layers -> (kernels, rest): two trees of layers' structure with None where the other one has a leaf."""
    kernels = jax.tree_util.tree_map_with_path(lambda p, a: a if _is_kernel(p) else None, layers)
    rest = jax.tree_util.tree_map_with_path(lambda p, a: None if _is_kernel(p) else a, layers)
    return kernels, rest


def merge_kernels(kernels, rest):
    """The inverse of split_kernels."""
    return jax.tree.map(lambda k, r: k if r is None else r, kernels, rest, is_leaf=lambda a: a is None)


def weight_grads(inputs: dict, cotangents: dict, layers: dict) -> dict:
    """dW = x^T dy per Dense kernel, over the scanned layer axis.

    `inputs` / `cotangents` are the WGRAD_INPUTS / WGRAD_COTANGENTS trees of the stage's scan
    (per Dense: {"x": [L, ..., n_in]} / {"dy": [L, ..., n_out]}); `layers` is the stage's parameter
    slice. Returns a tree of layers' structure: kernel gradients in the kernels' shapes and dtypes
    (fp32 accumulation), None for every other parameter (I computed those)."""
    def walk(x, dy, params):
        if "x" in x:
            kernel = params[KERNEL]
            g = jnp.einsum("l...i,l...o->lio", x["x"], dy["dy"], preferred_element_type=jnp.float32)
            out = {name: None for name in params}
            out[KERNEL] = g.reshape(kernel.shape)
            return out
        return {name: (walk(x[name], dy[name], sub) if name in x else jax.tree.map(lambda _: None, sub))
                for name, sub in params.items()}

    return walk(inputs, cotangents, layers)
