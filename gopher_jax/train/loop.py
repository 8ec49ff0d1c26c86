"""The training loop: data -> sharded steps -> metrics, held-out loss, checkpoints, resume.

`train()` sets the run up and steps it; what changes while it trains is one `RunState` (run_state.py)
that the loop's parts below read and update. Each part's logic is its own module, unit-tested without a
subprocess (tests/train/test_loop_parts.py): when to log/evaluate/checkpoint (cadence.py), tokens/s
(throughput_window.py), held-out metrics (evaluation.py), the spike policy (spike_monitor.py),
preemption (preemption.py), what all hosts must agree on (host_agreement.py) and goodput (goodput.py). Reliability (docs/reliability.md): configs are validated before
compiling; resume takes the newest checkpoint that restores and stops, naming the gin binding, on
one that does not fit; SIGTERM on any host makes all hosts stop at the same step, write one checkpoint
and exit with signals.EXIT_PREEMPTED; the spike policy
drops bad updates and can rewind, stopping with spikes.EXIT_DIVERGED past its limit.
"""
from __future__ import annotations

import dataclasses
import json
import sys

import gin
import jax
import numpy as np

from gopher_jax.data.training_data import build_training_data
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import sharding_rules
from gopher_jax.train import host_agreement, spike_monitor, workdir_fs
from gopher_jax.train.cadence import Cadence
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.evaluation import evaluate_components, load_eval_sets, mixture_shares
from gopher_jax.train.faults import Faults
from gopher_jax.train.goodput import Goodput
from gopher_jax.train.metrics_log import MetricsLog
from gopher_jax.train.preemption import stop_for_preemption
from gopher_jax.train.run_state import RunState
from gopher_jax.train.sharded import build_trainer
from gopher_jax.train.signals import StopRequest
from gopher_jax.train.spikes import TrainingDiverged
from gopher_jax.train.throughput_window import ThroughputWindow
from gopher_jax.train.token_budget import batch_at_step
from gopher_jax.train.validate import validate


def resolve_tokenizer(train_config: TrainConfig | None = None, model_config: ModelConfig | None = None
                      ) -> tuple[str, int]:
    """Returns (SentencePiece model path, its piece count): train.tokenizer, else the embedded one
    (trained on the embedded mixture at ModelConfig.vocab_size and cached)."""
    from gopher_jax.data import tokenizer

    train_config, model_config = train_config or TrainConfig(), model_config or ModelConfig()
    path = train_config.tokenizer or tokenizer.ensure_embedded_tokenizer(model_config.vocab_size)
    return path, tokenizer.load(path).get_piece_size()


