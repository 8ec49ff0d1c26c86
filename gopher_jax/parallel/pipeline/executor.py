"""Runs a schedule's executed program (schedule.py) on the `pipeline` mesh axis: jit + shard_map + ppermute.

Inside `jax.shard_map(..., axis_names={'pipeline'})` each pipeline device holds its stages' layers
(`[repeats, layers_per_stage, ...]`); `data`, `fsdp` and `tensor` stay automatic (GSPMD), so tensor
parallelism works inside a stage and data/fsdp outside it unchanged. A `lax.scan` walks the program's
time slots; in each slot every device runs the op list its column names, chosen with `lax.switch`
among the op lists the program uses (for example `F+R` on a middle stage, `V` on the last). Then it
hands its forward output to the next device and its input gradient to the previous one with two
`lax.ppermute`s around the ring (device d -> d+1 for activations, d -> d-1 for gradients).

Ops (program.py): F forward; R forward keeping the VJP residuals; V backward from them; B = R + V
in one slot; zero-bubble's R / I / W split the backward per matmul (deferred_wgrad.py): I gives dx and
every Dense's input and output cotangent (the weight-gradient set), W each kernel's x^T dy. Each op is
specialised to its stage's position, as real branches: only the first virtual stage embeds (and
differentiates the embedding), only the last applies head and loss; middle stages do neither.

Between a microbatch's F and its backward a device keeps only the stage *input* (the backward
recomputes the stage with R), so the stash is what the schedule bounds; R's residuals (the model's
remat policy decides what they hold) live from R to the V / I that reads them; a weight-gradient set
lives from I to its W. Buffer slots of every kind are assigned by interval colouring of the program
(`_allocate`), so buffer sizes follow the schedule exactly; a set read in its writer's slot is handed
over inside the slot and never buffered. Residual and weight-gradient buffers are shared by the stage
positions (first, middle, last) wherever their leaves have the same shape, so a device pays for one
layout, not three. The buffers enter each slot's `lax.switch` read-only and the branch returns what to
write (make_pipeline_grads says why).

Residuals cross slot boundaries as the leaves of `jax.vjp`'s pullback: their layout is traced once per
stage position (`StageOps`, which the cost model compiles too); leaves that are the stage's own
parameters, or repeat an earlier leaf, are not stored but taken again when the pullback is rebuilt.

Embedding and head parameters ("outer") are replicated over `pipeline` and their gradients summed over
it at the end (psum); nothing of size [global batch, length, d_model] is ever materialised.
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
from gopher_jax.ops import cross_entropy
from gopher_jax.parallel.pipeline import deferred_wgrad as wgrad
from gopher_jax.parallel.pipeline import stage as parts
from gopher_jax.parallel.pipeline.program import BACKWARD_KINDS, Schedule, position

AXIS = "pipeline"
ACT = (None, axes.BATCH, axes.LENGTH, axes.EMBED)  # buffers: [slot, rows, length, d_model]
READS_ACT, SENDS_GRAD, READS_GRAD, READS_RES = "FRB", "BVI", "BVI", "VI"


@dataclasses.dataclass(frozen=True)
class Program:
    """Per-slot, per-device integer tables ([slots, stages]) that drive the executor, and buffer sizes.

    `combos[branch[t, d]]` is the op list ((kind, position, keep), ...) device d runs in slot t (keep:
    an R or I whose set is read in a later slot writes it to a buffer); column k of `microbatch`,
    `repeat`, `part`, `act_key`, `grad_key`, `res_key`, `wg_key` ([ops per slot, slots, stages]) is for
    its k-th op. A residual set (R -> V / I) or weight-gradient set (I -> W) read in its writer's slot
    is handed over inside the slot (program.slot_order puts the reader after the writer)."""

    combos: tuple
    branch: np.ndarray
    microbatch: np.ndarray
    repeat: np.ndarray
    part: np.ndarray  # zero_bubble: which of Schedule.w_parts layer groups a W runs
    act_key: np.ndarray  # activation (stage input) buffer slot read by F / R / B
    grad_key: np.ndarray  # output-gradient buffer slot read by B / V / I
    res_key: np.ndarray  # residual buffer slot read by V / I
    wg_key: np.ndarray  # zero_bubble: weight-gradient buffer slot read by W
    res_write: np.ndarray  # after the slot's ops: write its R's residual set here (-1 = nothing to keep)
    wg_write: np.ndarray  # after the slot's ops: write its I's weight-gradient set here (-1 = nothing)
    grad_repeat: np.ndarray  # the repeat whose gradient accumulator the slot's backward ops add to
    recv_act: np.ndarray  # after the slot: write the activation received from d-1 here (-1 = nothing)
    recv_grad: np.ndarray  # after the slot: write the gradient received from d+1 here (-1 = nothing)
    act_slots: int
    grad_slots: int
    res_slots: int  # residual sets kept across a slot boundary at once (0: none)
    wg_slots: int  # zero_bubble: weight-gradient sets (I -> W) kept across a slot boundary at once (0: none)
    res_positions: tuple  # stage positions that run R (each has its own residual layout)
    w_parts: int = 1  # zero_bubble: layer groups of a W (Schedule.w_parts)
    wg_in_slot: int = 0  # zero_bubble: most weight-gradient sets one slot materialises (an I's, a pooled W's)

    @property
    def wg_live(self) -> int:
        """Weight-gradient sets live at the compiled step's peak (XLA:CPU, measured by
        tests/parallel/test_pipeline_memory.py): the pooled ones twice (the buffer, and the copy XLA makes
        when a slot writes a set of it), plus the sets the busiest slot materialises (an I's set leaving
        its branch, a pooled set a W reads back)."""
        return 2 * self.wg_slots + self.wg_in_slot


def _allocate(intervals: dict, stages: int, device_of) -> tuple[dict, int]:
    """Interval colouring: keys live from their write slot to their last read slot (inclusive).

    Returns ({key: buffer slot}, slots needed on the busiest device; 0 when there are no intervals). A
    slot last read in slot t may be rewritten in slot t (reads happen before writes: end-of-slot
    receives and writes)."""
    assign, need = {}, 0
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


def _check_slot(ops) -> None:
    """The in-slot order the executor relies on (program.slot_order): at most one R and one backward
    (B / V / I) per slot; an R before the backward is its own microbatch's, a W after it too."""
    kinds = [op.kind for op in ops]
    assert kinds.count("R") <= 1 and sum(k in "BVI" for k in kinds) <= 1 and kinds.count("F") <= 1, ops
    back = next((n for n, op in enumerate(ops) if op.kind in "BVI"), None)
    for n, op in enumerate(ops):
        mine = back is not None and (op.microbatch, op.stage) == (ops[back].microbatch, ops[back].stage)
        if op.kind == "R" and back is not None and ops[back].kind != "B":
            assert (n < back) == mine, ops
        if op.kind == "W" and back is not None and ops[back].kind == "I":
            assert (n > back) == mine, ops


