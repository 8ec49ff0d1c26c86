"""The training loop: data -> sharded steps -> metrics, held-out loss, checkpoints, resume."""
from __future__ import annotations

import json
import os
import time

import gin
import jax
import numpy as np

from gopher_jax.model.config import ModelConfig
from gopher_jax.parallel.mesh import MeshConfig, build_mesh
from gopher_jax.parallel.rules import sharding_rules
from gopher_jax.train.checkpoints import Checkpointer
from gopher_jax.train.config import OptimizerConfig, TrainConfig
from gopher_jax.train.metrics_log import MetricsLog
from gopher_jax.train.sharded import build_trainer
from gopher_jax.train.state import make_init_fn


def _tokenizer_path(train_config: TrainConfig, model_config: ModelConfig) -> str:
    """Returns the SentencePiece model to use, training the embedded one if none is configured."""
    from gopher_jax.data import tokenizer

    path = train_config.tokenizer or tokenizer.ensure_embedded_tokenizer(model_config.vocab_size)
    size = tokenizer.load(path).get_piece_size()
    if size > model_config.vocab_size:
        raise ValueError(f"tokenizer {path} has {size} pieces but ModelConfig.vocab_size={model_config.vocab_size}; "
                         f"set ModelConfig.vocab_size={size} (or larger) or use a smaller tokenizer")
    return path


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
    """
    from gopher_jax.data.input_pipeline import (bytes_per_token, embedded_or_configured_tasks, make_batches,
                                                nats_to_bits_per_byte)

    model_cfg, train_cfg, opt_cfg = ModelConfig(), TrainConfig(), OptimizerConfig()
    mesh_cfg, rules = MeshConfig(), sharding_rules()
    lead = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(workdir, keep=train_cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    if latest is not None and not resume:
        raise FileExistsError(f"{workdir} already holds checkpoints up to step {latest}; pass --resume to "
                              f"continue that run, or choose a new --workdir (nothing was overwritten)")
    if lead:
        with open(os.path.join(workdir, "config.gin"), "w") as f:
            f.write(gin.config_str())

    vocab_path = _tokenizer_path(train_cfg, model_cfg)
    train_task, eval_task = embedded_or_configured_tasks(vocab_path, train_cfg.train_task or None,
                                                         train_cfg.eval_task or None)
    mesh = build_mesh(mesh_cfg)
    nproc = jax.process_count()
    if train_cfg.batch_size % (nproc * train_cfg.microbatches):
        raise ValueError(f"train.batch_size={train_cfg.batch_size} must divide evenly over {nproc} processes "
                         f"x {train_cfg.microbatches} microbatches")
    trainer = build_trainer(model_cfg, opt_cfg, train_cfg, mesh, rules)
    local_batch = train_cfg.batch_size // nproc
    data = make_batches(train_task, batch_size=local_batch, seq_len=train_cfg.seq_len, seed=train_cfg.seed,
                        shuffle=True, repeat=True, shard_index=jax.process_index(), num_shards=nproc)
    if latest is not None:
        abstract = jax.eval_shape(make_init_fn(model_cfg, trainer.tx, train_cfg.seq_len), jax.random.key(0))
        state, data_state = ckpt.restore(latest, abstract, trainer.state_shardings)
        data.set_state(data_state)
        print(f"resumed from step {latest} ({ckpt.directory})")
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

    bar = None
    if progress and lead:
        from tqdm import tqdm
        bar = tqdm(total=train_cfg.steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)
    window_start, window_steps, compile_s = time.perf_counter(), 0, None
    metrics = {}
    step = start_step
    last_eval = None
    with trainer.context():
        while step < train_cfg.steps:
            batch = trainer.put_batch(next(data))
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
            if step % train_cfg.checkpoint_every == 0 or is_last:
                ckpt.save(step, state, data.get_state(), force=is_last)
    if bar is not None:
        bar.close()
    ckpt.close()

    summary = {"step": step, "final_loss": float(metrics["loss"]) if metrics else None,
               "eval_loss": last_eval, "peak_flops": peak, "flops_per_token": flops_tok,
               "checkpoint_dir": ckpt.directory, "compile_s": compile_s}
    if lead:
        summary["loss_curve"] = log.plot(os.path.join(workdir, "loss_curve.png"))
        recs = [r for r in log.records() if r.get("tokens_per_s")]
        if recs:
            summary["tokens_per_s"] = float(np.median([r["tokens_per_s"] for r in recs]))
            summary["mfu"] = float(np.median([r["mfu"] for r in recs]))
        with open(os.path.join(workdir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary
