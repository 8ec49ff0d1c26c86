"""Runs a schedule table (schedule.py) on the `pipeline` mesh axis: jit + shard_map + ppermute.

Inside `jax.shard_map(..., axis_names={'pipeline'})` each pipeline device holds its stages' layers
(`[repeats, layers_per_stage, ...]`); `data`, `fsdp` and `tensor` stay automatic (GSPMD), so tensor
parallelism works inside a stage and data/fsdp outside it unchanged. A `lax.scan` walks the table's
time slots; in each slot every device runs the op its column names, chosen with `lax.switch`:

  idle | F (stage; virtual stage 0 embeds first) | B (the same, backward) | B last (stage + head + loss)

then hands its forward output to the next device and its input gradient to the previous one with
two `lax.ppermute`s around the ring (device d -> d+1 for activations, d -> d-1 for gradients).

Backward slots recompute the stage's forward from its stashed input (`jax.vjp` in the slot), so a
device keeps only stage *inputs* between a microbatch's F and B: that stash is what the schedule
bounds (GPipe: all microbatches; 1F1B: at most `stages`; circular: repeats x microbatches). Inside the
recomputation the model's own remat policy applies. Buffer slots are assigned by interval colouring
of the table (`_allocate`), so buffer sizes follow the schedule exactly.

Embedding and head live in the first and last virtual stage (computed per microbatch), so nothing of
size [global batch, length, d_model] is ever materialised; their parameters ("outer") are replicated
over `pipeline` and their gradients summed over it at the end (psum).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.pipeline import stage as parts
from gopher_jax.parallel.pipeline.schedule import BWD, FWD, Schedule
from gopher_jax.train.loss import cross_entropy

AXIS = "pipeline"
# lax.switch branch indices (one forward and one backward branch serve first and middle stages:
# fewer branches compile faster; the stage input is the embedding where the `first` flag is set)
IDLE, F, B, B_LAST = range(4)
ACT = (None, axes.BATCH, axes.LENGTH, axes.EMBED)  # buffers: [slot, rows, length, d_model]


@dataclasses.dataclass(frozen=True)
class Program:
    """Per-slot, per-device integer tables ([slots, stages]) that drive the executor, and buffer sizes."""

    branch: np.ndarray
    first: np.ndarray  # 1 where the op is on virtual stage 0 (its input is the embedded microbatch)
    microbatch: np.ndarray
    repeat: np.ndarray
    act_key: np.ndarray  # activation-buffer slot read by F / B / B last (not on virtual stage 0)
    grad_key: np.ndarray  # gradient-buffer slot read by B (the gradient w.r.t. this stage's output)
    recv_act: np.ndarray  # after the slot: write the activation received from d-1 here (-1 = nothing)
    recv_grad: np.ndarray  # after the slot: write the gradient received from d+1 here (-1 = nothing)
    act_slots: int
    grad_slots: int


def _allocate(intervals: dict, stages: int, device_of) -> tuple[dict, int]:
    """Interval colouring: keys live from the end of their write slot to their read slot (inclusive).

    Returns ({key: buffer slot}, slots needed on the busiest device). A slot read in slot t may be
    rewritten at the end of slot t (reads happen before the end-of-slot writes)."""
    assign, need = {}, 1
    for d in range(stages):
        mine = sorted((w, r, k) for k, (w, r) in intervals.items() if device_of(k) == d)
        free, busy = [], []  # busy: (read slot, buffer slot)
        top = 0
        for w, r, k in mine:
            for item in sorted(busy):
                if item[0] <= w:
                    busy.remove(item)
                    free.append(item[1])
            if free:
                free.sort()
                s = free.pop(0)
            else:
                s, top = top, top + 1
            assign[k] = s
            busy.append((r, s))
        need = max(need, top)
    return assign, need


def compile_program(schedule: Schedule) -> Program:
    """Turns a schedule table into the executor's integer tables (pure numpy, static)."""
    pp, v_total, t_total = schedule.stages, schedule.virtual_stages, schedule.num_slots
    fwd_at, bwd_at = {}, {}
    for t, row in enumerate(schedule.slots):
        for op in row:
            if op is not None:
                (fwd_at if op.kind == FWD else bwd_at)[(op.microbatch, op.stage)] = t
    # activation of (i, v), v >= 1: written after F(i, v-1), last read by B(i, v)
    act_iv = {(i, v): (fwd_at[(i, v - 1)], bwd_at[(i, v)]) for (i, v) in bwd_at if v >= 1}
    # gradient w.r.t. the output of (i, v), v < V-1: written after B(i, v+1), read by B(i, v)
    grad_iv = {(i, v): (bwd_at[(i, v + 1)], bwd_at[(i, v)]) for (i, v) in bwd_at if v < v_total - 1}
    act_key, act_slots = _allocate(act_iv, pp, lambda k: k[1] % pp)
    grad_key, grad_slots = _allocate(grad_iv, pp, lambda k: k[1] % pp)

    shape = (t_total, pp)
    tables = {name: np.full(shape, fill, np.int32) for name, fill in (
        ("branch", IDLE), ("first", 0), ("microbatch", 0), ("repeat", 0), ("act_key", 0), ("grad_key", 0),
        ("recv_act", -1), ("recv_grad", -1))}
    for t, row in enumerate(schedule.slots):
        for d, op in enumerate(row):
            if op is None:
                continue
            i, v = op.microbatch, op.stage
            first, last = v == 0, v == v_total - 1
            if op.kind == FWD:
                branch = IDLE if last else F  # the last stage's F is redone in its B
            else:
                branch = B_LAST if last else B
            tables["branch"][t, d] = branch
            tables["first"][t, d] = int(first)
            tables["microbatch"][t, d] = i
            tables["repeat"][t, d] = v // pp
            tables["act_key"][t, d] = act_key.get((i, v), 0)
            tables["grad_key"][t, d] = grad_key.get((i, v), 0)
            if op.kind == FWD and not last:
                tables["recv_act"][t, (v + 1) % pp] = act_key[(i, v + 1)]
            if op.kind == BWD and not first:
                tables["recv_grad"][t, (v - 1) % pp] = grad_key[(i, v - 1)]
    return Program(**tables, act_slots=act_slots, grad_slots=grad_slots)