def compile_program(schedule: Schedule) -> Program:
    """Turns a schedule's executed program into the executor's integer tables (pure numpy, static)."""
    pp, v_total, prog = schedule.stages, schedule.virtual_stages, schedule.program
    writes = {"act": {}, "grad": {}, "res": {}, "wg": {}}
    reads = {"act": {}, "grad": {}, "res": {}, "wg": {}}
    for t, row in enumerate(prog):
        for ops in row:
            _check_slot(ops)
            for op in ops:
                i, v, k = op.microbatch, op.stage, op.kind
                if k == "F" and v < v_total - 1:
                    writes["act"][(i, v + 1)] = t
                if k in SENDS_GRAD and v > 0:
                    writes["grad"][(i, v - 1)] = t
                if k == "R":
                    writes["res"][(i, v)] = t
                if k == "I":
                    writes["wg"][(i, v)] = t
                for buf, kinds, ok in (("act", READS_ACT, v > 0), ("grad", READS_GRAD, v < v_total - 1),
                                       ("res", READS_RES, True), ("wg", "W", True)):
                    if k in kinds and ok:
                        reads[buf][(i, v)] = max(reads[buf].get((i, v), t), t)
    device_of = lambda key: key[1] % pp  # noqa: E731
    act_key, act_slots = _allocate({k: (writes["act"][k], r) for k, r in reads["act"].items()}, pp, device_of)
    grad_key, grad_slots = _allocate({k: (writes["grad"][k], r) for k, r in reads["grad"].items()}, pp, device_of)
    # one pool per kind for all positions (a device of a 1-repeat schedule has one position; buffers are
    # shared); sets read only in their writer's slot are handed over inside the slot
    kept = {buf: {k: (w, reads[buf][k]) for k, w in writes[buf].items() if reads[buf][k] > w} for buf in ("res", "wg")}
    res_key, res_slots = _allocate(kept["res"], pp, device_of)
    wg_key, wg_slots = _allocate(kept["wg"], pp, device_of)
    res_positions = tuple(p for p in ("first", "mid", "last") if any(position(schedule, k[1]) == p
                                                                       for k in writes["res"]))
    wg_in_slot = max((sum(op.kind == "I" for op in ops) +
                      len({op.microbatch for op in ops if op.kind == "W"} -
                          {op.microbatch for op in ops if op.kind == "I"})
                      for row in prog for ops in row), default=0)

    t_total, width = len(prog), max(1, max(len(ops) for row in prog for ops in row))

    def combo(ops):
        keep = lambda op: (op.kind == "R" and (op.microbatch, op.stage) in res_key or  # noqa: E731
                           op.kind == "I" and (op.microbatch, op.stage) in wg_key)
        return tuple((op.kind, position(schedule, op.stage), keep(op)) for op in ops)

    combos = sorted({combo(ops) for row in prog for ops in row})
    combos.remove(()) if () in combos else None
    combos = [()] + combos  # branch 0 = idle
    per_op = {name: np.zeros((width, t_total, pp), np.int32)
              for name in ("microbatch", "repeat", "part", "act_key", "grad_key", "res_key", "wg_key")}
    branch = np.zeros((t_total, pp), np.int32)
    per_slot = {name: np.full((t_total, pp), -1, np.int32)
                for name in ("res_write", "wg_write", "recv_act", "recv_grad")}
    grad_repeat = np.zeros((t_total, pp), np.int32)
    for t, row in enumerate(prog):
        for d, ops in enumerate(row):
            branch[t, d] = combos.index(combo(ops))
            repeats = {op.stage // pp for op in ops if op.kind in BACKWARD_KINDS}
            assert len(repeats) <= 1, f"slot {t} device {d}: backward ops of several repeats {ops}"
            grad_repeat[t, d] = repeats.pop() if repeats else 0
            for k, op in enumerate(ops):
                i, v = op.microbatch, op.stage
                per_op["microbatch"][k, t, d] = i
                per_op["repeat"][k, t, d] = v // pp
                per_op["part"][k, t, d] = op.part
                per_op["act_key"][k, t, d] = act_key.get((i, v), 0)
                per_op["grad_key"][k, t, d] = grad_key.get((i, v), 0)
                per_op["res_key"][k, t, d] = res_key.get((i, v), 0)
                per_op["wg_key"][k, t, d] = wg_key.get((i, v), 0)
                if op.kind == "R" and (i, v) in res_key:
                    per_slot["res_write"][t, d] = res_key[(i, v)]
                if op.kind == "I" and (i, v) in wg_key:
                    per_slot["wg_write"][t, d] = wg_key[(i, v)]
                if op.kind == "F" and v < v_total - 1:
                    per_slot["recv_act"][t, (v + 1) % pp] = act_key[(i, v + 1)]
                if op.kind in SENDS_GRAD and v > 0:
                    per_slot["recv_grad"][t, (v - 1) % pp] = grad_key[(i, v - 1)]
    return Program(tuple(combos), branch, **per_op, **per_slot, grad_repeat=grad_repeat,
                   act_slots=act_slots, grad_slots=grad_slots, res_slots=res_slots, wg_slots=wg_slots,
                   res_positions=res_positions, w_parts=schedule.w_parts, wg_in_slot=wg_in_slot)


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
    """(layers slice, outer subset, x, microbatch, total_weight[, split]) -> stage output, or (loss, z) on
    the last stage; `split` = zero-bubble's zero probes (stage.stage, deferred_wgrad.py).

    The first stage embeds its tokens (x is unused); the last applies head and loss."""
    dtype = jnp.dtype(cfg.dtype)

    def fn(p, o, x, mb, total_weight, split=None):
        if pos == "first":
            x = parts.embed(cfg, o, mb["inputs"], mb["positions"]).astype(dtype)
        y = parts.stage(cfg, p, o, x, mb["segment_ids"], mb["positions"], split)
        if pos != "last":
            return y.astype(dtype)
        logits = parts.head(cfg, o, y)
        loss_sum, z_sum = cross_entropy(logits, mb["targets"], mb["loss_weights"], z_loss, one_hot_pick=True)
        return loss_sum / total_weight, z_sum / total_weight

    return fn


class StageOps:
    """The ops of one stage position as pure functions, shared by the executor's branches and the cost
    model (compiled_op_costs.py), so what is priced is what runs.

      forward(p, o, x, mb, tw)        F: the stage output (or (loss, z) on the last stage)
      linearize(p, o, x, mb, tw)      R: (output, pullback)
      keep(pullback)                  the leaves R stores (`shapes`, the residual set): the pullback's
                                      residuals without the stage's own parameters and without repeats
      restore(kept, p, o)             the pullback again, in any later slot
      backward(pullback, g)           V / B: (dp, d_outer, dx); I (split): (dp without kernels, d_outer,
                                      dx, the weight-gradient set: leaves of (Dense inputs, Dense output
                                      cotangents), `wgrad_shapes`)
      weight_grads(wset, p)           W (split): the Dense kernels' gradients (deferred_wgrad.py)

    `split` (zero_bubble) differentiates R's pullback w.r.t. the stage input, the non-kernel parameters
    and the zero probes of stage.py, leaving the kernels' x^T dy to W.
    """

    def __init__(self, cfg: ModelConfig, pos: str, z_loss: float, split: bool, p, o, x, mb, total_weight):
        self.cfg, self.pos, self.split = cfg, pos, split
        self.fn = stage_fn(cfg, pos, z_loss)
        self.aliases, self.wgrad_shapes = (), []
        if split:
            cots, taps, self.aliases = parts.split_shapes(cfg, p, o, x, mb["segment_ids"], mb["positions"])
            self.probes = (cots, taps)
            self.wgrad_treedef = jax.tree.structure((taps, cots))
            self.wgrad_shapes = jax.tree.leaves((taps, cots))
        probe = {}

        def trace(p, o, x, mb, tw):
            zeros = self._zeros()
            _, vjp = self.linearize(p, o, x, mb, tw, zeros)
            leaves, probe["treedef"] = jax.tree.flatten(vjp)
            params, zero_leaves = jax.tree.leaves((p, o)), jax.tree.leaves(zeros)
            # per leaf: ("param", j) | ("zero", j) (split: a zero probe, rebuilt) | ("same", k) (as leaf k)
            # | ("kept", n): only the kept leaves are stored
            source, kept = [], []
            for i, leaf in enumerate(leaves):
                j = next((j for j, a in enumerate(params) if a is leaf), None)
                z = next((j for j, a in enumerate(zero_leaves) if a is leaf), None)
                k = next((k for k in range(i) if leaves[k] is leaf), None)
                if j is not None:
                    source.append(("param", j))
                elif z is not None:
                    source.append(("zero", z))
                elif k is not None:
                    source.append(("same", k))
                else:
                    source.append(("kept", len(kept)))
                    kept.append(leaf)
            probe["source"] = source
            return kept

        self.shapes = jax.eval_shape(trace, p, o, x, mb, total_weight)
        self.treedef, self.source = probe["treedef"], probe["source"]

    def _zeros(self):
        """The split backward's zero probes (stage.py): perturbations of the Dense outputs, input taps."""
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self.probes) if self.split else None

    def forward(self, p, o, x, mb, tw):
        return self.fn(p, o, x, mb, tw)

    def linearize(self, p, o, x, mb, tw, zeros=None):
        if not self.split:
            return jax.vjp(lambda p_, o_, x_: self.fn(p_, o_, x_, mb, tw), p, o, x)
        kernels, rest = wgrad.split_kernels(p)
        zeros = self._zeros() if zeros is None else zeros
        return jax.vjp(lambda r, o_, x_, z: self.fn(wgrad.merge_kernels(kernels, r), o_, x_, mb, tw, z),
                       rest, o, x, zeros)

    def keep(self, vjp) -> list:
        leaves = jax.tree.leaves(vjp)
        assert len(leaves) == len(self.source), "residual layout changed between traces"
        return [leaf for leaf, (what, _) in zip(leaves, self.source) if what == "kept"]

    def restore(self, kept: list, p, o):
        params, zeros, leaves = jax.tree.leaves((p, o)), jax.tree.leaves(self._zeros()), []
        for what, j in self.source:
            leaves.append({"param": params, "zero": zeros, "same": leaves, "kept": kept}[what][j])
        return jax.tree.unflatten(self.treedef, leaves)

    def backward(self, vjp, g):
        if not self.split:
            return vjp(g)
        d_rest, d_outer, dx, (d_cots, d_taps) = vjp(g)
        return d_rest, d_outer, dx, jax.tree.leaves((d_taps, d_cots))

    def weight_grads(self, wset, p, part=None):
        """`wset`: the weight-gradient set's leaves, or a function of a layer index returning that layer's;
        `part` = (index, parts): one of `parts` equal layer groups (deferred_wgrad.weight_grads)."""
        def layer(l):
            leaves = wset(l) if callable(wset) else [jax.lax.dynamic_index_in_dim(a, l, 0, keepdims=False)
                                                     for a in wset]
            return jax.tree.unflatten(self.wgrad_treedef, leaves)
        return wgrad.weight_grads(lambda l: layer(l)[0], lambda l: layer(l)[1], p, self.aliases,
                                  self.cfg.scan_unroll, part)


