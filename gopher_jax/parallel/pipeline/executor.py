"""Runs a schedule's executed program (schedule.py) on the `pipeline` mesh axis: jit + shard_map + ppermute.

Inside `jax.shard_map(..., axis_names={'pipeline'})` each pipeline device holds its stages' layers
(`[repeats, layers_per_stage, ...]`); `data`, `fsdp` and `tensor` stay automatic (GSPMD), so tensor
parallelism works inside a stage and data/fsdp outside it unchanged. A `lax.scan` walks the program's
time slots; in each slot every device runs the op list its column names, chosen with `lax.switch`
among the op lists the program uses (for example `F+R` on a middle stage, `V` on the last). Then it
hands its forward output to the next device and its input gradient to the previous one with two
`lax.ppermute`s around the ring (device d -> d+1 for activations, d -> d-1 for gradients).

Ops (schedule.py): F forward; R forward keeping the VJP residuals; V backward from them; B = R + V
in one slot; zero-bubble's R / I / W split the backward per matmul (deferred_wgrad.py): I gives dx and
every Dense output's cotangent, W each kernel's x^T dy. Each op is specialised to its stage's
position, as real branches: only the first virtual stage embeds (and differentiates the embedding),
only the last applies head and loss; middle stages do neither.

Between a microbatch's F and its backward a device keeps only the stage *input* (the backward
recomputes the stage with R), so the stash is what the schedule bounds; R's residuals (the model's
remat policy decides what they hold) live from R to the V / I that reads them; what W reads (Dense
inputs saved by R, cotangents written by I) lives from R to W in a pool of its own. Buffer slots
of every kind are assigned by interval colouring of the program (`_allocate`), so buffer sizes
follow the schedule exactly; residual buffers are shared by the stage positions (first, middle,
last) wherever their leaves have the same shape, so a device pays for one layout, not three.

Residuals cross slot boundaries as the leaves of `jax.vjp`'s pullback: their layout is traced once per
stage position (`StageOps`, which the cost model compiles too); leaves that are the stage's own
parameters, or repeat an earlier leaf, are not stored but taken again when the pullback is rebuilt.

Embedding and head parameters ("outer") are replicated over `pipeline` and their gradients summed over
it at the end (psum); nothing of size [global batch, length, d_model] is ever materialised.
"""
from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from gopher_jax.model import axes
from gopher_jax.model.config import ModelConfig
from gopher_jax.ops import cross_entropy
from gopher_jax.parallel.pipeline import deferred_wgrad as wgrad
from gopher_jax.parallel.pipeline import stage as parts
from gopher_jax.parallel.pipeline.program import Schedule, position

AXIS = "pipeline"
ACT = (None, axes.BATCH, axes.LENGTH, axes.EMBED)  # buffers: [slot, rows, length, d_model]
READS_ACT, SENDS_GRAD, READS_GRAD, READS_RES = "FRB", "BVI", "BVI", "VI"


@dataclasses.dataclass(frozen=True)
class Program:
    """Per-slot, per-device integer tables ([slots, stages]) that drive the executor, and buffer sizes.

    `combos[branch[t, d]]` is the op list ((kind, position), ...) device d runs in slot t; column k
    of `microbatch`, `repeat`, `act_key`, `grad_key`, `res_key` ([ops per slot, slots, stages]) is
    for its k-th op."""

    combos: tuple
    branch: np.ndarray
    microbatch: np.ndarray
    repeat: np.ndarray
    act_key: np.ndarray  # activation (stage input) buffer slot read by F / R / B
    grad_key: np.ndarray  # output-gradient buffer slot read by B / V / I / W
    res_key: np.ndarray  # residual buffer slot written by R, read by V / I
    wg_key: np.ndarray  # zero_bubble: buffer slot of what W reads (Dense inputs from R, cotangents from I)
    recv_act: np.ndarray  # after the slot: write the activation received from d-1 here (-1 = nothing)
    recv_grad: np.ndarray  # after the slot: write the gradient received from d+1 here (-1 = nothing)
    act_slots: int
    grad_slots: int
    res_slots: int  # residual sets kept at once (0: no R in the program)
    wg_slots: int  # zero_bubble: weight-gradient sets (R -> W) kept at once (0: no W in the program)
    res_positions: tuple  # stage positions that run R (each has its own residual layout)