def split_layers(layers, stages: int, repeats: int):
    """[L, ...] -> [stages, repeats, L/(stages*repeats), ...]: virtual stage v = r*stages + d on device d."""
    def one(a):
        a = a.reshape(repeats, stages, a.shape[0] // (stages * repeats), *a.shape[1:])
        return jnp.swapaxes(a, 0, 1)
    return jax.tree.map(one, layers)


def merge_layers(layers):
    """The inverse of split_layers."""
    def one(a):
        a = jnp.swapaxes(a, 0, 1)
        return a.reshape(a.shape[0] * a.shape[1] * a.shape[2], *a.shape[3:])
    return jax.tree.map(one, layers)


def make_pipeline_grads(cfg: ModelConfig, schedule: Schedule, z_loss: float):
    """Returns (params, microbatched batch [MB, rows, T], total_weight) -> (loss, z, fp32 grads).

    Must be called under `jax.set_mesh(mesh)` (ShardedTrainer.context()) with a `pipeline` axis of
    size `schedule.stages`. loss and z are the weighted sums over all microbatches / total_weight.
    """
    prog = compile_program(schedule)
    pp, reps = schedule.stages, schedule.repeats
    dtype = jnp.dtype(cfg.dtype)
    tables = {k: jnp.asarray(getattr(prog, k)) for k in
              ("branch", "first", "microbatch", "repeat", "act_key", "grad_key", "recv_act", "recv_grad")}

    def body(stage_params, outer, mbs, total_weight):
        me = jax.lax.axis_index(AXIS)
        p_local = jax.tree.map(lambda a: a[0], stage_params)  # [repeats, layers_per_stage, ...]
        m, rows, length = mbs["inputs"].shape
        buf_shape = (rows, length, cfg.d_model)

        def constrain(x):
            return nn.with_logical_constraint(x, ACT)

        def take(tree, i):
            return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), tree)

        def run_stage(p_r, outer_, x, mb):
            return parts.stage(cfg, p_r, outer_, x, mb["segment_ids"], mb["positions"])

        def fwd_fn(p_r, outer_, x, mb, first):
            x = jnp.where(first, parts.embed(cfg, outer_, mb["inputs"], mb["positions"]).astype(dtype), x)
            return run_stage(p_r, outer_, x, mb)

        def last_fn(p_r, outer_, x, mb):
            logits = parts.head(cfg, outer_, run_stage(p_r, outer_, x, mb))
            loss_sum, z_sum = cross_entropy(logits, mb["targets"], mb["loss_weights"], z_loss, one_hot_pick=True)
            return loss_sum / total_weight, z_sum / total_weight

        zeros_act = jnp.zeros(buf_shape, dtype)

        def accumulate(g_p, g_outer, r, dp, douter):
            f32 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)  # noqa: E731
            g_p = jax.tree.map(lambda acc, d: jax.lax.dynamic_update_index_in_dim(
                acc, jax.lax.dynamic_index_in_dim(acc, r, 0, keepdims=False) + d, r, 0), g_p, f32(dp))
            return g_p, jax.tree.map(jnp.add, g_outer, f32(douter))

        def slot(carry, row):
            act, grad, g_p, g_outer, loss, z = carry
            branch, first, i, r = row["branch"][me], row["first"][me] > 0, row["microbatch"][me], row["repeat"][me]
            mb, p_r = take(mbs, i), take(p_local, r)
            x_in = jax.lax.dynamic_index_in_dim(act, row["act_key"][me], 0, keepdims=False)
            g_in = jax.lax.dynamic_index_in_dim(grad, row["grad_key"][me], 0, keepdims=False)
            state = (g_p, g_outer, loss, z)

            def idle(_):
                return zeros_act, zeros_act, state

            def f(_):
                return fwd_fn(p_r, outer, x_in, mb, first).astype(dtype), zeros_act, state

            def b(_):  # on virtual stage 0, dx is zero (the input was the embedding) and nobody keeps it
                _, vjp = jax.vjp(lambda p, o, x: fwd_fn(p, o, x, mb, first), p_r, outer, x_in)
                dp, douter, dx = vjp(g_in.astype(dtype))
                return zeros_act, dx.astype(dtype), (*accumulate(g_p, g_outer, r, dp, douter), loss, z)

            def b_last(_):
                (l_i, z_i), vjp = jax.vjp(lambda p, o, x: last_fn(p, o, x, mb), p_r, outer, x_in)
                dp, douter, dx = vjp((jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)))
                return zeros_act, dx.astype(dtype), (*accumulate(g_p, g_outer, r, dp, douter), loss + l_i, z + z_i)

            send_act, send_grad, (g_p, g_outer, loss, z) = jax.lax.switch(
                branch, [idle, f, b, b_last], None)
            # Every device sends every slot (lockstep); the table says whether the receiver keeps it.
            got_act = jax.lax.ppermute(send_act, AXIS, [(d, (d + 1) % pp) for d in range(pp)])
            got_grad = jax.lax.ppermute(send_grad, AXIS, [(d, (d - 1) % pp) for d in range(pp)])

            def store(buf, key, value):
                k = jnp.maximum(key, 0)
                old = jax.lax.dynamic_index_in_dim(buf, k, 0, keepdims=False)
                return constrain(jax.lax.dynamic_update_index_in_dim(buf, jnp.where(key >= 0, value, old), k, 0))

            act = store(act, row["recv_act"][me], got_act)
            grad = store(grad, row["recv_grad"][me], got_grad)
            return (act, grad, g_p, g_outer, loss, z), None

        f32_zeros = lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), t)  # noqa: E731
        init = (constrain(jnp.zeros((prog.act_slots, *buf_shape), dtype)),
                constrain(jnp.zeros((prog.grad_slots, *buf_shape), dtype)),
                f32_zeros(p_local), f32_zeros(outer), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        (_, _, g_p, g_outer, loss, z), _ = jax.lax.scan(slot, init, tables)
        g_outer, loss, z = jax.lax.psum((g_outer, loss, z), AXIS)
        return jax.tree.map(lambda a: a[None], g_p), g_outer, loss, z

    run = jax.shard_map(body, in_specs=(P(AXIS), P(), P(), P()), out_specs=(P(AXIS), P(), P(), P()),
                        axis_names=frozenset({AXIS}), check_vma=False)

    def pipeline_grads(params, mbs, total_weight):
        params = dict(params)
        layers = split_layers(params.pop("layers"), pp, reps)
        g_layers, g_outer, loss, z = run(layers, params, mbs, total_weight)
        return loss, z, {**g_outer, "layers": merge_layers(g_layers)}

    return pipeline_grads
