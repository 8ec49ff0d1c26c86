"""orbax checkpoints of the train state and the data iterator's position.

Async saves (training continues while bytes go to disk), the newest `keep` kept, and restore
onto whatever mesh the caller's shardings describe (a different mesh than the one that saved).

Reliability (docs/reliability.md): orbax writes each step into a temp dir renamed when complete,
and deletes checkpoints beyond `keep` only after the newer one is committed; once a save is on
disk we also record its file sizes (checkpoint_integrity). `restore_newest_good` skips a corrupt
or partial newest checkpoint — reporting the step and file, moving it to `checkpoints_corrupt/`
rather than deleting it — and falls back to the previous good one.
"""
from __future__ import annotations

import os
import sys

import jax
import orbax.checkpoint as ocp

from gopher_jax.train import checkpoint_integrity as integrity


class Checkpointer:
    """Saves/restores {state, data} under `workdir/checkpoints/<step>`."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
        # Local paths are made absolute (orbax requires it); URLs such as gs:// pass through.
        root = workdir if "://" in workdir else os.path.abspath(workdir)
        self.directory = os.path.join(root, "checkpoints")
        self.corrupt_directory = os.path.join(root, "checkpoints_corrupt")
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                     enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "data"))
        self._lead = jax.process_index() == 0

    def latest_step(self) -> int | None:
        """Returns the newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def step_dir(self, step: int) -> str:
        """Returns the directory of one step's checkpoint."""
        return os.path.join(self.directory, str(step))

    def _seal_finished(self) -> None:
        # Called only when no save is in flight, so every listed step is complete on disk.
        if not self._lead:
            return
        for step in self.manager.all_steps():
            d = self.step_dir(step)
            if os.path.isdir(d) and not integrity.has_manifest(d):
                integrity.write_manifest(d)

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        """Starts an (async) save of the state and iterator position; returns whether it saved."""
        self.manager.wait_until_finished()  # orbax would wait for the previous save here anyway
        self._seal_finished()
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force)

    def restore(self, step: int | None, abstract_state, shardings):
        """Returns (state, data_state) of `step` (default newest), placed with `shardings`."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}; start without --resume")
        target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              abstract_state, shardings)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def restore_params(self, step: int, abstract_params):
        """Returns only `state.params` of `step`, each leaf placed with its ShapeDtypeStruct's sharding.

        A partial orbax restore: the optimizer state, fp32 master copy and data-iterator state
        stay on disk (never read, never allocated), so eval of a big model needs params memory
        only. Same on-disk layout as `save` writes; use a fresh Checkpointer (a manager that
        already saved binds the `state` item to StandardSave's handler).
        """
        restore_args = jax.tree.map(
            lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
            abstract_params)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item={"params": abstract_params}, restore_args={"params": restore_args}, partial_restore=True)))
        return restored["state"]["params"]

    def interrupted_saves(self) -> list[str]:
        """Returns orbax temp dirs left by saves that never completed (process killed mid-write)."""
        if not os.path.isdir(self.directory):
            return []
        return sorted(os.path.join(self.directory, n) for n in os.listdir(self.directory) if integrity.TMP_MARKER in n)

    def restore_newest_good(self, abstract_state, shardings, report=None):
        """Returns (step, state, data_state) of the newest checkpoint that restores, or None if there
        is none. Bad ones are reported (step and file) and moved to checkpoints_corrupt/.

        Raises RuntimeError if checkpoints exist but none of them restores.
        """
        report = report or (lambda msg: print(msg, file=sys.stderr, flush=True))
        for tmp in self.interrupted_saves():
            where = integrity.quarantine(tmp, self.corrupt_directory) if self._lead else tmp
            report(f"checkpoint: ignoring an interrupted save {tmp} (the process died while writing it); "
                   f"moved to {where}")
        self.manager.reload()
        steps = sorted(self.manager.all_steps(), reverse=True)
        bad = []
        for i, step in enumerate(steps):
            d = self.step_dir(step)
            problem = integrity.verify(d)
            if problem is None:
                try:
                    state, data_state = self.restore(step, abstract_state, shardings)
                    return step, state, data_state
                except Exception as e:  # noqa: BLE001 — any failure here means "this checkpoint is unusable"
                    problem = integrity.describe_error(d, e)
            where = integrity.quarantine(d, self.corrupt_directory) if self._lead else d
            nxt = f"falling back to step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint left"
            report(f"checkpoint step {step} is corrupt or partial: {problem}; moved to {where}; {nxt}")
            bad.append(step)
            self.manager.reload()
        if bad:
            raise RuntimeError(f"none of the checkpoints {bad} in {self.directory} restores (moved to "
                               f"{self.corrupt_directory}); start a new run in a new --workdir")
        return None

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()
        self._seal_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()