def _flops_per_token(model_config: ModelConfig, seq_len: int) -> float:
    from gopher_jax.train.mfu import model_flops_per_token
    return model_flops_per_token(model_config, seq_len)


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What stays fixed while a run trains: configs, the compiled trainer, data and eval sets, peak FLOP/s."""

    model_cfg: ModelConfig
    train_cfg: TrainConfig
    trainer: object
    td: object  # training_data.TrainingData
    eval_sets: dict
    peak_info: object
    faults: Faults


def train(workdir: str, *, resume: bool = False, progress: bool = True, train_task: str = "",
          restart_from_scratch: bool = False) -> dict:
    """Trains the gin-configured model in `workdir` on the seqio task or mixture `train_task` (default
    train.train_task; `gopher-jax train` registers the data first, see data_tasks); returns the summary.

    Writes metrics.jsonl, tensorboard/, checkpoints/, config.gin, loss_curve.png and summary.json
    (through workdir_fs, so a gs:// workdir works like a local one).
    Raises signals.Preempted after checkpointing on SIGTERM and spikes.TrainingDiverged past the
    spike policy's limit (both SystemExit: the process exits with their documented codes).
    """
    goodput = Goodput()
    setup, rs = _start(workdir, resume, progress, train_task, restart_from_scratch, goodput)
    with StopRequest() as stop, setup.trainer.context():
        while rs.step < setup.train_cfg.steps:
            _train_step(setup, rs)
            stopping = host_agreement.stop_now(rs.step, stop.requested, setup.train_cfg.stop_check_every)
            _log_and_evaluate(setup, rs)
            is_ckpt = rs.cadence.checkpoints(rs.step)
            if _watch_spikes(setup, rs, is_ckpt, stopping):
                continue  # rewound: the loop carries on from the restored step
            if is_ckpt:
                rs.save(force=rs.cadence.is_last(rs.step))
            if stopping and not rs.cadence.is_last(rs.step):
                goodput.finish()
                stop_for_preemption(rs.step, stop.signal_name or "SIGTERM on another host", rs.ckpt, rs.log,
                                    save=lambda: rs.save(force=True), already_saved=rs.last_saved == rs.step,
                                    close_progress=rs.close_progress, record=goodput.breakdown())
    goodput.finish()
    rs.close_progress()
    rs.ckpt.close()
    return _finish(setup, rs)


def _start(workdir, resume, progress, train_task, restart_from_scratch, goodput) -> tuple[RunSetup, RunState]:
    """Validates, builds data and trainer, restores (or initialises); returns the setup and the run state."""
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh_cfg, rules, faults = MeshConfig(), sharding_rules(), Faults()
    lead = jax.process_index() == 0
    nproc = jax.process_count()
    workdir_fs.makedirs(workdir)
    # The run's bindings are saved with each checkpoint: a resume that does not fit names what changed.
    ckpt = Checkpointer(workdir, keep=train_cfg.keep_checkpoints, run_config=gin.operative_config_str(),
                        restore_fault=faults.restore_fault)
    # Never step 0 over earlier checkpoints (kept or quarantined) unless asked by name (RunHistoryExists).
    ckpt.check_can_start(resume=resume, restart_from_scratch=restart_from_scratch)
    vocab_path, pieces = resolve_tokenizer(train_cfg, model_cfg)
    # Every config mismatch at once, before compiling anything (a bad gin override costs seconds).
    validate(model_cfg, train_cfg, mesh_cfg, rules, num_devices=jax.device_count(), num_processes=nproc,
             tokenizer_pieces=pieces)

    train_task = train_task or train_cfg.train_task
    if not train_task:
        raise ValueError("no training data: set train.train_task to a registered seqio task or mixture, or run "
                         "through `gopher-jax train`, which registers the embedded mixture (or the MassiveText "
                         "one of gin_configs/data/massivetext.gin) first")
    # Packs (or reuses the packed cache of) every component before compiling: bad data fails fast.
    td = build_training_data(train_task, seq_len=train_cfg.seq_len, global_batch=train_cfg.batch_size,
                             seed=train_cfg.seed, eval_batches=train_cfg.eval_batches, eval_task=train_cfg.eval_task,
                             process_index=jax.process_index(), process_count=nproc, progress=lead and progress)
    data = td.train
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, build_mesh(mesh_cfg), rules)
    # Host-side counters that must survive a resume travel with the data-iterator state.
    monitor = spike_monitor.SpikeMonitor(train_cfg.spike_policy, train_cfg.max_skipped_updates,
                                         train_cfg.max_rewinds)
    log = MetricsLog(workdir, enabled=lead)
    with goodput.phase("restore"):
        found = ckpt.restore_newest_good(trainer.abstract_state, trainer.state_shardings) if resume else None
    if found is not None:
        restored_step, state, data_state = found
        data.set_state(data_state)  # a position in the global stream: any host count resumes it
        monitor.rewinds = data_state.get("reliability", {}).get("rewinds", 0)
        # Steps the earlier run(s) reached past this checkpoint are trained again: goodput's "redone".
        goodput.furthest_step = max([r["step"] for r in log.records() if "step" in r] + [restored_step])
        print(f"resumed from step {restored_step} ({ckpt.directory})", flush=True)
    else:
        state = trainer.init()
    if lead:  # only now: a refused resume leaves the run's config.gin as it was
        workdir_fs.write_text_atomic(workdir_fs.join(workdir, "config.gin"), gin.config_str())
    eval_sets = load_eval_sets(td.evals, train_cfg.batch_size, jax.process_index(), nproc)

    from gopher_jax.train.mfu import global_peak
    setup = RunSetup(model_cfg, train_cfg, trainer, td, eval_sets, global_peak(dtype=model_cfg.dtype),
                     faults)  # peak: all hosts, in the run's matmul dtype
    step = int(jax.device_get(state.step))
    rs = RunState(workdir=workdir, lead=lead, state=state, step=step, data=data, monitor=monitor, log=log,
                  ckpt=ckpt, cadence=Cadence(train_cfg.steps, train_cfg.log_every, train_cfg.eval_every,
                                             train_cfg.checkpoint_every),
                  window=ThroughputWindow(train_cfg.batch_size * train_cfg.seq_len), goodput=goodput,
                  last_saved=step if found is not None else None)
    monitor.seen_skipped = _skipped(state)
    if progress and lead:
        from tqdm import tqdm
        rs.bar = tqdm(total=train_cfg.steps, initial=step, desc="train", unit="step", dynamic_ncols=True)
    return setup, rs


def _train_step(setup: RunSetup, rs: RunState) -> None:
    """Runs one optimizer step on the next batch (at the batch ramp's size for this step)."""
    rs.goodput.step_started(rs.step + 1)
    batch_size = batch_at_step(rs.step, setup.train_cfg.stages())
    if batch_size != rs.data.global_batch:  # train.batch_ramp: same stream, more rows per step from here
        rs.data.set_global_batch(batch_size)
        rs.window.tokens_per_step = batch_size * setup.train_cfg.seq_len
    batch_index = rs.data.get_state()["batches_consumed"]
    host_batch = next(rs.data)
    if setup.faults.active:
        host_batch = setup.faults.apply(batch_index, host_batch)
    batch = setup.trainer.put_batch(host_batch)
    t0 = rs.goodput.clock()
    rs.state, rs.metrics = setup.trainer.train_step(rs.state, batch)
    rs.step += 1
    rs.window.step_done(t0, lambda: jax.block_until_ready(rs.metrics))
    if rs.bar is not None:
        rs.bar.update(1)


def _log_and_evaluate(setup: RunSetup, rs: RunState) -> None:
    """Writes the metrics record (loss, tokens/s, MFU, goodput) and held-out metrics when the cadence says."""
    from gopher_jax.train.mfu import mfu_fields
    record = None
    if rs.cadence.logs(rs.step):
        m = {k: float(v) for k, v in jax.device_get(rs.metrics).items()}
        tok_s = rs.window.tokens_per_s()
        record = {"step": rs.step, **m, "tokens_per_s": tok_s,
                  **mfu_fields(setup.model_cfg, setup.train_cfg.seq_len, tok_s, setup.peak_info.flops),
                  "compile_s": rs.window.compile_s, **rs.goodput.breakdown()}
        rs.window.restart()
    if rs.cadence.evaluates(rs.step):
        with rs.window.excluded(), rs.goodput.phase("eval"):
            rs.last_evals = evaluate_components(setup.trainer, rs.state, setup.eval_sets, setup.td.weights)
        rs.last_eval = rs.last_evals.get("eval_loss")
        record = {**(record or {"step": rs.step}), **rs.last_evals, **mixture_shares(rs.data)}
    if record is not None:
        rs.log.write(record)
    if rs.bar is not None and "loss" in (record or {}):
        rs.bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                           mfu=f"{record['mfu']:.1%} {record['mfu_count']}", mfu_6n=f"{record['mfu_6n']:.1%}",
                           goodput=f"{record['goodput']:.0%}",
                           **({"eval": f"{rs.last_eval:.3f}"} if rs.last_eval is not None else {}))


def _watch_spikes(setup: RunSetup, rs: RunState, is_ckpt: bool, stopping: bool) -> bool:
    """Applies the spike policy where the host syncs anyway; returns True after a rewind."""
    if not rs.monitor.should_look(rs.step, setup.train_cfg.log_every, is_ckpt, stopping):
        return False
    decision = rs.monitor.observe(rs.step, _skipped(rs.state))
    if decision.action == spike_monitor.SKIPPED:
        rs.log.write({"step": rs.step, "event": "skipped_updates", "skipped_updates": decision.skipped})
        print(decision.message, file=sys.stderr, flush=True)
        if decision.stop_reason:
            _stop_diverged(rs, decision.stop_reason)
    elif decision.action == spike_monitor.DIVERGED:
        _stop_diverged(rs, decision.message)
    elif decision.action == spike_monitor.REWIND:
        _rewind(setup, rs)
        return True
    return False


def _stop_diverged(rs: RunState, why: str):
    message = spike_monitor.diverged_message(rs.step, why, rs.ckpt.directory)
    rs.log.write({"step": rs.step, "event": "diverged", "reason": why})
    rs.ckpt.close()
    print(message, file=sys.stderr, flush=True)
    raise TrainingDiverged(message)


def _rewind(setup: RunSetup, rs: RunState) -> None:
    """Restores the newest good checkpoint (or a fresh init) after a spike; the run continues from its step.

    The data iterator stays where it is: batches since that checkpoint, the bad ones among them, are
    not replayed (PaLM §5.1 restarts ~100 steps back and skips ~200-500 batches)."""
    step, ckpt, trainer = rs.step, rs.ckpt, setup.trainer
    with rs.goodput.phase("restore"):
        ckpt.wait()
        found = ckpt.restore_newest_good(trainer.abstract_state, trainer.state_shardings)
    if found is not None:
        to_step, state, old_data = found
        first_skipped = old_data["batches_consumed"]
    else:
        to_step, state, first_skipped = 0, trainer.init(), 0
    now = rs.data.get_state()["batches_consumed"]
    rs.log.write({"step": step, "event": "rewind", "to_step": to_step, "rewinds": rs.monitor.rewinds,
                  "skipped_batches": [first_skipped, now]})
    print(rs.monitor.rewind_message(step, to_step, first_skipped, now), file=sys.stderr, flush=True)
    rs.monitor.rewound(_skipped(state))
    rs.goodput.rewound(step)  # steps to_step+1 .. step are trained again: "redone"
    rs.step, rs.state = to_step, state
    if rs.bar is not None:
        rs.bar.n = to_step
        rs.bar.refresh()


def _finish(setup: RunSetup, rs: RunState) -> dict:
    """Writes summary.json (with the goodput breakdown) and the loss curve (lead process); returns the summary."""
    td, data, train_cfg = setup.td, rs.data, setup.train_cfg
    peak_info, last_evals = setup.peak_info, rs.last_evals
    summary = {"step": rs.step, "final_loss": float(rs.metrics["loss"]) if rs.metrics else None,
               "eval_loss": rs.last_eval, "peak_flops": peak_info.flops, "peak_source": peak_info.source,
               "peak_hosts": peak_info.hosts, "flops_per_token": _flops_per_token(setup.model_cfg, train_cfg.seq_len),
               "tokens_per_step": data.global_batch * train_cfg.seq_len,
               "checkpoint_dir": rs.ckpt.directory, "compile_s": rs.window.compile_s,
               "eval_bits_per_byte": last_evals.get("eval_bits_per_byte"),
               "eval": {k: v for k, v in last_evals.items() if "/" in k},
               # Realised shares of all rows drawn (MT-NLG tracking) and epochs of each component.
               "mixture": {n: {"target": td.weights[n], "realised": data.realized()[n], "epochs": data.epochs()[n]}
                           for n in td.weights}}
    if rs.monitor.active:
        summary.update(skipped_updates=_skipped(rs.state), rewinds=rs.monitor.rewinds)
    if rs.lead:
        summary["loss_curve"] = rs.log.plot(workdir_fs.join(rs.workdir, "loss_curve.png"))
        recs = [r for r in rs.log.records() if r.get("tokens_per_s")]
        if recs:
            summary["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in recs]))
            summary["mfu"] = float(np.median([r["mfu"] for r in recs]))
            summary["mfu_6n"] = float(np.median([r["mfu_6n"] for r in recs]))
            summary["mfu_count"] = recs[-1]["mfu_count"]
    summary["goodput"] = rs.goodput.breakdown()  # this process's wall time, up to here
    if rs.lead:
        workdir_fs.write_text_atomic(workdir_fs.join(rs.workdir, "summary.json"), json.dumps(summary, indent=2))
    return summary


def _skipped(state) -> int:
    """Returns the spike guard's dropped-update count (0 without a guard)."""
    from gopher_jax.train.spikes import SpikeGuardState
    if isinstance(state.opt_state, SpikeGuardState):
        return int(jax.device_get(state.opt_state.skipped))
    return 0
