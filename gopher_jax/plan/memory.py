"""Analytic bytes per device of a train step: state by its real shardings, activations by remat policy.

State (params, fp32 master, Adam moments) is measured exactly: the trainer's abstract state
(`jax.eval_shape`) and its `state_shardings` on an `AbstractMesh` of the topology's size, summed
shard by shard. Gradients and activations are modelled (nothing is allocated):
  * gradients: the step's fp32 gradients, sharded like the params (GSPMD reduce-scatters), plus the
    param-dtype gradients they are cast from, plus an fp32 accumulator when microbatches > 1;
  * FSDP-gathered weights: inside the layer scan one layer's weights are all-gathered over `fsdp`
    (split only by `tensor`), with their gradients before the reduce-scatter (bf16 + fp32);
  * activations: what the backward pass keeps per layer under the remat policy, plus one layer's
    full working set while it is recomputed, plus fp32 logits. Pipelined (stages > 1,
    gopher_jax/parallel/pipeline/executor.py): each device stashes only stage inputs between a
    microbatch's forward and backward, keeps the remat policy's tensors for one microbatch through one
    stage per residual set (R -> V / I) and, per weight-gradient set (zero-bubble, I -> W), every
    distinct Dense input and every Dense output cotangent; all three counted from the program the
    trainer runs (the executor's own buffer allocation: GPipe all microbatches, 1F1B <= stages (hoisted)
    or <= 2 stages - 1 (paired), circular repeats x microbatches, zero-bubble the weight-gradient sets it
    keeps across slots, once: what XLA:TPU keeps, `pipeline_buffers`). The residual set follows the
    remat policy the stages run (pipeline.zero_bubble_remat: 'none' keeps every activation of the stage).
MT-NLG's check: mixed-precision Adam state = 20 bytes/param (bf16 weights + grads 2+2, fp32 master
4, fp32 grads 4, moments 8 here), reported as `state_bytes_per_param`.
"""
from __future__ import annotations

import math

import jax
from jax.sharding import AbstractMesh

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MESH_AXES
from gopher_jax.parallel.rules import logical_to_spec
from gopher_jax.train.config import OptimizerConfig, TrainConfig

MTNLG_BYTES_PER_PARAM = 20  # MT-NLG (Smith et al. 2022) §2: mixed-precision Adam


def _axes_size(logical: str, rules, sizes: dict[str, int]) -> int:
    entry = logical_to_spec((logical,), rules)[0]
    names = entry if isinstance(entry, tuple) else (entry,) if entry else ()
    return math.prod(sizes[n] for n in names)


def state_bytes(model: ModelConfig, opt: OptimizerConfig, train: TrainConfig, rules, sizes) -> dict:
    """Returns per-device bytes of params, master, optimizer state, and local/global param counts."""
    from gopher_jax.train.optimizer import make_optimizer
    from gopher_jax.train.state import abstract_params, make_init_fn, state_shardings

    mesh = AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES)
    boxed = abstract_params(model, train.seq_len)
    tx = make_optimizer(opt, train.steps, boxed)
    abstract = jax.eval_shape(make_init_fn(model, tx, train.seq_len), jax.random.key(0))
    sh = state_shardings(abstract, boxed, tx, mesh, rules)

    def local_bytes(tree, shardings):
        leaves = jax.tree.leaves(tree)
        shs = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))
        return sum(math.prod(s.shard_shape(a.shape)) * a.dtype.itemsize for a, s in zip(leaves, shs))

    params = local_bytes(abstract.params, sh.params)
    p_item = jax.tree.leaves(abstract.params)[0].dtype.itemsize
    return {
        "params": params,
        "master": local_bytes(abstract.master, sh.master) if abstract.master is not None else 0,
        "optimizer": local_bytes(abstract.opt_state, sh.opt_state),
        "local_params": params // p_item,
        "global_params": sum(a.size for a in jax.tree.leaves(abstract.params)),
        "param_itemsize": p_item,
    }