def _allocate(intervals: dict, stages: int, device_of) -> tuple[dict, int]:
    """Interval colouring: keys live from their write slot to their last read slot (inclusive).

    Returns ({key: buffer slot}, slots needed on the busiest device). A slot last read in slot t may
    be rewritten in slot t (reads happen before writes: end-of-slot receives, and R after V in a slot)."""
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
    """Turns a schedule's executed program into the executor's integer tables (pure numpy, static)."""
    pp, v_total, prog = schedule.stages, schedule.virtual_stages, schedule.program
    writes = {"act": {}, "grad": {}, "res": {}, "wg": {}}
    reads = {"act": {}, "grad": {}, "res": {}, "wg": {}}
    for t, row in enumerate(prog):
        for ops in row:
            for op in ops:
                i, v, k = op.microbatch, op.stage, op.kind
                if k == "F" and v < v_total - 1:
                    writes["act"][(i, v + 1)] = t
                if k in SENDS_GRAD and v > 0:
                    writes["grad"][(i, v - 1)] = t
                if k == "R":
                    writes["res"][(i, v)] = writes["wg"][(i, v)] = t
                for buf, kinds, ok in (("act", READS_ACT, v > 0), ("grad", READS_GRAD, v < v_total - 1),
                                       ("res", READS_RES, True), ("wg", "W", True)):
                    if k in kinds and ok:
                        reads[buf][(i, v)] = max(reads[buf].get((i, v), t), t)
    device_of = lambda key: key[1] % pp  # noqa: E731
    act_key, act_slots = _allocate({k: (writes["act"][k], r) for k, r in reads["act"].items()}, pp, device_of)
    grad_key, grad_slots = _allocate({k: (writes["grad"][k], r) for k, r in reads["grad"].items()}, pp, device_of)
    # one pool for all positions (a device of a 1-repeat schedule has one position; buffers are shared)
    res_key, res_slots = _allocate({k: (w, reads["res"][k]) for k, w in writes["res"].items()}, pp, device_of)
    res_slots = res_slots if writes["res"] else 0
    wg_key, wg_slots = _allocate({k: (writes["wg"][k], r) for k, r in reads["wg"].items()}, pp, device_of)
    wg_slots = wg_slots if reads["wg"] else 0
    res_positions = tuple(p for p in ("first", "mid", "last") if any(position(schedule, k[1]) == p
                                                                       for k in writes["res"]))

    t_total, width = len(prog), max(1, max(len(ops) for row in prog for ops in row))
    combos = sorted({tuple((op.kind, position(schedule, op.stage)) for op in ops) for row in prog for ops in row})
    combos.remove(()) if () in combos else None
    combos = [()] + combos  # branch 0 = idle
    per_op = {name: np.zeros((width, t_total, pp), np.int32)
              for name in ("microbatch", "repeat", "act_key", "grad_key", "res_key", "wg_key")}
    branch = np.zeros((t_total, pp), np.int32)
    recv_act, recv_grad = np.full((t_total, pp), -1, np.int32), np.full((t_total, pp), -1, np.int32)
    for t, row in enumerate(prog):
        for d, ops in enumerate(row):
            branch[t, d] = combos.index(tuple((op.kind, position(schedule, op.stage)) for op in ops))
            for k, op in enumerate(ops):
                i, v = op.microbatch, op.stage
                per_op["microbatch"][k, t, d] = i
                per_op["repeat"][k, t, d] = v // pp
                per_op["act_key"][k, t, d] = act_key.get((i, v), 0)
                per_op["grad_key"][k, t, d] = grad_key.get((i, v), 0)
                per_op["res_key"][k, t, d] = res_key.get((i, v), 0)
                per_op["wg_key"][k, t, d] = wg_key.get((i, v), 0)
                if op.kind == "F" and v < v_total - 1:
                    recv_act[t, (v + 1) % pp] = act_key[(i, v + 1)]
                if op.kind in SENDS_GRAD and v > 0:
                    recv_grad[t, (v - 1) % pp] = grad_key[(i, v - 1)]
    return Program(tuple(combos), branch, **per_op, recv_act=recv_act, recv_grad=recv_grad,
                   act_slots=act_slots, grad_slots=grad_slots, res_slots=res_slots, wg_slots=wg_slots,
                   res_positions=res_positions)


