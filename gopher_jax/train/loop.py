"""The training loop: data -> sharded steps -> metrics, held-out loss, checkpoints, resume.

Reliability (docs/reliability.md): configs are validated before compiling; resume takes the
newest checkpoint that restores; SIGTERM checkpoints and exits with signals.EXIT_PREEMPTED; the
spike policy drops bad updates and can rewind, stopping with spikes.EXIT_DIVERGED past its limit.
"""
from __future__ import annotations

import json
import os
import sys
import time

import gin
import jax
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import sharding_rules
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.faults import Faults
from gopher_jax.train.metrics_log import MetricsLog
from gopher_jax.train.sharded import build_trainer
from gopher_jax.train.signals import EXIT_PREEMPTED, Preempted, StopRequest
from gopher_jax.train.spikes import TrainingDiverged
from gopher_jax.train.validate import validate


def _tokenizer_path(train_config: TrainConfig, model_config: ModelConfig) -> tuple[str, int]:
    """Returns (SentencePiece model path, its piece count), training the embedded one if none is configured."""
    from gopher_jax.data import tokenizer

    path = train_config.tokenizer or tokenizer.ensure_embedded_tokenizer(model_config.vocab_size)
    return path, tokenizer.load(path).get_piece_size()


def _flops_per_token(model_config: ModelConfig, seq_len: int) -> float:
    from gopher_jax.scaling import flops
    return flops.flops_per_token(model_config, seq_len, method="chinchilla")


def evaluate(trainer, state, batches) -> float:
    """Returns the mean held-out loss (nats/token) over pre-loaded host batches."""
    loss_sum = weight_sum = 0.0
    with trainer.context():
        for b in batches:
            l, w = trainer.eval_step(state.params, trainer.put_batch(b))
            loss_sum += float(l)
            weight_sum += float(w)
    return loss_sum / max(weight_sum, 1.0)


