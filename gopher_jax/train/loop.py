"""The training loop: data -> sharded steps -> metrics, held-out loss, checkpoints, resume.

`train()` wires the parts together; each part is its own module and unit-tested without a subprocess
(tests/train/test_loop_parts.py): when to log/evaluate/checkpoint (cadence.py), tokens/s
(throughput_window.py), held-out metrics (evaluation.py), the spike policy (spike_monitor.py) and
preemption (preemption.py). Reliability (docs/reliability.md): configs are validated before
compiling; resume takes the newest checkpoint that restores and stops, naming the gin binding, on
one that does not fit; SIGTERM checkpoints and exits with signals.EXIT_PREEMPTED; the spike policy
drops bad updates and can rewind, stopping with spikes.EXIT_DIVERGED past its limit.
"""
from __future__ import annotations

import json
import sys
import time

import gin
import jax
import numpy as np

from gopher_jax.data.training_data import build_training_data
from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import sharding_rules
from gopher_jax.train import spike_monitor, workdir_fs
from gopher_jax.train.cadence import Cadence
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.evaluation import evaluate_components, load_eval_sets, mixture_shares
from gopher_jax.train.faults import Faults
from gopher_jax.train.metrics_log import MetricsLog
from gopher_jax.train.preemption import stop_for_preemption
from gopher_jax.train.sharded import build_trainer
from gopher_jax.train.signals import StopRequest
from gopher_jax.train.spikes import TrainingDiverged
from gopher_jax.train.throughput_window import ThroughputWindow
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


def train(workdir: str, *, resume: bool = False, progress: bool = True, train_task: str = "",
          restart_from_scratch: bool = False) -> dict:
    """Trains the gin-configured model in `workdir` on the seqio task or mixture `train_task` (default
    train.train_task; `gopher-jax train` registers the data first, see data_tasks); returns the summary.

    Writes metrics.jsonl, tensorboard/, checkpoints/, config.gin, loss_curve.png and summary.json
    (through workdir_fs, so a gs:// workdir works like a local one).
    Raises signals.Preempted after checkpointing on SIGTERM and spikes.TrainingDiverged past the
    spike policy's limit (both SystemExit: the process exits with their documented codes).
    """
    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh_cfg, rules, faults = MeshConfig(), sharding_rules(), Faults()
    lead = jax.process_index() == 0
    nproc = jax.process_count()
    workdir_fs.makedirs(workdir)
    # The run's bindings are saved with each checkpoint: a resume that does not fit names what changed.
    ckpt = Checkpointer(workdir, keep=train_cfg.keep_checkpoints, run_config=gin.operative_config_str())
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
    found = ckpt.restore_newest_good(trainer.abstract_state, trainer.state_shardings) if resume else None
    if found is not None:
        restored_step, state, data_state = found
        data.set_state(data_state)  # a position in the global stream: any host count resumes it
        monitor.rewinds = data_state.get("reliability", {}).get("rewinds", 0)
        print(f"resumed from step {restored_step} ({ckpt.directory})", flush=True)
    else:
        state = trainer.init()
    if lead:  # only now: a refused resume leaves the run's config.gin as it was
        workdir_fs.write_text_atomic(workdir_fs.join(workdir, "config.gin"), gin.config_str())
    eval_sets = load_eval_sets(td.evals, train_cfg.batch_size, jax.process_index(), nproc)

    from gopher_jax.train.mfu import global_peak, mfu_fields
    peak_info = global_peak(dtype=model_cfg.dtype)  # all devices, in the run's matmul dtype; tokens/s is global too
    peak = peak_info.flops
    flops_tok = _flops_per_token(model_cfg, train_cfg.seq_len)
    log = MetricsLog(workdir, enabled=lead)
    start_step = int(jax.device_get(state.step))
    tokens_per_step = train_cfg.batch_size * train_cfg.seq_len
    cadence = Cadence(train_cfg.steps, train_cfg.log_every, train_cfg.eval_every, train_cfg.checkpoint_every)
    monitor.seen_skipped = _skipped(state)
    last_saved = start_step if found is not None else None

    def data_state():
        return {**data.get_state(), "reliability": {"rewinds": monitor.rewinds}}

    def stop_diverged(step: int, why: str):
        message = spike_monitor.diverged_message(step, why, ckpt.directory)
        log.write({"step": step, "event": "diverged", "reason": why})
        ckpt.close()
        print(message, file=sys.stderr, flush=True)
        raise TrainingDiverged(message)

    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    window = ThroughputWindow(tokens_per_step)
    metrics = {}
    step = start_step
    last_eval, last_evals = None, {}
    with StopRequest() as stop, trainer.context():
        while step < train_cfg.steps:
            batch_index = data.get_state()["batches_consumed"]
            host_batch = next(data)
            if faults.active:
                host_batch = faults.apply(batch_index, host_batch)
            batch = trainer.put_batch(host_batch)
            t0 = time.perf_counter()
            state, metrics = trainer.train_step(state, batch)
            step += 1
            window.step_done(t0, lambda: jax.block_until_ready(metrics))
            if bar is not None:
                bar.update(1)
            record = None
            if cadence.logs(step):
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                tok_s = window.tokens_per_s()
                record = {"step": step, **m, "tokens_per_s": tok_s,
                          **mfu_fields(model_cfg, train_cfg.seq_len, tok_s, peak), "compile_s": window.compile_s}
                window.restart()
            if cadence.evaluates(step):
                with window.excluded():
                    last_evals = evaluate_components(trainer, state, eval_sets, td.weights)
                last_eval = last_evals.get("eval_loss")
                record = {**(record or {"step": step}), **last_evals, **mixture_shares(data)}
            if record is not None:
                log.write(record)
            if bar is not None and "loss" in (record or {}):
                bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{record['tokens_per_s']:,.0f}",
                                mfu=f"{record['mfu']:.1%} {record['mfu_count']}", mfu_6n=f"{record['mfu_6n']:.1%}",
                                **({"eval": f"{last_eval:.3f}"} if last_eval is not None else {}))
            is_ckpt = cadence.checkpoints(step)
            if monitor.should_look(step, train_cfg.log_every, is_ckpt, stop.requested):
                decision = monitor.observe(step, _skipped(state))
                if decision.action == spike_monitor.SKIPPED:
                    log.write({"step": step, "event": "skipped_updates", "skipped_updates": decision.skipped})
                    print(decision.message, file=sys.stderr, flush=True)
                    if decision.stop_reason:
                        stop_diverged(step, decision.stop_reason)
                elif decision.action == spike_monitor.DIVERGED:
                    stop_diverged(step, decision.message)
                elif decision.action == spike_monitor.REWIND:
                    step, state = _rewind(step, ckpt, trainer, data, monitor, log)
                    if bar is not None:
                        bar.n = step
                        bar.refresh()
                    continue
            if is_ckpt:
                ckpt.save(step, state, data_state(), force=cadence.is_last(step))
                last_saved = step
            if stop.requested and not cadence.is_last(step):
                stop_for_preemption(step, stop.signal_name, ckpt, log,
                                    save=lambda: ckpt.save(step, state, data_state(), force=True),
                                    already_saved=last_saved == step,
                                    close_progress=bar.close if bar is not None else (lambda: None))
    if bar is not None:
        bar.close()
    ckpt.close()
    return _finish(workdir, lead, log, step, metrics, last_eval, last_evals, td, data, monitor, state, peak_info,
                   flops_tok, tokens_per_step, window.compile_s, ckpt.directory)


