"""The training input over packed stores: a tracked mixture of components, addressable by position.

Global row g of the run comes from the component the MT-NLG deficit tracker picks for draw g
(`mixture.BlendTracker`, mode "deficit": deterministic, every share within 1/n of its target);
the k-th row drawn from a component of N rows is row `permute(k mod N, N, epoch_key(seed, c, k // N))`
of its store: a fresh order every epoch, no shuffle buffer. So the whole stream is a function of
(seed, weights, stores), and its position is the tracker's per-component counts: restoring it
costs the same after 10 or 10 million batches, and it does not depend on how many hosts read it.
Each host reads only its own slice of every global batch (rows [p*B/P, (p+1)*B/P)).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from gopher_jax.data import index_shuffle, packing
from gopher_jax.data.mixture import BlendTracker, normalize_weights
from gopher_jax.data.packed_store import PackedStore

STATE_KIND = "packed_mixture"
STATE_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Component:
    """One mixture component: its name (the seqio task), target weight and packed train rows."""

    name: str
    weight: float
    store: PackedStore


def _fingerprint(store: PackedStore) -> dict:
    m = store.meta
    return {"rows": m.rows, "vocab_sha256": m.vocab_sha256[:16], "seq_len": m.seq_len}


class MixtureBatches:
    """Iterator of this host's packed batches (dicts of numpy [local_batch, seq_len] arrays).

    `get_state()` is JSON; `set_state()` continues exactly there, with any host count.
    `last_components` holds the component index of each row of the last batch (for accounting).
    """

    def __init__(self, components: Sequence[Component], *, global_batch: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        if not components:
            raise ValueError("a mixture needs at least one component with data")
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} does not divide over {process_count} processes")
        seq_lens = {c.store.meta.seq_len for c in components}
        if len(seq_lens) != 1:
            raise ValueError(f"components were packed for different seq_len {sorted(seq_lens)}")
        empty = [c.name for c in components if c.store.rows == 0]
        if empty:
            raise ValueError(f"components {empty} have no rows to train on; leave them out of the mixture")
        self.components = list(components)
        self.names = [c.name for c in components]
        self.weights = normalize_weights({c.name: c.weight for c in components})
        self.seq_len = seq_lens.pop()
        self.global_batch = global_batch
        self.seed = seed
        self.process_index, self.process_count = process_index, process_count
        self.local_batch = global_batch // process_count
        self._tracker = BlendTracker(self.weights, mode="deficit")
        self.last_components = np.zeros((0,), np.int32)

    def set_global_batch(self, global_batch: int) -> None:
        """Draws `global_batch` rows per batch from now on (train.batch_ramp); the stream itself is unchanged."""
        if global_batch <= 0 or global_batch % self.process_count:
            raise ValueError(f"global batch {global_batch} does not divide over {self.process_count} processes")
        self.global_batch, self.local_batch = global_batch, global_batch // self.process_count

    def __iter__(self) -> "MixtureBatches":
        return self

    def _draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Draws n global rows; returns (component index, k-th draw of that component) per row."""
        comp = np.empty(n, np.int64)
        k = np.empty(n, np.int64)
        index = {name: i for i, name in enumerate(self.names)}
        for j in range(n):
            name = self._tracker.next()
            comp[j], k[j] = index[name], self._tracker.counts[name] - 1
        return comp, k

    def _rows(self, comp: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        targets = np.zeros((len(comp), self.seq_len), np.int32)
        segments = np.zeros_like(targets)
        for c in np.unique(comp):
            sel = np.nonzero(comp == c)[0]
            store = self.components[c].store
            n = store.rows
            kk = k[sel]
            rows = np.empty(len(sel), np.int64)
            for epoch in np.unique(kk // n):
                at = kk // n == epoch
                rows[at] = index_shuffle.permute(kk[at] % n, n, index_shuffle.epoch_key(self.seed, int(c), int(epoch)))
            t, s, _ = store.read(rows)
            targets[sel], segments[sel] = t, s
        return targets, segments

    def __next__(self) -> dict[str, np.ndarray]:
        comp, k = self._draw(self.global_batch)
        lo = self.process_index * self.local_batch
        comp, k = comp[lo:lo + self.local_batch], k[lo:lo + self.local_batch]
        targets, segments = self._rows(comp, k)
        self.last_components = comp.astype(np.int32)
        return packing.decoder_features(targets, segments)

    @property
    def rows_drawn(self) -> int:
        return self._tracker.total

    def realized(self) -> dict[str, float]:
        """Returns each component's share of all global rows drawn so far."""
        return self._tracker.realized()

    def epochs(self) -> dict[str, float]:
        """Returns rows drawn / rows available per component (> 1: that component is being repeated)."""
        return {c.name: self._tracker.counts[c.name] / c.store.rows for c in self.components}

    def get_state(self) -> dict:
        """Returns the position (rows drawn per component) and what it is a position in, as JSON types."""
        return {"kind": STATE_KIND, "version": STATE_VERSION, "seed": self.seed, "seq_len": self.seq_len,
                "rows_drawn": self._tracker.total, "batches_consumed": self._tracker.total // self.global_batch,
                "counts": {n: int(self._tracker.counts[n]) for n in self.names},
                # Each component's epoch permutation is keyed by its position (epoch_key(seed, index, epoch)) and
                # the deficit tracker breaks ties in this order: the order is part of the position.
                "order": list(self.names),
                "weights": dict(self.weights),
                "components": {c.name: _fingerprint(c.store) for c in self.components}}

    def set_state(self, state: Mapping) -> None:
        """Continues from `state` (from get_state, any host count); raises ValueError naming what differs."""
        if state.get("fresh") and state.get("kind") == STATE_KIND:
            self._tracker = BlendTracker(self.weights, mode="deficit")
            return
        if state.get("kind") != STATE_KIND or state.get("version") != STATE_VERSION:
            raise ValueError(f"data-iterator state kind={state.get('kind')!r} version={state.get('version')!r} is "
                             f"not a {STATE_KIND} v{STATE_VERSION} position: the run was saved with another input "
                             "pipeline (train.train_task) or gopher_jax version")
        problems = []
        if state.get("seed") != self.seed:
            problems.append(f"train.seed was {state.get('seed')}, now {self.seed}")
        if state.get("seq_len") != self.seq_len:
            problems.append(f"train.seq_len was {state.get('seq_len')}, now {self.seq_len}")
        saved = state.get("components", {})
        now = {c.name: _fingerprint(c.store) for c in self.components}
        if set(saved) != set(now):
            problems.append(f"mixture components were {sorted(saved)}, now {sorted(now)}")
        else:
            problems += [f"component {n} was {saved[n]}, now {now[n]} (its data or tokenizer changed)"
                         for n in now if saved[n] != now[n]]
        if "order" in state and set(state["order"]) == set(self.names) and list(state["order"]) != self.names:
            problems.append(f"the mixture's component order was {list(state['order'])}, now {self.names}: row order "
                            f"is keyed by position, so reordering would silently change it; list the components in "
                            f"the original order (register_massivetext_tasks.weights, or the seqio mixture's tasks)")
        saved_w = state.get("weights", {})
        if set(saved_w) == set(self.weights) and any(not math.isclose(saved_w[n], self.weights[n], rel_tol=1e-9)
                                                     for n in self.weights):
            problems.append(f"mixture weights were {saved_w}, now {self.weights}")
        if problems:
            raise ValueError("cannot continue the data stream of this checkpoint: " + "; ".join(problems)
                             + ". Resume with the run's original data config (see its config.gin), or start a new run")
        self._tracker = BlendTracker(self.weights, mode="deficit")
        self._tracker.counts.update({n: int(c) for n, c in state["counts"].items() if c})


def fresh_state() -> dict:
    """Returns the position "no row drawn yet", valid for any mixture: the data state of a checkpoint
    written before any training (e.g. by `gopher-jax import`), which `--resume` starts from the top."""
    return {"kind": STATE_KIND, "version": STATE_VERSION, "fresh": True, "rows_drawn": 0, "batches_consumed": 0}


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """The held-out rows of one component, scored in order: the first `rows` rows of its store."""

    name: str
    store: PackedStore
    rows: int

    def batches(self, global_batch: int, process_index: int = 0, process_count: int = 1):
        """Yields (this host's feature dict, global row bytes) per global batch; the last is zero-padded."""
        local = global_batch // process_count
        for start in range(0, self.rows, global_batch):
            idx = np.arange(start, min(start + global_batch, self.rows))
            targets, segments, nbytes = self.store.read(idx)
            pad = global_batch - len(idx)
            if pad:
                targets = np.concatenate([targets, np.zeros((pad, targets.shape[1]), np.int32)])
                segments = np.concatenate([segments, np.zeros((pad, segments.shape[1]), np.int32)])
            lo = process_index * local
            yield packing.decoder_features(targets[lo:lo + local], segments[lo:lo + local]), int(nbytes.sum())


def eval_set(name: str, store: PackedStore, global_batch: int, max_batches: int) -> EvalSet:
    """Returns the EvalSet of a validation store: all its rows, or the first max_batches global batches."""
    rows = store.rows if not max_batches else min(store.rows, max_batches * global_batch)
    return EvalSet(name, store, rows)