def _per_token_elements(model: ModelConfig, seq_len: int, t: int) -> dict[str, float]:
    """Elements one layer holds per token for backward, by tensor kind (t = tensor-parallel degree)."""
    h, a, s = model.d_model, model.num_heads, seq_len
    hk, kvk, f = a * model.head_dim, model.kv_heads * model.head_dim, model.ffw_dim
    scores = a * s / t * (2 if model.position == "relative" else 1)  # content (+ position) logits
    return {
        "layer_input": h,
        "norm_outputs": 2 * h,
        "qkv": (hk + 2 * kvk) / t,
        "scores": scores,
        "probs": a * s / t,
        "context": hk / t,
        "attn_out": h,
        "mlp_hidden": (2 if model.mlp == "swiglu" else 1) * f / t,
        "mlp_activation": f / t,
        "mlp_out": h,
    }


# what each remat policy keeps per layer (ModelConfig.remat_policy; gopher_jax/model/remat.py)
_KEPT = {
    "none": None,  # everything
    "full": ("layer_input",),
    "dots": ("layer_input", "qkv", "scores", "context", "attn_out", "mlp_hidden", "mlp_out"),
    "dots_no_batch": ("layer_input", "qkv", "attn_out", "mlp_hidden", "mlp_out"),
    "save_attn_mlp_out": ("layer_input", "attn_out", "mlp_out"),
}


def pipeline_buffers(schedule) -> dict:
    """Buffers the executor allocates for a schedule's program (executor.compile_program's interval
    colouring): stage inputs, residual sets (R -> V / I) and weight-gradient sets (R -> W) on the busiest
    device."""
    from gopher_jax.parallel.pipeline.executor import compile_program
    prog = compile_program(schedule)
    # Weight-gradient sets live at the peak on TPU: the sets kept across slots, once (at least one when the
    # program runs a split backward). Measured: the 280B recipe's zero_bubble (K = 1) compiled for 4xv3:32x32
    # needs 13.22 GiB with its stages under 'dots_no_batch' (one set: 13.5 predicted) and its temporaries
    # alone 21.69 GiB under 'none' (one set: 19.1); XLA:CPU's count (Program.wg_live = 2 K' + M: the copies
    # a slot's write makes, the sets a slot materialises) predicted 25.3 and 31.4 GiB.
    live = max(prog.wg_slots, 1) if prog.wg_in_slot else 0
    return {"stage_inputs": prog.act_slots, "residual_sets": prog.res_slots, "weight_grad_sets": prog.wg_slots,
            "weight_grad_sets_live": live}


def _wgrad_elements(model: ModelConfig, t: int) -> float:
    """Elements per token and layer of a zero-bubble weight-gradient set (deferred_wgrad.py): every distinct
    Dense input (query, key and value read one; wi and wi_gate one; a parallel block's attention and MLP
    one) and every Dense output cotangent; t = tensor-parallel degree."""
    h, hk, kvk, f = model.d_model, model.num_heads * model.head_dim, model.kv_heads * model.head_dim, model.ffw_dim
    mult = 2 if model.mlp == "swiglu" else 1
    inputs = (h if model.block == "parallel" else 2 * h) + hk / t + f / t  # attention | out | MLP | wo
    cotangents = (hk + 2 * kvk) / t + h + mult * f / t + h
    return inputs + cotangents