def train(workdir: str, *, resume: bool = False, progress: bool = True) -> dict:
    """Trains the gin-configured model in `workdir`; returns the final summary dict.

    Writes metrics.jsonl, tensorboard/, checkpoints/, config.gin, loss_curve.png and summary.json.
    Raises signals.Preempted after checkpointing on SIGTERM and spikes.TrainingDiverged past the
    spike policy's limit (both SystemExit: the process exits with their documented codes).
    """
    from gopher_jax.data.input_pipeline import (bytes_per_token, embedded_or_configured_tasks, make_batches,
                                                nats_to_bits_per_byte)

    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh_cfg, rules, faults = MeshConfig(), sharding_rules(), Faults()
    lead = jax.process_index() == 0
    nproc = jax.process_count()
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(workdir, keep=train_cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints up to step {latest}; pass --resume to "
                              f"continue that run, or choose a new --workdir (nothing was overwritten)")
    vocab_path, pieces = _tokenizer_path(train_cfg, model_cfg)
    # Every config mismatch at once, before compiling anything (a bad gin override costs seconds).
    validate(model_cfg, train_cfg, mesh_cfg, rules, num_devices=jax.device_count(), num_processes=nproc,
             tokenizer_pieces=pieces)
    if lead:
        with open(os.path.join(workdir, "config.gin"), "w") as f:
            f.write(gin.config_str())

    train_task, eval_task = embedded_or_configured_tasks(vocab_path, train_cfg.train_task or None,
                                                         train_cfg.eval_task or None)
    mesh = build_mesh(mesh_cfg)
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, mesh, rules)
    local_batch = train_cfg.batch_size // nproc
    data = make_batches(train_task, batch_size=local_batch, seq_len=train_cfg.seq_len, seed=train_cfg.seed,
                        shuffle=True, repeat=True, shard_index=jax.process_index(), num_shards=nproc)
    abstract = trainer.abstract_state
    # Host-side counters that must survive a resume travel with the data-iterator state.
    reliability = {"rewinds": 0}
    found = None
    if resume:
        found = ckpt.restore_newest_good(abstract, trainer.state_shardings)
    if found is not None:
        restored_step, state, data_state = found
        data.set_state(_this_hosts_data_state(data_state))
        reliability.update(data_state.get("reliability", {}))
        print(f"resumed from step {restored_step} ({ckpt.directory})", flush=True)
    else:
        state = trainer.init()

    eval_iter = make_batches(eval_task, batch_size=local_batch, seq_len=train_cfg.seq_len, seed=0,
                             shuffle=False, repeat=False, shard_index=jax.process_index(), num_shards=nproc)
    eval_batches = [b for _, b in zip(range(train_cfg.eval_batches or 10**9), eval_iter)]
    eval_bpt = bytes_per_token(eval_task)

    from gopher_jax.train.mfu import machine_peak_flops
    peak = machine_peak_flops()
    flops_tok = _flops_per_token(model_cfg, train_cfg.seq_len)
    log = MetricsLog(workdir, enabled=lead)
    start_step = int(jax.device_get(state.step))
    tokens_per_step = train_cfg.batch_size * train_cfg.seq_len
    policy = train_cfg.spike_policy
    seen_skipped = _skipped(state)
    last_saved = start_step if found is not None else None

    def data_state():
        return {**data.get_state(), "reliability": dict(reliability)}

    def stop_diverged(step: int, why: str):
        message = (f"training stopped at step {step}: {why}. The newest checkpoint in {ckpt.directory} predates "
                   f"the problem (no checkpoint was written after it). Try a lower optimizer.peak_learning_rate or "
                   f"optimizer.clip_norm, inspect the data, or raise the limit, then run again with --resume.")
        log.write({"step": step, "event": "diverged", "reason": why})
        ckpt.close()
        print(message, file=sys.stderr, flush=True)
        raise TrainingDiverged(message)

    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    window_start, window_steps, compile_s = time.perf_counter(), 0, None
    metrics = {}
    step = start_step
    last_eval = None
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
            if compile_s is None:  # first step compiles; keep it out of throughput
                jax.block_until_ready(metrics)
                compile_s = time.perf_counter() - t0
                window_start, window_steps = time.perf_counter(), 0
            else:
                window_steps += 1
            if bar is not None:
                bar.update(1)
            is_last = step == train_cfg.steps
            if step % train_cfg.log_every == 0 or is_last:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                elapsed = time.perf_counter() - window_start
                tok_s = window_steps * tokens_per_step / elapsed if window_steps else 0.0
                record = {"step": step, **m, "tokens_per_s": tok_s, "mfu": flops_tok * tok_s / peak,
                          "compile_s": compile_s}
                window_start, window_steps = time.perf_counter(), 0
                if (train_cfg.eval_every and step % train_cfg.eval_every == 0) or is_last:
                    last_eval = evaluate(trainer, state, eval_batches)
                    record.update(eval_loss=last_eval, eval_bits_per_byte=nats_to_bits_per_byte(last_eval, eval_bpt))
                    window_start = time.perf_counter()
                log.write(record)
                if bar is not None:
                    bar.set_postfix(loss=f"{m['loss']:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{record['mfu']:.1%}",
                                    **({"eval": f"{last_eval:.3f}"} if last_eval is not None else {}))
            elif train_cfg.eval_every and step % train_cfg.eval_every == 0:
                last_eval = evaluate(trainer, state, eval_batches)
                log.write({"step": step, "eval_loss": last_eval,
                           "eval_bits_per_byte": nats_to_bits_per_byte(last_eval, eval_bpt)})
            is_ckpt = step % train_cfg.checkpoint_every == 0 or is_last
            # The guard's counters are read only where the host looks anyway (log, checkpoint, stop), so
            # the device queue is not drained every step; a checkpoint never follows an unseen bad step.
            if policy != "none" and (step % train_cfg.log_every == 0 or is_ckpt or stop.requested):
                skipped = _skipped(state)
                if skipped > seen_skipped and policy == "skip":
                    log.write({"step": step, "event": "skipped_updates", "skipped_updates": skipped})
                    print(f"step {step}: {skipped - seen_skipped} update(s) dropped (non-finite or spiking loss), "
                          f"{skipped} in total (limit train.max_skipped_updates={train_cfg.max_skipped_updates})",
                          file=sys.stderr, flush=True)
                    if skipped > train_cfg.max_skipped_updates:
                        stop_diverged(step, f"{skipped} updates were dropped for non-finite or spiking loss, more "
                                            f"than train.max_skipped_updates={train_cfg.max_skipped_updates}")
                elif skipped > seen_skipped:  # rewind
                    reliability["rewinds"] += 1
                    if reliability["rewinds"] > train_cfg.max_rewinds:
                        stop_diverged(step, f"a non-finite or spiking loss needed rewind number "
                                            f"{reliability['rewinds']}, more than train.max_rewinds="
                                            f"{train_cfg.max_rewinds}")
                    ckpt.wait()
                    found = ckpt.restore_newest_good(abstract, trainer.state_shardings)
                    if found is not None:
                        to_step, state, old_data = found
                        first_skipped = old_data["batches_consumed"]
                    else:
                        to_step, state, first_skipped = 0, trainer.init(), 0
                    # The iterator stays where it is: batches since that checkpoint, the bad ones among
                    # them, are not replayed (PaLM §5.1 restarts ~100 steps back and skips ~200-500 batches).
                    now = data.get_state()["batches_consumed"]
                    log.write({"step": step, "event": "rewind", "to_step": to_step, "rewinds": reliability["rewinds"],
                               "skipped_batches": [first_skipped, now]})
                    print(f"step {step}: non-finite or spiking loss; rewound to step {to_step} and skipped batches "
                          f"{first_skipped}..{now - 1} (rewind {reliability['rewinds']} of at most "
                          f"{train_cfg.max_rewinds})", file=sys.stderr, flush=True)
                    step, skipped = to_step, _skipped(state)
                    if bar is not None:
                        bar.n = step
                        bar.refresh()
                    seen_skipped = skipped
                    continue
                seen_skipped = skipped
            if is_ckpt:
                ckpt.save(step, state, data_state(), force=is_last)
                last_saved = step
            if stop.requested and not is_last:
                if last_saved != step:
                    ckpt.save(step, state, data_state(), force=True)
                ckpt.close()  # waits: the checkpoint is on disk before we exit
                log.write({"step": step, "event": "preempted", "signal": stop.signal_name})
                if bar is not None:
                    bar.close()
                print(f"preempted ({stop.signal_name}) at step {step}: checkpoint {ckpt.step_dir(step)} is on disk; "
                      f"exiting with code {EXIT_PREEMPTED}; continue with --resume", file=sys.stderr,
                      flush=True)
                raise Preempted(step, ckpt.directory)
    if bar is not None:
        bar.close()
    ckpt.close()

    summary = {"step": step, "final_loss": float(metrics["loss"]) if metrics else None,
               "eval_loss": last_eval, "peak_flops": peak, "flops_per_token": flops_tok,
               "checkpoint_dir": ckpt.directory, "compile_s": compile_s}
    if policy != "none":
        summary.update(skipped_updates=_skipped(state), rewinds=reliability["rewinds"])
    if lead:
        summary["loss_curve"] = log.plot(os.path.join(workdir, "loss_curve.png"))
        recs = [r for r in log.records() if r.get("tokens_per_s")]
        if recs:
            summary["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in recs]))
            summary["mfu"] = float(np.median([r["mfu"] for r in recs]))
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _this_hosts_data_state(saved: dict) -> dict:
    """Returns the saved data-iterator state for this host's shard.

    orbax writes the JSON item from process 0 only, so every host restores process 0's state. The
    hosts step in lockstep (same `batches_consumed`) and differ only in `shard_index`, which each
    host puts back to its own; a state saved with another host count still fails `set_state`.
    """
    if "shard_index" in saved and saved.get("num_shards") == jax.process_count():
        return {**saved, "shard_index": jax.process_index()}
    return saved


def _skipped(state) -> int:
    """Returns the spike guard's dropped-update count (0 without a guard)."""
    from gopher_jax.train.spikes import SpikeGuardState
    if isinstance(state.opt_state, SpikeGuardState):
        return int(jax.device_get(state.opt_state.skipped))
    return 0
