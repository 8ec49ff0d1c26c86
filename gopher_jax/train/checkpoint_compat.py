"""Does an intact checkpoint fit the configured train state? If not, which gin binding changed?

Compares the array metadata orbax saved (tree paths, shapes, dtypes: no array is read) with the
abstract train state the current gin config builds, and turns the difference into sentences that
name the binding most likely responsible:

    spike guard present / absent         -> train.spike_policy
    fp32 master copy, parameter dtype    -> ModelConfig.param_dtype
    parameter paths or shapes            -> the ModelConfig shape fields
    optimizer state layout               -> optimizer.name, optimizer.clip_norm

The Checkpointer saves the gin bindings of the run with every checkpoint (orbax custom metadata);
when they are there, each sentence quotes the value the run was saved with.
"""
from __future__ import annotations

import collections
import re
from typing import Mapping

import jax
import numpy as np

from gopher_jax.train.spikes import SpikeGuardState

Key = tuple  # a leaf's path: str field/dict names and int sequence indices
Leaf = tuple  # (shape, dtype name)

_GUARD_COUNTERS = tuple(f for f in SpikeGuardState._fields if f != "inner")
# ModelConfig fields that change no array of the train state (the rest may).
_NOT_STRUCTURAL = {"attention_impl", "matmul_impl", "remat_policy", "scan_unroll", "dtype", "init_std", "embed_init_std",
                   "norm_eps", "rope_theta"}
_BINDING = re.compile(r"^([A-Za-z_][\w.]*)\s*=\s*(.*)$")


def saved_state_tree(step_dir: str):
    """Returns the nested metadata tree (ArrayMetadata leaves) of a checkpoint's `state` item."""
    import orbax.checkpoint as ocp
    from etils import epath

    return ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir) / "state").tree


def flatten_saved(tree) -> dict[Key, Leaf]:
    """Returns {path: (shape, dtype)} of every array in a saved metadata tree (dicts and lists)."""
    out = {}

    def walk(x, key):
        if isinstance(x, Mapping):
            for k, v in x.items():
                walk(v, key + (str(k),))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, key + (i,))
        elif x is not None and hasattr(x, "shape"):
            out[key] = (tuple(x.shape), np.dtype(x.dtype).name)

    walk(tree, ())
    return out


def flatten_target(abstract_state) -> dict[Key, Leaf]:
    """Returns {path: (shape, dtype)} of the abstract train state, keyed like `flatten_saved`."""
    def part(k):
        if isinstance(k, jax.tree_util.SequenceKey):
            return k.idx
        if isinstance(k, jax.tree_util.GetAttrKey):
            return k.name
        if isinstance(k, jax.tree_util.DictKey):
            return str(k.key)
        return str(getattr(k, "key", k))

    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    return {tuple(part(k) for k in path): (tuple(x.shape), np.dtype(x.dtype).name) for path, x in leaves}


def path_str(key: Key) -> str:
    """Returns a readable path: opt_state.inner[1][0].mu.layers.mlp.wi.kernel."""
    s = ""
    for k in key:
        s += f"[{k}]" if isinstance(k, int) else (f".{k}" if s else k)
    return s


def parse_bindings(config_text: str | None) -> dict[str, str]:
    """Returns {"train.spike_policy": "'skip'", ...} from gin config text (one-line bindings)."""
    out = {}
    for line in (config_text or "").splitlines():
        m = _BINDING.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _has_guard(flat) -> bool:
    return any(k[:2] == ("opt_state", "loss_ema") for k in flat)


def _unguarded(flat) -> dict:
    """The state as it would be without the guard: opt_state.inner becomes opt_state."""
    out = {}
    for k, v in flat.items():
        if k[:1] == ("opt_state",) and len(k) > 1 and k[1] in _GUARD_COUNTERS:
            continue
        out[("opt_state",) + k[2:] if k[:2] == ("opt_state", "inner") else k] = v
    return out


def _sub(flat, head) -> dict:
    return {k[1:]: v for k, v in flat.items() if k[:1] == (head,)}


def _param_dtype(params: dict) -> str | None:
    counts = collections.Counter(dtype for _, dtype in params.values())
    return counts.most_common(1)[0][0] if counts else None