def activation_bytes(model: ModelConfig, train: TrainConfig, rules, sizes, pipeline=None, schedule=None) -> dict:
    """Returns per-device activation bytes: kept per layer, one recomputed layer, logits, and in-flight count."""
    batch_shards = _axes_size(axes.BATCH, rules, sizes)
    t = _axes_size(axes.HEADS, rules, sizes)
    t_vocab = _axes_size(axes.VOCAB, rules, sizes)
    stages = sizes["pipeline"]
    schedule_name, repeats, pipe_mb = "1f1b", 1, train.microbatches
    if pipeline is not None and stages > 1:  # the remat policy the stages run (pipeline.zero_bubble_remat)
        from gopher_jax.parallel.pipeline.config import stage_model
        model = stage_model(model, pipeline)
    if pipeline is not None:
        schedule_name = pipeline.schedule
        repeats = pipeline.repeats if schedule_name in ("circular", "interleaved_1f1b") else 1
        pipe_mb = pipeline.microbatches or train.microbatches
    mb_rows = train.batch_size / train.microbatches
    local_rows = math.ceil(mb_rows / batch_shards)  # a batch the mesh does not divide pads up
    tokens = local_rows * train.seq_len
    item = 2 if model.dtype == "bfloat16" else 4
    per_tok = _per_token_elements(model, train.seq_len, t)
    kept = _KEPT[model.remat_policy]
    kept_elems = sum(per_tok.values()) if kept is None else sum(per_tok[k] for k in kept)
    residual_sets, wgrad_sets = 1, 0
    if stages == 1:
        in_flight = 1
        kept_b = kept_elems * item * tokens * model.num_layers
    else:  # stashed stage inputs + the residual and weight-gradient sets the program keeps
        if schedule is None:
            from gopher_jax.parallel.pipeline import cost
            from gopher_jax.parallel.pipeline.schedule import make_schedule
            schedule = make_schedule(schedule_name, stages, pipe_mb, repeats, cost.analytic_costs(model.remat_policy),
                                     pipeline.max_pending_weight_grads if pipeline is not None else 1)
        buffers = pipeline_buffers(schedule)
        in_flight = buffers["stage_inputs"]
        # a fused B (R + V in one slot) holds its residual set inside the slot: one set all the same
        residual_sets, wgrad_sets = max(buffers["residual_sets"], 1), buffers["weight_grad_sets_live"]
        layers_here = math.ceil(model.num_layers / (stages * repeats))
        kept_b = (residual_sets * kept_elems * item * tokens * layers_here + in_flight * model.d_model * item * tokens
                  + wgrad_sets * _wgrad_elements(model, t) * item * tokens * layers_here)
    working = 0 if kept is None else sum(per_tok.values()) * item * tokens  # the layer being recomputed
    logits = 2 * 4 * tokens * model.padded_vocab_size / t_vocab  # fp32 logits and their gradient
    return {"kept": int(kept_b), "recompute_working_set": int(working), "logits": int(logits),
            "residual_sets": residual_sets, "weight_grad_sets": wgrad_sets,
            "local_sequences_per_microbatch": local_rows, "microbatches_in_flight": in_flight,
            "batch_shards": batch_shards, "tensor_parallel": t}


def bytes_per_device(model: ModelConfig, opt: OptimizerConfig, train: TrainConfig, rules, sizes,
                     pipeline=None, schedule=None) -> dict:
    """Returns {"total": bytes, "breakdown": {...}, "state_bytes_per_param": float, ...} for one device."""
    st = state_bytes(model, opt, train, rules, sizes)
    local = st["local_params"]
    grads = local * 4 + local * st["param_itemsize"] * (st["param_itemsize"] != 4)
    if train.microbatches > 1:
        grads += local * 4  # the scan's fp32 accumulator next to one microbatch's gradients
    act = activation_bytes(model, train, rules, sizes, pipeline, schedule)
    gathered = 0
    if _axes_size(axes.EMBED, rules, sizes) > 1:
        layer_params = (st["global_params"] - model.padded_vocab_size * model.d_model) / model.num_layers
        per_device = layer_params / act["tensor_parallel"]
        gathered = per_device * (2 * st["param_itemsize"] + 4 * (st["param_itemsize"] != 4))
    breakdown = {"params": st["params"], "master": st["master"], "optimizer": st["optimizer"], "gradients": grads,
                 "gathered_layer": gathered,
                 "activations": act["kept"] + act["recompute_working_set"], "logits": act["logits"]}
    state = st["params"] + st["master"] + st["optimizer"] + grads
    return {"total": int(sum(breakdown.values())), "breakdown": {k: int(v) for k, v in breakdown.items()},
            "state_bytes_per_param": state / max(local, 1), "mtnlg_bytes_per_param": MTNLG_BYTES_PER_PARAM,
            "local_params": local, "global_params": st["global_params"], "activation_detail": act}
