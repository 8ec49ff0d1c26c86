"""Logical-axis rules: the one table that maps model axis names to mesh axes.

The table is a gin parameter (`sharding_rules.rules`), so each strategy in
`gin_configs/parallel/*.gin` is a table, never a regex over parameter paths. Rules are tried in
order and a mesh axis is used at most once per array, so `batch` (activations) takes
`data`+`fsdp` first and `embed` falls back to replicated on activations while parameters,
which have no batch axis, shard `embed` over `fsdp` (ZeRO-3).
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import gin
import jax
from jax.sharding import NamedSharding, PartitionSpec

from gopher_jax.model import axes

Rules = Sequence[tuple[str, object]]

# data + fsdp + tensor together; sizes of 1 make any part a no-op, so this one table serves
# pure data parallel, FSDP, tensor parallel and their combinations.
DEFAULT_RULES: Rules = (
    (axes.BATCH, ("data", "fsdp")),
    (axes.LENGTH, None),
    (axes.EMBED, "fsdp"),
    (axes.HEADS, "tensor"),
    (axes.KV_HEADS, "tensor"),
    (axes.KV, None),
    (axes.MLP, "tensor"),
    (axes.VOCAB, "tensor"),
    (axes.LAYERS, None),
    (axes.NORM, None),
    (axes.POSITIONS, None),
)


@gin.configurable
def sharding_rules(rules: Rules = DEFAULT_RULES) -> tuple[tuple[str, object], ...]:
    """Returns the active rules table, checked: every model axis has a rule, mesh axes exist."""
    rules = tuple((str(k), tuple(v) if isinstance(v, list) else v) for k, v in rules)
    names = {k for k, _ in rules}
    missing = [a for a in axes.ALL if a not in names]
    if missing:
        raise ValueError(f"sharding_rules.rules has no entry for logical axes {missing}; "
                         f"add e.g. ('{missing[0]}', None) to keep them replicated")
    from gopher_jax.parallel.mesh import MESH_AXES
    for k, v in rules:
        for m in (v if isinstance(v, tuple) else (v,)):
            if m is not None and m not in MESH_AXES:
                raise ValueError(f"sharding_rules.rules maps {k!r} to unknown mesh axis {m!r}; "
                                 f"mesh axes are {MESH_AXES}")
    return rules


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> PartitionSpec:
    """Returns the PartitionSpec for one array's logical axis names."""
    return nn.logical_to_mesh_axes(tuple(names), rules)


def param_shardings(boxed_tree, mesh: jax.sharding.Mesh, rules: Rules):
    """Returns NamedShardings matching an (abstract) tree of boxed `nn.Partitioned` leaves.

    A dimension that its mesh axes do not divide (e.g. one MQA key/value head over tensor=2) is
    replicated instead of failing: correct, only less memory-efficient. Mesh axes of size 1 are
    dropped so specs read as what actually happens.
    """

    def one(leaf):
        if not isinstance(leaf, nn.Partitioned):
            return NamedSharding(mesh, PartitionSpec())
        spec = logical_to_spec(leaf.names, rules)
        shape = leaf.value.shape  # .unbox() would add a sharding constraint
        fixed = []
        for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
            names = _live_axes(entry, mesh)
            size = 1
            for n in names:
                size *= mesh.shape[n]
            fixed.append(_entry(names) if dim % size == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*fixed))

    return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def _live_axes(entry, mesh) -> tuple[str, ...]:
    """Mesh axes of one PartitionSpec entry, without those of size 1."""
    names = entry if isinstance(entry, tuple) else (entry,) if entry else ()
    return tuple(n for n in names if mesh.shape[n] > 1)


def _entry(names: tuple[str, ...]):
    return None if not names else names[0] if len(names) == 1 else names


def batch_sharding(mesh: jax.sharding.Mesh, rules: Rules) -> NamedSharding:
    """Returns the sharding of [batch, length] input arrays."""
    spec = logical_to_spec((axes.BATCH, axes.LENGTH), rules)
    return NamedSharding(mesh, PartitionSpec(*(_entry(_live_axes(e, mesh)) for e in spec)))