def _optimizer_layout(flat) -> set:
    """Paths of the optimizer state with every copy of the parameter tree folded into "<params>"."""
    suffixes = set(_sub(flat, "params"))
    out = set()
    for key in _sub(flat, "opt_state"):
        for i in range(len(key)):
            if key[i:] in suffixes:
                key = key[:i] + ("<params>",)
                break
        out.add(key)
    return out


class _Said:
    """Quotes a binding's value when the saved and current configs are known."""

    def __init__(self, saved: dict, current: dict):
        self.saved, self.current = saved, current

    def was(self, name: str, inferred: str) -> str:
        value = self.saved.get(name, inferred)
        now = self.current.get(name)
        return f"{name}={value}" + (f" (now {now})" if now is not None and now != value else "")

    def changed(self, names) -> list[str]:
        return [self.was(n, "?") for n in names
                if n in self.saved and n in self.current and self.saved[n] != self.current[n]]


def explain_mismatch(saved: dict[Key, Leaf], target: dict[Key, Leaf], saved_config: str | None = None,
                     current_config: str | None = None) -> list[str]:
    """Returns one sentence per difference between a saved and a target state ([] if they fit)."""
    if saved == target:
        return []
    said = _Said(parse_bindings(saved_config), parse_bindings(current_config))
    out = []
    s_guard, t_guard = _has_guard(saved), _has_guard(target)
    if t_guard and not s_guard:
        out.append("optimizer state has no spike guard: the run was saved with "
                   + said.was("train.spike_policy", "'none'"))
    elif s_guard and not t_guard:
        out.append("optimizer state has a spike guard: the run was saved with "
                   + said.was("train.spike_policy", "'skip' or 'rewind'"))
    s, t = (_unguarded(saved) if s_guard else saved), (_unguarded(target) if t_guard else target)

    s_params, t_params = _sub(s, "params"), _sub(t, "params")
    s_dtype, t_dtype = _param_dtype(s_params), _param_dtype(t_params)
    s_master, t_master = bool(_sub(s, "master")), bool(_sub(t, "master"))
    if s_dtype != t_dtype or s_master != t_master:
        copy = "with" if s_master else "without"
        out.append(f"parameters were saved as {s_dtype} {copy} an fp32 master copy: the run was saved with "
                   + said.was("ModelConfig.param_dtype", f"'{s_dtype}'"))

    shapes = [(k, s_params.get(k, (None,))[0], t_params.get(k, (None,))[0]) for k in sorted(
        set(s_params) | set(t_params), key=str) if s_params.get(k, (None,))[0] != t_params.get(k, (None,))[0]]
    if shapes:
        examples = "; ".join(f"params.{path_str(k)} is {a if a is not None else 'absent'} in the checkpoint, "
                             f"{b if b is not None else 'absent'} now" for k, a, b in shapes[:4])
        names = sorted(n for n in set(said.saved) | set(said.current)
                       if n.startswith("ModelConfig.") and n.split(".", 1)[1] not in _NOT_STRUCTURAL)
        changed = said.changed(names)
        why = ("the run was saved with " + ", ".join(changed)) if changed else (
            "a ModelConfig shape field changed (num_layers, d_model, num_heads, num_kv_heads, head_dim, d_ff, "
            "vocab_size, mlp, position, tie_embeddings, use_bias, norm, scan_layers)")
        out.append(f"model shape differs in {len(shapes)} parameter(s) ({examples}): {why}")

    s_opt, t_opt = _optimizer_layout(s), _optimizer_layout(t)
    if s_opt != t_opt:
        changed = said.changed(["optimizer.name", "optimizer.clip_norm"])
        why = ("the run was saved with " + ", ".join(changed)) if changed else (
            "optimizer.name (adam / adamw) or optimizer.clip_norm (0 removes clipping) differs from the run "
            "that wrote it")
        only_saved = sorted(path_str(k) for k in s_opt - t_opt)[:3]
        only_now = sorted(path_str(k) for k in t_opt - s_opt)[:3]
        out.append(f"optimizer state layout differs (only in the checkpoint: {', '.join(only_saved) or '-'}; "
                   f"only now: {', '.join(only_now) or '-'}): {why}")

    if not out:  # e.g. a counter's dtype: name the first few differing leaves
        diff = sorted((k for k in set(saved) | set(target) if saved.get(k) != target.get(k)), key=str)
        out.append("arrays differ: " + "; ".join(
            f"{path_str(k)} is {saved.get(k, 'absent')} in the checkpoint, {target.get(k, 'absent')} now"
            for k in diff[:4]))
    return out