def _rewind(step, ckpt, trainer, data, monitor, log):
    """Restores the newest good checkpoint (or a fresh init) after a spike; returns (its step, state).

    The data iterator stays where it is: batches since that checkpoint, the bad ones among them, are
    not replayed (PaLM §5.1 restarts ~100 steps back and skips ~200-500 batches)."""
    ckpt.wait()
    found = ckpt.restore_newest_good(trainer.abstract_state, trainer.state_shardings)
    if found is not None:
        to_step, state, old_data = found
        first_skipped = old_data["batches_consumed"]
    else:
        to_step, state, first_skipped = 0, trainer.init(), 0
    now = data.get_state()["batches_consumed"]
    log.write({"step": step, "event": "rewind", "to_step": to_step, "rewinds": monitor.rewinds,
               "skipped_batches": [first_skipped, now]})
    print(monitor.rewind_message(step, to_step, first_skipped, now), file=sys.stderr, flush=True)
    monitor.rewound(_skipped(state))
    return to_step, state


def _finish(workdir, lead, log, step, metrics, last_eval, last_evals, td, data, monitor, state, peak_info,
            flops_tok, tokens_per_step, compile_s, checkpoint_dir) -> dict:
    """Writes summary.json and the loss curve (lead process); returns the summary."""
    summary = {"step": step, "final_loss": float(metrics["loss"]) if metrics else None,
               "eval_loss": last_eval, "peak_flops": peak_info.flops, "peak_source": peak_info.source,
               "peak_hosts": peak_info.hosts, "flops_per_token": flops_tok, "tokens_per_step": tokens_per_step,
               "checkpoint_dir": checkpoint_dir, "compile_s": compile_s,
               "eval_bits_per_byte": last_evals.get("eval_bits_per_byte"),
               "eval": {k: v for k, v in last_evals.items() if "/" in k},
               # Realised shares of all rows drawn (MT-NLG tracking) and epochs of each component.
               "mixture": {n: {"target": td.weights[n], "realised": data.realized()[n], "epochs": data.epochs()[n]}
                           for n in td.weights}}
    if monitor.active:
        summary.update(skipped_updates=_skipped(state), rewinds=monitor.rewinds)
    if lead:
        summary["loss_curve"] = log.plot(workdir_fs.join(workdir, "loss_curve.png"))
        recs = [r for r in log.records() if r.get("tokens_per_s")]
        if recs:
            summary["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in recs]))
            summary["mfu"] = float(np.median([r["mfu"] for r in recs]))
            summary["mfu_6n"] = float(np.median([r["mfu_6n"] for r in recs]))
            summary["mfu_count"] = recs[-1]["mfu_count"]
        workdir_fs.write_text_atomic(workdir_fs.join(workdir, "summary.json"), json.dumps(summary, indent=2))
    return summary


def _skipped(state) -> int:
    """Returns the spike guard's dropped-update count (0 without a guard)."""
    from gopher_jax.train.spikes import SpikeGuardState
    if isinstance(state.opt_state, SpikeGuardState):
        return int(jax.device_get(state.opt_state.skipped))
    return 0
