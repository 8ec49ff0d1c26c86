"""Zero-bubble's split backward: the input gradient now (I), the matmul weight gradients later (W).

ZB-H1 (Qi et al. 2023) fills the pipeline bubble with weight-gradient work that nothing downstream
waits for. That only pays if W does not redo I's work. Differentiating the stage twice (once for dx,
once for dW) does: every layer's dW needs the cotangent at that layer's output, i.e. the whole dx
chain again. The split here is per matmul, as in the paper:

  R  forward; keeps the residuals of the pullback w.r.t. (stage input, non-kernel parameters, the zero
     probes of stage.py: a perturbation on every `Dense` output and a tap on every distinct Dense input)
     -- with remat 'full' just the layer inputs, as for an unsplit backward
  I  that pullback: dx (sent upstream), the small parameters' gradients (norm scales, biases, the
     relative-position projection, embedding and head on the first/last stage), and per Dense its
     output cotangent dy (the perturbation's cotangent) and its input x (the tap's), which with remat
     it has just recomputed. x and dy are the *weight-gradient set* W reads: born at I, dead after W.
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


def _at(tree: dict, path: tuple):
    for key in path:
        tree = tree[key]
    return tree


def weight_grads(taps: dict, cotangents: dict, layers: dict, aliases=(), unroll: int = 1, part=None) -> dict:
    """dW = x^T dy per Dense kernel, layer by layer over the stage's layer axis.

    `taps` / `cotangents` are the stage's WGRAD_TAPS / WGRAD_COTANGENTS trees (stage.py; rooted at the
    stage module: {"layers": {...}}; per Dense {"x": [L, ..., *in]} / {"dy": [L, ..., out]}), or callables
    (layer -> that layer's tree, how the executor reads them out of its buffers one layer at a time, so no
    whole set is ever copied); `aliases` the (Dense path, path of the Dense whose tap holds its input)
    pairs of `stage.split_shapes`; `layers` the stage's parameter slice. Returns a tree of layers'
    structure: kernel gradients in the kernels' shapes and dtypes (fp32 accumulation), None for every
    other parameter (I computed those). `unroll`: of the scan over layers (ModelConfig.scan_unroll).
    `part` = (index, parts): only the index-th of `parts` equal groups of layers (zero elsewhere); index
    may be traced."""
    source = dict(aliases)
    num = jax.tree.leaves(layers)[0].shape[0]
    index = lambda tree: lambda l: jax.tree.map(  # noqa: E731
        lambda a: jax.lax.dynamic_index_in_dim(a, l, 0, keepdims=False), tree)
    taps_at = taps if callable(taps) else index(taps)
    cots_at = cotangents if callable(cotangents) else index(cotangents)
    kernels = []  # (path, kernel shape) of every Dense, in the order of the scan's outputs

    def find(dy, params, path):
        if "dy" in dy:
            kernels.append((path, params[KERNEL].shape))
            return
        for name, sub in params.items():
            if name in dy:
                find(dy[name], sub, path + (name,))

    find(jax.eval_shape(cots_at, 0)["layers"], layers, ("layers",))

    def one_layer(_, l):
        x_tree, dy_tree = taps_at(l), cots_at(l)
        out = []
        for path, _shape in kernels:
            dy = _at(dy_tree, path)["dy"]
            x = _at(x_tree, source.get(path, path))["x"]
            x = x.reshape(*dy.shape[:-1], -1)  # [..., *in] -> [..., n_in], as the Dense flattens it
            out.append(jnp.einsum("...i,...o->io", x, dy, preferred_element_type=jnp.float32))
        return None, out

    index, parts = part if part is not None else (0, 1)
    group = num // parts
    _, grads = jax.lax.scan(one_layer, None, index * group + jnp.arange(group), unroll=unroll)
    by_path = {}
    for (path, shape), g in zip(kernels, grads):
        g = g.reshape(group, *shape[1:])
        by_path[path] = g if parts == 1 else jax.lax.dynamic_update_slice_in_dim(
            jnp.zeros(shape, g.dtype), g, index * group, 0)

    def build(params, path):
        if path in by_path:
            return {name: by_path[path] if name == KERNEL else None for name in params}
        return {name: build(sub, path + (name,)) if isinstance(sub, dict) else None for name, sub in params.items()}

    return build(layers, ("layers",))