def make_pipeline_grads(cfg: ModelConfig, schedule: Schedule, z_loss: float):
    """Returns (params, microbatched batch [MB, rows, T], total_weight) -> (loss, z, fp32 grads).

    Must be called under `jax.set_mesh(mesh)` (ShardedTrainer.context()) with a `pipeline` axis of
    size `schedule.stages`. loss and z are the weighted sums over all microbatches / total_weight.

    Each slot is one `lax.switch` over the op lists the program uses, then the two ring ppermutes. The
    buffers (stage inputs, gradients, residual and weight-gradient sets) and the gradient accumulators
    go into the switch read-only and come back as what to write: a branch returns the residual set its
    R keeps, the weight-gradient set its I keeps, its parameter gradients and what it sends, and the
    slot writes them in place afterwards. (A buffer passed through a conditional is copied by XLA:
    every buffer would exist twice.)
    """
    prog = compile_program(schedule)
    pp, reps = schedule.stages, schedule.repeats
    dtype = jnp.dtype(cfg.dtype)
    width = prog.microbatch.shape[0]
    tables = {name: jnp.asarray(getattr(prog, name)) for name in
              ("branch", "recv_act", "recv_grad", "res_write", "wg_write", "grad_repeat")}
    tables.update({f"{name}{k}": jnp.asarray(getattr(prog, name)[k]) for name in
                   ("microbatch", "repeat", "part", "act_key", "grad_key", "res_key", "wg_key") for k in range(width)})
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
        # one buffer [slots, *shape]): "res" for R's residual sets (res_key), "wg" for I's weight-gradient
        # sets (zero_bubble; wg_key).
        pools = {"res": [], "wg": []}
        where = {}  # (pos, "res" | "wg") -> per leaf its buffer index in that pool
        slots = {"res": prog.res_slots, "wg": prog.wg_slots}
        for pos in prog.res_positions:
            for pool, leaves in (("res", ops[pos].shapes), ("wg", ops[pos].wgrad_shapes)):
                if not slots[pool]:  # every set of this kind is handed over inside its slot
                    continue
                taken = set()
                where[(pos, pool)] = []
                for leaf in leaves:
                    b = next((n for n, s in enumerate(pools[pool]) if n not in taken and
                              (s.shape, s.dtype) == (leaf.shape, leaf.dtype)), None)
                    if b is None:
                        b = len(pools[pool])
                        pools[pool].append(leaf)
                    taken.add(b)
                    where[(pos, pool)].append(b)

        def f32(t):
            return jax.tree.map(lambda a: a.astype(jnp.float32), t)

        dp_def = jax.tree.structure(take(p_local, 0))
        dp_shapes = [a.shape[1:] for a in jax.tree.leaves(p_local)]

        def put_dp(leaves, dp):
            """Adds one op's dp to the slot's gradient leaves (a None leaf: computed by another op of the
            slot -- zero-bubble's I leaves the kernels to W, a W part the other layers' kernels)."""
            new = jax.tree.leaves(dp, is_leaf=lambda a: a is None)
            assert len(new) == len(leaves)
            return [old if d is None else d.astype(jnp.float32) if old is None else old + d.astype(jnp.float32)
                    for old, d in zip(leaves, new)]

        def run_op(kind, pos, bufs, row, k, out, fresh, keep_res, keep_wg):
            """One op of a slot: adds its results to the slot's `out`; `fresh` hands a residual set (R
            -> V / I) or weight-gradient set (I -> W) to a later op of the same slot."""
            i, r = row[f"microbatch{k}"][me], row[f"repeat{k}"][me]
            mb, p_r, o, so = take(mbs, i), take(p_local, r), sub(pos), ops[pos]
            if kind in "FRB":
                x = zeros_act if pos == "first" else jax.lax.dynamic_index_in_dim(
                    bufs["act"], row[f"act_key{k}"][me], 0, keepdims=False)
            if kind in "BVI":
                if pos == "last":
                    g = (jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32))
                else:
                    g = jax.lax.dynamic_index_in_dim(bufs["grad"], row[f"grad_key{k}"][me], 0, keepdims=False)

            def read(pool):
                key = row[f"{pool}_key{k}"][me]
                return [jax.lax.dynamic_index_in_dim(bufs[pool][b], key, 0, keepdims=False) for b in where[(pos, pool)]]

            if kind == "F":
                return {**out, "send_act": so.forward(p_r, o, x, mb, total_weight)}, fresh
            if kind in "RB":
                y, vjp = so.linearize(p_r, o, x, mb, total_weight)
                if pos == "last":
                    out = {**out, "loss": out["loss"] + y[0], "z": out["z"] + y[1]}
                if kind == "R":
                    kept = so.keep(vjp)
                    if keep_res:
                        new = list(out["res"])
                        for b, leaf in zip(where[(pos, "res")], kept):
                            new[b] = leaf
                        out = {**out, "res": new}
                    return out, {**fresh, "res": kept}
            if kind == "W":
                wset = fresh["wg"] if "wg" in fresh else read("wg")
                part = (row[f"part{k}"][me], prog.w_parts) if prog.w_parts > 1 else None
                return {**out, "dp": put_dp(out["dp"], so.weight_grads(wset, p_r, part))}, fresh
            if kind in "VI":
                vjp = so.restore(fresh["res"] if "res" in fresh else read("res"), p_r, o)
            if kind == "I":
                dp, douter, dx, wset = so.backward(vjp, g)
                fresh = {**fresh, "wg": wset}
                if keep_wg:
                    new = list(out["wg"])
                    for b, leaf in zip(where[(pos, "wg")], wset):
                        new[b] = leaf
                    out = {**out, "wg": new}
            else:
                dp, douter, dx = so.backward(vjp, g)
            out = {**out, "dp": put_dp(out["dp"], dp), "douter": {**out["douter"], **f32(douter)}}
            if pos != "first":
                out = {**out, "send_grad": dx.astype(dtype)}
            return out, fresh

        def make_branch(combo):
            def branch(bufs, row):
                out = {"res": [jnp.zeros(s.shape, s.dtype) for s in pools["res"]],
                       "wg": [jnp.zeros(s.shape, s.dtype) for s in pools["wg"]],
                       "dp": [None] * len(dp_shapes), "douter": {}, "loss": jnp.zeros((), jnp.float32),
                       "z": jnp.zeros((), jnp.float32), "send_act": zeros_act, "send_grad": zeros_act}
                fresh = {}
                for k, (kind, pos, keep) in enumerate(combo):
                    if k:  # the slot's ops run one after another: see _in_order
                        out, fresh = _in_order((out, fresh), serialise)
                    out, fresh = run_op(kind, pos, bufs, row, k, out, fresh, keep and kind == "R", keep and kind == "I")
                dp = [jnp.zeros(shape, jnp.float32) if d is None else d for d, shape in zip(out["dp"], dp_shapes)]
                douter = {key: out["douter"].get(key, jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), v))
                          for key, v in outer.items()}
                return {**out, "dp": jax.tree.unflatten(dp_def, dp), "douter": douter}
            return branch

        branches = [make_branch(c) for c in prog.combos]

        def store(buf, key, value):
            k = jnp.maximum(key, 0)
            old = jax.lax.dynamic_index_in_dim(buf, k, 0, keepdims=False)
            return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(key >= 0, value, old), k, 0)

        def slot(carry, row):
            bufs, acc = carry
            out = jax.lax.switch(row["branch"][me], branches, bufs, row)
            r = row["grad_repeat"][me]
            g_p = jax.tree.map(lambda a, d: jax.lax.dynamic_update_index_in_dim(
                a, jax.lax.dynamic_index_in_dim(a, r, 0, keepdims=False) + d, r, 0), acc["g_p"], out["dp"])
            acc = {"g_p": g_p, "g_outer": jax.tree.map(jnp.add, acc["g_outer"], out["douter"]),
                   "loss": acc["loss"] + out["loss"], "z": acc["z"] + out["z"]}
            bufs = {**bufs, **{pool: [store(b, row[f"{pool}_write"][me], v) for b, v in zip(bufs[pool], out[pool])]
                               for pool in ("res", "wg")}}
            # Every device sends every slot (lockstep); the table says whether the receiver keeps it.
            got_act = jax.lax.ppermute(out["send_act"], AXIS, [(d, (d + 1) % pp) for d in range(pp)])
            got_act, send_grad = _in_order((got_act, out["send_grad"]), serialise)
            got_grad = jax.lax.ppermute(send_grad, AXIS, [(d, (d - 1) % pp) for d in range(pp)])
            bufs = {**bufs, "act": store(bufs["act"], row["recv_act"][me], got_act),
                    "grad": store(bufs["grad"], row["recv_grad"][me], got_grad)}
            return (bufs, acc), None

        zeros32 = lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), t)  # noqa: E731
        bufs = {"act": constrain(jnp.zeros((max(prog.act_slots, 1), *buf_shape), dtype)),
                "grad": constrain(jnp.zeros((max(prog.grad_slots, 1), *buf_shape), dtype)),
                "res": [jnp.zeros((prog.res_slots, *s.shape), s.dtype) for s in pools["res"]],
                "wg": [jnp.zeros((prog.wg_slots, *s.shape), s.dtype) for s in pools["wg"]]}
        acc = {"g_p": zeros32(p_local), "g_outer": zeros32(outer),
               "loss": jnp.zeros((), jnp.float32), "z": jnp.zeros((), jnp.float32)}
        (_, acc), _ = jax.lax.scan(slot, (bufs, acc), tables)
        g_outer, loss, z = jax.lax.psum((acc["g_outer"], acc["loss"], acc["z"]), AXIS)
        return jax.tree.map(lambda a: a[None], acc["g_p"]), g_outer, loss, z

    run = jax.shard_map(body, in_specs=(P(AXIS), P(), P(), P()), out_specs=(P(AXIS), P(), P(), P()),
                        axis_names=frozenset({AXIS}), check_vma=False)

    def pipeline_grads(params, mbs, total_weight):
        params = dict(params)
        layers = split_layers(params.pop("layers"), pp, reps)
        g_layers, g_outer, loss, z = run(layers, params, mbs, jnp.asarray(total_weight, jnp.float32))
        return loss, z, {**g_outer, "layers": merge_layers(g_layers)}

    return pipeline_grads