def _mesh_platform() -> str:
    """The platform of the mesh being traced for (an ahead-of-time TPU compile runs on a CPU host)."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else getattr(mesh, "abstract_device", None)
    return getattr(device, "platform", None) or jax.default_backend()


def _in_order(values, serialise: bool):
    """`values`, available only once all of them are computed, when `serialise` (the CPU backend): what
    follows starts after what made them. Elsewhere `values` unchanged.

    A slot's ops (say F of one microbatch and R of another) are independent in the dataflow, and each
    holds tensor-parallel all-reduces. XLA:CPU's thunk executor runs independent work concurrently,
    so two devices of one all-reduce group could enter different all-reduces first and, with the
    runtime's few threads all blocked in rendezvous, wait on each other forever (reproduced: the
    interleaved_1f1b pp2 x tensor2 x data2 gradient test aborted with devices 4 and 6 stuck in the
    attention and embedding all-reduces of one F+R slot while a second process loaded the cores).
    One order for every device removes the cycle. TPU executes one HLO schedule per device, in which
    every device meets the collectives in the same order, so the barrier is gated to CPU: on TPU it
    would only stop the scheduler from overlapping one op's collectives with the other op's compute
    (docs/decisions/0002-pipeline.md has the AOT-compiled comparison).
    """
    return jax.lax.optimization_barrier(values) if serialise else values


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


REL_BIASES = ("content_bias", "position_bias")


def outer_keys(outer: dict, pos: str) -> tuple:
    """The "outer" (non-layer) parameters a stage at `pos` reads: embedding, head, shared biases."""
    keys = REL_BIASES + (parts.OUTER_EMBED if pos == "first" else ()) + (parts.OUTER_HEAD if pos == "last" else ())
    return tuple(k for k in dict.fromkeys(keys) if k in outer)


def stage_fn(cfg: ModelConfig, pos: str, z_loss: float):
    """(layers slice, outer subset, x, microbatch, total_weight[, cotangents]) -> stage output, or (loss, z)
    on the last stage; with `cotangents` (zero-bubble's split, deferred_wgrad.py) -> (that, Dense inputs).

    The first stage embeds its tokens (x is unused); the last applies head and loss."""
    dtype = jnp.dtype(cfg.dtype)

    def fn(p, o, x, mb, total_weight, cotangents=None):
        if pos == "first":
            x = parts.embed(cfg, o, mb["inputs"], mb["positions"]).astype(dtype)
        y = parts.stage(cfg, p, o, x, mb["segment_ids"], mb["positions"], cotangents)
        y, inputs = y if cotangents is not None else (y, None)
        if pos != "last":
            out = y.astype(dtype)
        else:
            logits = parts.head(cfg, o, y)
            loss_sum, z_sum = cross_entropy(logits, mb["targets"], mb["loss_weights"], z_loss, one_hot_pick=True)
            out = (loss_sum / total_weight, z_sum / total_weight)
        return out if cotangents is None else (out, inputs)

    return fn


class StageOps:
    """The ops of one stage position as pure functions, shared by the executor's branches and the cost
    model (compiled_op_costs.py), so what is priced is what runs.

      forward(p, o, x, mb, tw)        F: the stage output (or (loss, z) on the last stage)
      linearize(p, o, x, mb, tw)      R: (output, pullback, aux); aux = Dense inputs when `split`
      keep(pullback, aux)             the leaves R stores (`shapes`): the pullback's residuals without
                                      the stage's own parameters and without repeats of a leaf
      restore(kept, p, o)             (pullback, aux) again, in any later slot
      backward(pullback, g)           V / B: (dp, d_outer, dx); I (split): (dp without kernels, d_outer,
                                      dx, Dense output cotangents as a leaf list, `cotangent_shapes`)
      weight_grads(aux, cots, p)      W (split): the Dense kernels' gradients (deferred_wgrad.py)

    `split` (zero_bubble) differentiates R's pullback w.r.t. the stage input and the non-kernel
    parameters only, leaving the kernels' x^T dy to W.
    """

    def __init__(self, cfg: ModelConfig, pos: str, z_loss: float, split: bool, p, o, x, mb, total_weight):
        self.cfg, self.pos, self.split = cfg, pos, split
        self.fn = stage_fn(cfg, pos, z_loss)
        probe = {}

        def trace(p, o, x, mb, tw):
            out, vjp, aux = self.linearize(p, o, x, mb, tw)
            leaves, probe["treedef"] = jax.tree.flatten((vjp, aux))
            params = jax.tree.leaves((p, o))
            source = []  # per leaf: ("param", j) | ("same", k) (as leaf k) | ("kept", n)
            kept = []
            for i, leaf in enumerate(leaves):
                j = next((j for j, a in enumerate(params) if a is leaf), None)
                k = next((k for k in range(i) if leaves[k] is leaf), None)
                if j is not None:
                    source.append(("param", j))
                elif k is not None:
                    source.append(("same", k))
                else:
                    source.append(("kept", len(kept)))
                    kept.append(leaf)
            probe["source"] = source
            # kept leaves W reads (aux: the Dense inputs) live until W, the others only until I
            probe["for_w"], n_vjp = [False] * len(kept), len(jax.tree.leaves(vjp))
            for what, j in source[n_vjp:]:
                while what == "same":
                    what, j = source[j]
                if what == "kept":
                    probe["for_w"][j] = True
            if not split:
                return kept, []
            cots = self.cotangent_zeros(p, o, x, mb)
            probe["cot_treedef"] = jax.tree.structure(cots)
            return kept, jax.tree.leaves(cots)

        self.shapes, self.cotangent_shapes = jax.eval_shape(trace, p, o, x, mb, total_weight)
        self.treedef, self.source, self.cot_treedef = probe["treedef"], probe["source"], probe.get("cot_treedef")
        self.for_w = tuple(probe["for_w"])  # per kept leaf: read by W (kept until W, not just until I)

    def forward(self, p, o, x, mb, tw):
        return self.fn(p, o, x, mb, tw)

    def cotangent_zeros(self, p, o, x, mb):
        shapes = parts.cotangent_shapes(self.cfg, p, o, x, mb["segment_ids"], mb["positions"])
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def linearize(self, p, o, x, mb, tw):
        if not self.split:
            out, vjp = jax.vjp(lambda p_, o_, x_: self.fn(p_, o_, x_, mb, tw), p, o, x)
            return out, vjp, None
        kernels, rest = wgrad.split_kernels(p)
        return jax.vjp(lambda r, o_, x_, c: self.fn(wgrad.merge_kernels(kernels, r), o_, x_, mb, tw, c),
                       rest, o, x, self.cotangent_zeros(p, o, x, mb), has_aux=True)

    def keep(self, vjp, aux) -> list:
        leaves = jax.tree.leaves((vjp, aux))
        assert len(leaves) == len(self.source), "residual layout changed between traces"
        return [leaf for leaf, (what, _) in zip(leaves, self.source) if what == "kept"]

    def restore(self, kept: list, p, o):
        params, leaves = jax.tree.leaves((p, o)), []
        for what, j in self.source:
            leaves.append(params[j] if what == "param" else leaves[j] if what == "same" else kept[j])
        return jax.tree.unflatten(self.treedef, leaves)

    def backward(self, vjp, g):
        if not self.split:
            return vjp(g)
        d_rest, d_outer, dx, d_cots = vjp(g)
        return d_rest, d_outer, dx, jax.tree.leaves(d_cots)

    def weight_grads(self, aux, cots: list, p):
        cot_tree = jax.tree.unflatten(self.cot_treedef, cots)
        return wgrad.weight_grads(aux["layers"], cot_tree["layers"], p)


def make_pipeline_grads(cfg: ModelConfig, schedule: Schedule, z_loss: float):
    """Returns (params, microbatched batch [MB, rows, T], total_weight) -> (loss, z, fp32 grads).

    Must be called under `jax.set_mesh(mesh)` (ShardedTrainer.context()) with a `pipeline` axis of
    size `schedule.stages`. loss and z are the weighted sums over all microbatches / total_weight.
    """
    prog = compile_program(schedule)
    pp, reps = schedule.stages, schedule.repeats
    dtype = jnp.dtype(cfg.dtype)
    width = prog.microbatch.shape[0]
    tables = {"branch": jnp.asarray(prog.branch), "recv_act": jnp.asarray(prog.recv_act),
              "recv_grad": jnp.asarray(prog.recv_grad),
              **{f"{name}{k}": jnp.asarray(getattr(prog, name)[k]) for name in
                 ("microbatch", "repeat", "act_key", "grad_key", "res_key", "wg_key") for k in range(width)}}
    split = schedule.name.startswith("zero_bubble")  # I and W: the backward split per matmul (deferred_wgrad.py)

    def body(stage_params, outer, mbs, total_weight):
        me = jax.lax.axis_index(AXIS)
        serialise = _mesh_platform() == "cpu"  # see _in_order
        p_local = jax.tree.map(lambda a: a[0], stage_params)  # [repeats, layers_per_stage, ...]
        m, rows, length = mbs["inputs"].shape
        buf_shape = (rows, length, cfg.d_model)
        zeros_act = jnp.zeros(buf_shape, dtype)

        def constrain(x):
            return nn.with_logical_constraint(x, ACT)

        def take(tree, i):
            return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 0, keepdims=False), tree)

        def sub(pos):
            return {k: outer[k] for k in outer_keys(outer, pos)}

        ops = {pos: StageOps(cfg, pos, z_loss, split, take(p_local, 0), sub(pos), zeros_act, take(mbs, 0),
                             total_weight) for pos in ("first", "mid", "last")}
        # Two pools of buffers, each shared by the stage positions (leaves of equal shape and dtype reuse
        # one buffer [slots, *shape]): "res" for R's kept leaves that only V / I read (res_key), "wg" for
        # what W reads, R's Dense inputs and I's cotangents (zero_bubble; wg_key).
        pools = {"res": [], "wg": []}
        where = {}  # (pos, "kept" | "cots") -> per leaf (pool, buffer index)
        for pos in prog.res_positions:
            taken = set()

            def place(leaf, pool):
                b = next((n for n, s in enumerate(pools[pool]) if (pool, n) not in taken and
                          (s.shape, s.dtype) == (leaf.shape, leaf.dtype)), None)
                if b is None:
                    b = len(pools[pool])
                    pools[pool].append(leaf)
                taken.add((pool, b))
                return pool, b

            where[(pos, "kept")] = [place(leaf, "wg" if w else "res")
                                    for leaf, w in zip(ops[pos].shapes, ops[pos].for_w)]
            where[(pos, "cots")] = [place(leaf, "wg") for leaf in ops[pos].cotangent_shapes]

        def f32(t):
            return jax.tree.map(lambda a: a.astype(jnp.float32), t)

        def accumulate(st, r, dp, douter):
            """Adds fp32 gradients; a None leaf of dp (split: computed by another op) adds nothing."""
            def add_at_r(acc, d):
                if d is None:
                    return acc
                old = jax.lax.dynamic_index_in_dim(acc, r, 0, keepdims=False)
                return jax.lax.dynamic_update_index_in_dim(acc, old + d.astype(jnp.float32), r, 0)
            g_p = jax.tree.map(add_at_r, st["g_p"], dp, is_leaf=lambda a: a is None)
            g_outer = dict(st["g_outer"])
            for key, d in douter.items():
                g_outer[key] = jax.tree.map(jnp.add, g_outer[key], f32(d))
            return {**st, "g_p": g_p, "g_outer": g_outer}

        def read(st, places, keys):
            return [jax.lax.dynamic_index_in_dim(st[pool][b], keys[pool], 0, keepdims=False) for pool, b in places]

        def write(st, places, keys, leaves):
            new = {"res": list(st["res"]), "wg": list(st["wg"])}
            for (pool, b), leaf in zip(places, leaves):
                new[pool][b] = jax.lax.dynamic_update_index_in_dim(new[pool][b], leaf, keys[pool], 0)
            return {**st, **new}

        def run_op(kind, pos, st, row, k):
            """One op of a slot; returns (state, activation to send or None, gradient to send or None)."""
            i, r = row[f"microbatch{k}"][me], row[f"repeat{k}"][me]
            mb, p_r, o, so = take(mbs, i), take(p_local, r), sub(pos), ops[pos]
            x = zeros_act if pos == "first" else jax.lax.dynamic_index_in_dim(
                st["act"], row[f"act_key{k}"][me], 0, keepdims=False)
            if pos == "last":
                g = (jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32))
            else:
                g = jax.lax.dynamic_index_in_dim(st["grad"], row[f"grad_key{k}"][me], 0, keepdims=False)
            keys = {"res": row[f"res_key{k}"][me], "wg": row[f"wg_key{k}"][me]}
            if kind == "F":
                return st, so.forward(p_r, o, x, mb, total_weight), None
            if kind in "RB":
                out, vjp, aux = so.linearize(p_r, o, x, mb, total_weight)
                if pos == "last":
                    st = {**st, "loss": st["loss"] + out[0], "z": st["z"] + out[1]}
                if kind == "R":
                    return write(st, where[(pos, "kept")], keys, so.keep(vjp, aux)), None, None
            else:  # V, I, W: from the kept leaves
                vjp, aux = so.restore(read(st, where[(pos, "kept")], keys), p_r, o)
            if kind == "W":
                dp = so.weight_grads(aux, read(st, where[(pos, "cots")], keys), p_r)
                return accumulate(st, r, dp, {}), None, None
            if kind == "I":
                dp, douter, dx, cots = so.backward(vjp, g)
                st = write(st, where[(pos, "cots")], keys, cots)
            else:
                dp, douter, dx = so.backward(vjp, g)
            st = accumulate(st, r, dp, douter)
            return st, None, None if pos == "first" else dx.astype(dtype)

        def make_branch(combo):
            def branch(st, row):
                send_act, send_grad = zeros_act, zeros_act
                for k, (kind, pos) in enumerate(combo):
                    if k:  # the slot's ops run one after another: see _in_order
                        st, send_act, send_grad = _in_order((st, send_act, send_grad), serialise)
                    st, a, g = run_op(kind, pos, st, row, k)
                    send_act = send_act if a is None else a
                    send_grad = send_grad if g is None else g
                return st, send_act, send_grad
            return branch

        branches = [make_branch(c) for c in prog.combos]

        def store(buf, key, value):
            k = jnp.maximum(key, 0)
            old = jax.lax.dynamic_index_in_dim(buf, k, 0, keepdims=False)
            return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(key >= 0, value, old), k, 0)

        def slot(st, row):
            st, send_act, send_grad = jax.lax.switch(row["branch"][me], branches, st, row)
            # Every device sends every slot (lockstep); the table says whether the receiver keeps it.
            got_act = jax.lax.ppermute(send_act, AXIS, [(d, (d + 1) % pp) for d in range(pp)])
            got_act, send_grad = _in_order((got_act, send_grad), serialise)
            got_grad = jax.lax.ppermute(send_grad, AXIS, [(d, (d - 1) % pp) for d in range(pp)])
            st = {**st, "act": store(st["act"], row["recv_act"][me], got_act),
                  "grad": store(st["grad"], row["recv_grad"][me], got_grad)}
            return st, None

        zeros32 = lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), t)  # noqa: E731
        init = {"act": constrain(jnp.zeros((prog.act_slots, *buf_shape), dtype)),
                "grad": constrain(jnp.zeros((prog.grad_slots, *buf_shape), dtype)),
                "res": [jnp.zeros((prog.res_slots, *s.shape), s.dtype) for s in pools["res"]],
                "wg": [jnp.zeros((prog.wg_slots, *s.shape), s.dtype) for s in pools["wg"]],
                "g_p": zeros32(p_local), "g_outer": zeros32(outer),
                "loss": jnp.zeros((), jnp.float32), "z": jnp.zeros((), jnp.float32)}
        st, _ = jax.lax.scan(slot, init, tables)
        g_outer, loss, z = jax.lax.psum((st["g_outer"], st["loss"], st["z"]), AXIS)
        return jax.tree.map(lambda a: a[None], st["g_p"]), g_outer, loss, z

    run = jax.shard_map(body, in_specs=(P(AXIS), P(), P(), P()), out_specs=(P(AXIS), P(), P(), P()),
                        axis_names=frozenset({AXIS}), check_vma=False)

    def pipeline_grads(params, mbs, total_weight):
        params = dict(params)
        layers = split_layers(params.pop("layers"), pp, reps)
        g_layers, g_outer, loss, z = run(layers, params, mbs, jnp.asarray(total_weight, jnp.float32))
        return loss, z, {**g_outer, "layers": merge_layers(g_layers)}

    return pipeline_grads
