"""The training input against the train step: restore time, throughput, synthetic vs real batches.

    python benchmarks/input_pipeline.py --json benchmarks/results/input_pipeline.json

Data: the embedded mixture (`data_tasks.register_for_training` with the embedded tokenizer, packed
by `build_training_data`, exactly as `gopher-jax train` reads it), at the tiny run's shapes
(gin_configs/runs/pretrain.gin + models/tiny.gin: batch 8, seq_len 256) unless overridden.

(a) restore: the time of `MixtureBatches.set_state(state) + next()` for a state saved after 10 and
    after 10,000 consumed batches (states taken by drawing that many batches), against the old
    replay iterator `input_pipeline.make_batches(..., state=state) + next()`, which re-runs the
    tf.data pipeline and skips the consumed batches: timed at --replay_small and --replay_large
    consumed batches (after one warm-up build) and extrapolated linearly to 10,000 (marked `extrapolated`)
    when the slope is positive; otherwise no number is written, with the reason.
(b) throughput: batches/s and tokens/s of `next()` (tokens = row positions, padding included, and
    `real_tokens` = non-padding targets), against the median train-step time of each --models
    entry: `input_fraction` = next() time / step time.
(c) synthetic vs real: train-step tokens/s (host input + put_batch + step, as the loop runs it)
    with one constant synthetic batch vs batches from MixtureBatches, same compiled step,
    alternating rounds; `real_over_synthetic` is the ratio of the medians (goal: within 5%).

The machine is shared: the JSON records the 1-minute load average before and after, and each
timing's process CPU seconds beside its wall seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tiny", help="comma-separated gin_configs/models/ names for (b) and (c)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=256)
    p.add_argument("--consumed", default="10,10000", help="consumed batches at which to time a restore (a)")
    p.add_argument("--replay_small", type=int, default=10)
    p.add_argument("--replay_large", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5, help="restores timed per position (median)")
    p.add_argument("--throughput_batches", type=int, default=2000, help="next() calls timed for (b)")
    p.add_argument("--steps", type=int, default=5, help="timed train steps per round (b, c)")
    p.add_argument("--rounds", type=int, default=4, help="alternating synthetic/real rounds (c)")
    p.add_argument("--skip_replay", action="store_true", help="skip the old replay iterator in (a)")
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


def _timed(fn):
    """Returns (fn's result, wall seconds, process CPU seconds)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def setup(model: str, batch_size: int, seq_len: int):
    """Parses the run's gin for `model`; returns (training data, vocab path, seqio mixture name)."""
    import data_tasks
    import gopher_jax.data.training_data  # noqa: F401  (gin configurables)
    import gopher_jax.model.config  # noqa: F401
    import gopher_jax.parallel.mesh  # noqa: F401
    import gopher_jax.train.config  # noqa: F401
    from gopher_jax import gin_utils
    from gopher_jax.data.training_data import build_training_data
    from gopher_jax.train.loop import resolve_tokenizer

    gin_utils.parse_gin(["gin_configs/runs/pretrain.gin", f"gin_configs/models/{model}.gin"],
                        [f"train.batch_size={batch_size}", f"train.seq_len={seq_len}"])
    vocab, _ = resolve_tokenizer()
    name = data_tasks.register_for_training(vocab, "", verbose=False)
    td = build_training_data(name, seq_len=seq_len, global_batch=batch_size, seed=0, eval_batches=1,
                             progress=False)
    return td, vocab, name


def fresh(td):
    """Returns a new MixtureBatches over the same stores, at position 0."""
    from gopher_jax.data.mixture_input import MixtureBatches
    t = td.train
    return MixtureBatches(t.components, global_batch=t.global_batch, seed=t.seed)


def restore_mixture(td, consumed: list[int], repeats: int) -> dict:
    """(a) for MixtureBatches: state after n batches (by drawing), then set_state + next() timed."""
    import numpy as np
    out = {}
    it = fresh(td)
    drawn = 0
    draw_s = 0.0
    for n in sorted(consumed):
        _, s, _ = _timed(lambda: [next(it) for _ in range(n - drawn)])
        draw_s += s
        state = json.loads(json.dumps(it.get_state()))  # through JSON, as in a checkpoint
        want = next(it)  # the uninterrupted stream's next batch
        drawn = n + 1
        walls, cpus = [], []
        for _ in range(repeats):
            r = fresh(td)
            got, wall, cpu = _timed(lambda: (r.set_state(state), next(r))[1])
            walls.append(wall)
            cpus.append(cpu)
        out[str(n)] = {"batches_consumed": state["batches_consumed"], "restore_s": statistics.median(walls),
                       "restore_s_all": walls, "restore_cpu_s": statistics.median(cpus),
                       "equals_uninterrupted": bool(all(np.array_equal(got[k], want[k]) for k in want)),
                       "state_json_bytes": len(json.dumps(state))}
    out["draw_s_total"] = draw_s
    return out


def restore_replay(name: str, batch_size: int, seq_len: int, small: int, large: int, target: int) -> dict:
    """(a) for the old replay iterator: make_batches(state=...) + next() at `small` and `large`; the cost at
    `target` extrapolated linearly only when the measured slope is positive (else no number, and why)."""
    from gopher_jax.data.input_pipeline import make_batches
    kw = dict(batch_size=batch_size, seq_len=seq_len, seed=0, shuffle=True, repeat=True)
    base = make_batches(name, **kw).get_state()  # the state's shape; only batches_consumed differs
    next(make_batches(name, **kw))  # warm: the first tf.data build pays one-time costs the others do not
    out = {}
    for n in (small, large):
        state = {**base, "batches_consumed": n}
        _, wall, cpu = _timed(lambda: next(make_batches(name, **kw, state=state)))
        out[str(n)] = {"restore_s": wall, "restore_cpu_s": cpu}
    per_batch = (out[str(large)]["restore_s"] - out[str(small)]["restore_s"]) / (large - small)
    if per_batch > 0:
        out[str(target)] = {"restore_s": out[str(small)]["restore_s"] + per_batch * (target - small),
                            "extrapolated": True, "per_consumed_batch_s": per_batch}
    else:  # load noise swamped the replay cost: a line through these points predicts nothing
        out[str(target)] = {"restore_s": None, "extrapolated": True,
                            "not_extrapolated_because": f"the {large}-batch restore was not slower than the "
                                                        f"{small}-batch one (slope {per_batch:.3g} s/batch)"}
    return out


def input_throughput(td, n: int) -> dict:
    """(b): batches/s and tokens/s of next() over n batches from position 0."""
    it = fresh(td)
    real = 0

    def run():
        nonlocal real
        for _ in range(n):
            real += int(next(it)["loss_weights"].sum())

    _, wall, cpu = _timed(run)
    tokens = n * it.global_batch * it.seq_len
    return {"batches": n, "next_s": wall / n, "batches_per_s": n / wall, "tokens_per_s": tokens / wall,
            "real_tokens_per_s": real / wall, "padding_fraction": 1 - real / tokens, "cpu_s": cpu}


def step_bench(model: str, td, steps: int, rounds: int, batch_size: int, seq_len: int) -> dict:
    """(b) step time and (c) synthetic vs real rounds for one model on a one-device mesh."""
    import jax

    from benchmarks.train_throughput import synthetic_batches
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.parallel.mesh import MeshConfig, build_mesh
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.sharded import build_trainer

    model_cfg = ModelConfig()
    mesh = build_mesh(MeshConfig(data=1, fsdp=1, tensor=1, pipeline=1), devices=jax.devices()[:1])
    trainer = build_trainer(model_cfg, OptimizerConfig(), TrainConfig(), mesh, sharding_rules())
    synthetic = synthetic_batches(batch_size, seq_len, model_cfg.vocab_size)
    real = fresh(td)
    modes = {"synthetic": synthetic, "real": real}
    walls = {m: [] for m in modes}
    cpus = {m: [] for m in modes}
    with trainer.context():
        state = trainer.init()
        t = time.perf_counter()
        compiled = trainer.train_step.lower(state, trainer.put_batch(next(synthetic))).compile()
        compile_s = time.perf_counter() - t
        for mode, batches in modes.items():  # warm-up, both modes
            state, metrics = compiled(state, trainer.put_batch(next(batches)))
            jax.block_until_ready(metrics)
        for r in range(rounds):
            order = ("synthetic", "real") if r % 2 == 0 else ("real", "synthetic")
            for mode in order:
                for _ in range(steps):
                    t, c = time.perf_counter(), time.process_time()
                    state, metrics = compiled(state, trainer.put_batch(next(modes[mode])))
                    jax.block_until_ready(metrics)
                    walls[mode].append(time.perf_counter() - t)
                    cpus[mode].append(time.process_time() - c)
    tokens = batch_size * seq_len
    res = {"compile_s": compile_s, "steps_per_mode": len(walls["real"])}
    for mode in modes:
        res[mode] = {"step_s": statistics.median(walls[mode]), "step_cpu_s": statistics.median(cpus[mode]),
                     "tokens_per_s": tokens / statistics.median(walls[mode]), "step_s_all": walls[mode]}
    res["real_over_synthetic"] = res["real"]["tokens_per_s"] / res["synthetic"]["tokens_per_s"]
    res["real_over_synthetic_cpu"] = res["synthetic"]["step_cpu_s"] / res["real"]["step_cpu_s"]
    return res


def run(args) -> dict:
    import jax

    from gopher_jax import host_memory
    models = [m for m in args.models.split(",") if m]
    consumed = [int(x) for x in args.consumed.split(",")]
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "jax": jax.__version__,
              "cpu_count": os.cpu_count(), "host_hugepages": host_memory.active(),
              "load_avg_1m_start": os.getloadavg()[0], "batch_size": args.batch_size, "seq_len": args.seq_len,
              "data": "embedded mixture (data_tasks.register_for_training), packed stores"}
    (td, vocab, name), open_s, _ = _timed(lambda: setup(models[0], args.batch_size, args.seq_len))
    result["open_stores_s"] = open_s
    result["components"] = {c.name: {"weight": td.weights[c.name], "rows": c.store.rows} for c in td.train.components}
    print("(a) restore, packed mixture ...", file=sys.stderr, flush=True)
    result["restore_mixture"] = restore_mixture(td, consumed, args.repeats)
    if not args.skip_replay:
        print("(a) restore, replay iterator ...", file=sys.stderr, flush=True)
        result["restore_replay"] = restore_replay(name, args.batch_size, args.seq_len, args.replay_small,
                                                  args.replay_large, max(consumed))
    print("(b) input throughput ...", file=sys.stderr, flush=True)
    result["input"] = input_throughput(td, args.throughput_batches)
    result["models"] = {}
    for model in models:
        print(f"(b, c) train step, {model} ...", file=sys.stderr, flush=True)
        if model != models[0]:  # parse this model's gin (the data stays the same stores)
            td, _, _ = setup(model, args.batch_size, args.seq_len)
        r = step_bench(model, td, args.steps, args.rounds, args.batch_size, args.seq_len)
        r["input_fraction"] = result["input"]["next_s"] / r["synthetic"]["step_s"]
        result["models"][model] = r
    result["load_avg_1m_end"] = os.getloadavg()[0]
    return result


def main(argv=None) -> int:
    from gopher_jax.platforms import default_to_cpu
    default_to_cpu()  # before jax is imported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = parse_args(argv)
    if argv is None:  # the same host-memory setting as `gopher-jax train` (gopher_jax/host_memory.py)
        from gopher_jax.host_memory import reexec_with_hugepages
        reexec_with_hugepages([os.path.abspath(__file__), *sys.argv[1:]])
    result = run(args)
    summary = {
        "restore_s": {n: v["restore_s"] for n, v in result["restore_mixture"].items() if isinstance(v, dict)},
        "replay_restore_s": {n: v["restore_s"] for n, v in result.get("restore_replay", {}).items()
                             if v["restore_s"] is not None},
        "input_next_s": result["input"]["next_s"],
        **{f"{m}_input_fraction": r["input_fraction"] for m, r in result["models"].items()},
        **{f"{m}_real_over_synthetic": r["real_over_synthetic"] for m, r in result["models"].items()}}
    result["summary"] = summary
    print(json.dumps(summary, indent=1))
    if args.json:
        from gopher_jax.atomic_write import atomic_write
        atomic_write(args.json, lambda f: json.dump(result, f, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
