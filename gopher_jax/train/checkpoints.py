"""orbax checkpoints of the train state and the data iterator's position.

Async saves (training continues while bytes go to disk), the newest `keep` kept, and restore
onto whatever mesh the caller's shardings describe (a different mesh than the one that saved).

Reliability (docs/reliability.md): orbax writes each step into a temp dir renamed when complete,
and deletes checkpoints beyond `keep` only after the newer one is committed; once a save is on
disk we also record its file sizes (checkpoint_integrity) and, with every step, the gin bindings
of the run. `restore_newest_good` classifies what goes wrong (checkpoint_errors):
- a corrupt or partial checkpoint (positive evidence only: manifest mismatch, a missing or truncated
  file, unreadable metadata) is reported by step and file, moved to `checkpoints_corrupt/` (never
  deleted, by the lead host only), and the previous good one is used;
- any other restore error (PermissionError, a sharding ValueError, an orbax API change) stops the run
  naming the checkpoint and the error (CheckpointRestoreFailed); nothing is moved;
- an intact checkpoint that does not fit the configured state stops the run, naming the gin
  binding that changed (checkpoint_compat); nothing is moved;
- out-of-memory and transient filesystem errors are retried with backoff, then stop the run;
  nothing is moved.
A workdir with checkpoint history (good or quarantined) never silently starts again at step 0:
`check_can_start` refuses without `restart_from_scratch=True` (the `--restart_from_scratch` flag of
`gopher-jax train`), and `restore_newest_good` raises when history exists but nothing restores.
Multi-host (host_agreement.py): the lead host chooses each candidate step and checks its files; every
host then restores that step, and their outcomes are combined (the most severe wins), so all hosts
restore the same step, retry together, fall back together, or stop together.
All file access outside orbax goes through workdir_fs, so gs:// workdirs behave like local ones.
"""
from __future__ import annotations

import json
import os
import sys
import time

import jax
import orbax.checkpoint as ocp

from gopher_jax.train import checkpoint_compat as compat
from gopher_jax.train import checkpoint_integrity as integrity
from gopher_jax.train import host_agreement as agree
from gopher_jax.train import workdir_fs as fs
from gopher_jax.train.checkpoint_errors import (INTEGRITY, RESOURCE, TRANSIENT, CheckpointError, CheckpointMismatch,
                                                CheckpointRestoreFailed, CheckpointUnavailable, NoUsableCheckpoint,
                                                RestoreRetry, RunHistoryExists, _ADVICE, classify, short,
                                                unknown_error, with_retries)

RUN_CONFIG_KEY = "gin_operative_config"  # key of the run's gin bindings in each step's orbax custom metadata


class Checkpointer:
    """Saves/restores {state, data} under `workdir/checkpoints/<step>`."""

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True, *, run_config: str | None = None,
                 retry: RestoreRetry | None = None, restore_fault=None):
        """`run_config`: the gin bindings of this run (gin.operative_config_str()), saved with every
        checkpoint and quoted when a restore does not fit. `retry`: default RestoreRetry() (gin
        `checkpoint_restore.*`). `restore_fault(step, process_index, step_dir)`: test hook
        (faults.Faults.restore_fault) called after this host's read of a checkpoint."""
        self.restore_fault = restore_fault
        # Local paths are made absolute (orbax requires it); URLs such as gs:// pass through.
        root = workdir if "://" in workdir else os.path.abspath(workdir)
        self.workdir = root
        self.directory = fs.join(root, "checkpoints")
        self.corrupt_directory = fs.join(root, "checkpoints_corrupt")
        self.superseded_directory = fs.join(root, "checkpoints_superseded")
        self.run_config = run_config
        self.retry = retry if retry is not None else RestoreRetry()
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                     enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=self._options, item_names=("state", "data"))
        self._lead = jax.process_index() == 0

    def latest_step(self) -> int | None:
        """Returns the newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def step_dir(self, step: int) -> str:
        """Returns the directory of one step's checkpoint."""
        return fs.join(self.directory, str(step))

    def _seal_finished(self) -> None:
        # Called only when no save is in flight, so every listed step is complete on disk.
        if not self._lead:
            return
        for step in self.manager.all_steps():
            d = self.step_dir(step)
            if fs.isdir(d) and not integrity.has_manifest(d):
                integrity.write_manifest(d)

    def save(self, step: int, state, data_state: dict, *, force: bool = False) -> bool:
        """Starts an (async) save of the state and iterator position; returns whether it saved."""
        self.manager.wait_until_finished()  # orbax would wait for the previous save here anyway
        self._seal_finished()
        meta = {RUN_CONFIG_KEY: self.run_config} if self.run_config else None
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=force,
            custom_metadata=meta)

    def saved_run_config(self, step: int) -> str | None:
        """Returns the gin bindings recorded with a checkpoint (None for checkpoints saved without)."""
        # orbax keeps a step's custom metadata in <step>/_CHECKPOINT_METADATA (JSON); read directly, since
        # manager.metadata() also probes every item and warns about each.
        try:
            meta = json.loads(fs.read_text(fs.join(self.step_dir(step), "_CHECKPOINT_METADATA")))
            return (meta.get("custom_metadata") or {}).get(RUN_CONFIG_KEY)
        except Exception:  # noqa: BLE001 — only used to word a message; the restore reports real errors
            return None

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
        return [fs.join(self.directory, n) for n in fs.listdir(self.directory) if integrity.TMP_MARKER in n]

    def history(self) -> list[str]:
        """Returns the paths that show this workdir already trained: checkpoints and quarantined
        checkpoints. Empty for a new run. Interrupted saves (orbax temp dirs, e.g. killed during the
        first save) do not count: nothing restorable was ever there."""
        steps = [fs.join(self.directory, n) for n in fs.listdir(self.directory) if n.isdigit()]
        quarantined = [fs.join(self.corrupt_directory, n) for n in fs.listdir(self.corrupt_directory)
                       if integrity.TMP_MARKER not in n]
        return steps + quarantined

    def check_can_start(self, *, resume: bool, restart_from_scratch: bool = False, report=None) -> None:
        """Refuses (RunHistoryExists) to start at step 0 over checkpoint history unless asked by name.

        Without `resume`, a workdir with history needs `restart_from_scratch`: its checkpoints/ and
        checkpoints_corrupt/ are then moved to checkpoints_superseded/<time>/ (never deleted) and the
        run starts at step 0. With `resume`, nothing happens here (restore_newest_good decides).
        """
        history = self.history()
        if resume or not history:
            return
        if not restart_from_scratch:
            raise RunHistoryExists(
                f"{self.workdir} already holds a run ({self._describe(history)}); nothing was overwritten: "
                f"pass --resume to continue it, --restart_from_scratch to train again from step 0 here (its "
                f"checkpoints are kept in {self.superseded_directory}/), or choose a new --workdir")
        dest = fs.join(self.superseded_directory, time.strftime("%Y%m%d-%H%M%S"))
        if self._lead:
            fs.makedirs(dest)
            for d in (self.directory, self.corrupt_directory):
                if fs.isdir(d):
                    fs.move_tree(d, fs.join(dest, fs.basename(d)))
            fs.makedirs(self.directory)
        if jax.process_count() > 1:  # every host sees the move before anyone saves
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gopher_jax_restart_from_scratch")
        self.manager.reload()
        (report or _stderr)(f"--restart_from_scratch: moved the earlier checkpoints to {dest}; starting at step 0")

    def _describe(self, history: list[str]) -> str:
        steps = sorted(int(fs.basename(p)) for p in history if fs.basename(p).isdigit())
        quarantined = sorted(fs.basename(p) for p in history if not fs.basename(p).isdigit())
        parts = [f"checkpoints of steps {steps}"] if steps else []
        if quarantined:
            parts.append(f"{len(quarantined)} quarantined checkpoint(s) in {self.corrupt_directory}: "
                         f"{', '.join(quarantined[:5])}{', ...' if len(quarantined) > 5 else ''}")
        return "; ".join(parts)

    def restore_newest_good(self, abstract_state, shardings, report=None):
        """Returns (step, state, data_state) of the newest checkpoint that restores, or None when the
        workdir has no checkpoint history at all (a new run).

        Corrupt or partial checkpoints are reported (step and file), moved to checkpoints_corrupt/
        and the previous one is tried. Raises CheckpointMismatch (an intact checkpoint does not fit
        `abstract_state`: a gin binding changed), CheckpointUnavailable (resource/transient errors on
        every retry) — both with nothing moved — and NoUsableCheckpoint when there is history but
        no checkpoint restores.
        """
        report = report or _stderr
        for tmp in self.interrupted_saves():
            where = integrity.quarantine(tmp, self.corrupt_directory) if self._lead else tmp
            report(f"checkpoint: ignoring an interrupted save {tmp} (the process died while writing it); "
                   f"moved to {where}")
        if jax.process_count() > 1:  # every host sees the lead's moves before listing steps
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gopher_jax_restore_listing")
        self.manager.reload()
        bad, tried = [], set()
        while True:
            # The lead's listing decides the candidate (hosts may list a shared bucket at different moments).
            candidates = [s for s in sorted(self.manager.all_steps(), reverse=True) if s not in tried]
            step = agree.from_lead((candidates[0] if candidates else -1) if self._lead else 0)
            if step < 0:
                break
            tried.add(step)
            d = self.step_dir(step)
            outcome = self._agreed_restore(step, abstract_state, shardings, report)
            if not isinstance(outcome, str):
                return (step, *outcome)
            where = integrity.quarantine(d, self.corrupt_directory) if self._lead else d
            older = [c for c in candidates if c < step]
            nxt = f"falling back to step {older[0]}" if older else "no older checkpoint left"
            report(f"checkpoint step {step} is corrupt or partial: {outcome}; moved to {where}; {nxt}")
            bad.append(step)
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils
                multihost_utils.sync_global_devices(f"gopher_jax_quarantined_{step}")
            self.manager.reload()
        history = self.history()
        if bad or history:
            what = (f"none of the checkpoints {bad} restores (moved to {self.corrupt_directory})" if bad else
                    f"it holds no checkpoint that restores, only {self._describe(history)}")
            raise NoUsableCheckpoint(
                f"{self.workdir}: {what}. Training did not start again from step 0. Inspect them, then either "
                f"pass --restart_from_scratch instead of --resume to train from step 0 in this workdir (they are "
                f"kept, moved to {self.superseded_directory}/), or start a new run in a new --workdir")
        return None

    def _agreed_restore(self, step: int, abstract_state, shardings, report):
        """Returns (state, data_state) of `step` on every host, or one sentence saying why it is corrupt.

        The lead checks the files first (manifest, metadata, fit) and tells the others; then every host
        restores and the worst outcome across hosts decides for all: retry (resource/transient, with
        backoff), corrupt (the caller quarantines), or stop (raised on every host, nothing moved).
        """
        d = self.step_dir(step)
        what = f"restoring checkpoint step {step} ({d})"
        verdict, detail = agree.RESTORED, None
        if self._lead:
            verdict, detail = self._lead_checks(step, abstract_state, what)
        verdict = agree.from_lead(verdict)
        if verdict == agree.CORRUPT:
            return detail if self._lead else "the lead host found it corrupt (see process 0's log)"
        if verdict != agree.RESTORED:
            raise detail if self._lead else CheckpointRestoreFailed(
                f"{what}: the lead host (process 0) stopped the restore (see its log); nothing was moved")
        for attempt in range(1, self.retry.attempts + 1):
            code, result = self._local_restore(step, abstract_state, shardings, what)
            worst, codes = agree.worst_outcome(code)
            if worst == agree.RESTORED:
                return result
            hosts = [i for i, c in enumerate(codes) if c == worst]
            if worst == agree.STOP:
                raise result if code == agree.STOP else CheckpointRestoreFailed(
                    f"{what}: process(es) {hosts} failed with an error that is not evidence of corruption (see "
                    f"their logs); every host stops; nothing was moved")
            if worst == agree.CORRUPT:
                return result if code == agree.CORRUPT else f"process(es) {hosts} found it corrupt (see their logs)"
            kind = classify(result) if code == agree.RETRY else "resource or transient"
            mine = short(result) if code == agree.RETRY else f"on process(es) {hosts}, see their logs"
            if attempt == self.retry.attempts:
                raise CheckpointUnavailable(
                    f"{what} failed {self.retry.attempts} time(s) with a {kind} error, last: {mine.rstrip('.')}. "
                    f"Nothing was moved: the checkpoint is kept as it is. What to do: "
                    f"{_ADVICE.get(kind, _ADVICE[TRANSIENT])}") from (result if code == agree.RETRY else None)
            wait = self.retry.wait_s(attempt)
            report(f"{what}: {kind} error on try {attempt} of {self.retry.attempts} ({mine}); trying again in "
                   f"{wait:.1f} s (nothing was moved)")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _lead_checks(self, step: int, abstract_state, what: str):
        """Returns (RESTORED, None) if the files look intact and fit, (CORRUPT, why) or (STOP, the error)."""
        try:
            problem = with_retries(lambda: self._check_files(step, abstract_state), what=what, retry=self.retry,
                                   report=_stderr)
        except CheckpointError as e:
            return agree.STOP, e
        except Exception as e:  # noqa: BLE001 — only integrity errors get here (with_retries re-raises them)
            return agree.CORRUPT, integrity.describe_error(self.step_dir(step), e)
        return (agree.CORRUPT, problem) if problem else (agree.RESTORED, None)

    def _local_restore(self, step: int, abstract_state, shardings, what: str):
        """Returns (outcome code, (state, data) | why corrupt | the exception) of this host's restore."""
        d = self.step_dir(step)
        try:
            result = self.restore(step, abstract_state, shardings)
            if self.restore_fault is not None:
                self.restore_fault(step, jax.process_index(), d)
            return agree.RESTORED, result
        except CheckpointError as e:
            return agree.STOP, e
        except Exception as e:  # noqa: BLE001 — classified: only positive evidence of corruption quarantines
            kind = classify(e)
            if kind == INTEGRITY:
                return agree.CORRUPT, integrity.describe_error(d, e)
            if kind in (RESOURCE, TRANSIENT):
                return agree.RETRY, e
            error = unknown_error(what, e)
            error.__cause__ = e
            return agree.STOP, error

    def _check_files(self, step: int, abstract_state) -> str | None:
        """Returns a sentence if the checkpoint's files are corrupt (manifest, metadata), else None.

        Raises CheckpointMismatch if the saved tree does not fit `abstract_state` (nothing is read), and
        lets other errors through for the caller to classify.
        """
        d = self.step_dir(step)
        problem = integrity.verify(d)
        if problem is not None:
            return problem
        try:
            saved = compat.flatten_saved(compat.saved_state_tree(d))
        except Exception as e:  # noqa: BLE001 — classified: unreadable metadata is corruption
            if classify(e) != INTEGRITY:
                raise
            return integrity.describe_error(d, e)
        if saved:  # an empty tree (unreadable metadata) is left to the restore to judge
            reasons = compat.explain_mismatch(saved, compat.flatten_target(abstract_state),
                                              self.saved_run_config(step), self.run_config)
            if reasons:
                raise CheckpointMismatch(
                    f"checkpoint step {step} ({d}) does not fit the train state this config builds:\n"
                    + "".join(f"  - {r}\n" for r in reasons)
                    + "Nothing was moved: the checkpoint is intact. Resume with the bindings the run was saved "
                      "with, or start a new run in a new --workdir (or pass --restart_from_scratch to train "
                      "from step 0 here, keeping these checkpoints aside).")
        return None

    def wait(self) -> None:
        """Blocks until pending async saves are on disk."""
        self.manager.wait_until_finished()
        self._seal_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
