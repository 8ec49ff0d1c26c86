"""KV-cache sampling speed with Transformer-XL relative positions at a long cache (gopher_44m, L=2048).

    python benchmarks/decode_relpos.py --json benchmarks/results/decode_relpos_gopher_44m_L2048.json

Randomly initialised params (speed does not depend on training); one prompt row of `--prompt_len`
tokens starting with SEGMENT_START_ID, a cache of `--cache_len` slots (every step attends over all
L slots, filled or not, so the per-token cost is the cost at length L), then `--steps` greedy
tokens through `decode.decode_step`, the function `gopher-jax sample` runs. Reports the prefill
time, the median step time (wall and process CPU, all threads: the steadier measure on a shared
machine) and tokens/s = batch / median wall step; with `--baseline FILE` (an earlier run's JSON)
also the speed-up over it and whether the greedy tokens and logits agree.

Before/after the position keys were cached, on one machine: run this script once against the old
code (an export of the old commit first on PYTHONPATH, run from outside the repository so the
working tree is not imported) with `--save_logits`, then against the new code with `--baseline`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Appended, not prepended: an older gopher_jax on PYTHONPATH (the "before" run) must win.
sys.path.append(REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gin_file", default=os.path.join(REPO, "gin_configs", "models", "gopher_44m.gin"))
    p.add_argument("--cache_len", type=int, default=2048, help="KV-cache slots L")
    p.add_argument("--prompt_len", type=int, default=16)
    p.add_argument("--steps", type=int, default=12, help="timed greedy tokens after one warm-up token")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--unrolled", action="store_true",
                   help="decode with the layers unrolled (params split per layer by `unstack_layers`): no scan "
                        "slicing/re-stacking of the per-layer caches each token")
    p.add_argument("--label", default="", help="free text stored in the JSON (e.g. before / after)")
    p.add_argument("--code_commit", default="",
                   help="the commit of the gopher_jax that runs (default: this repository's HEAD; set it when "
                        "an export of an older commit is first on PYTHONPATH)")
    p.add_argument("--save_logits", default="", help="write every step's logits here (.npy) for --baseline checks")
    p.add_argument("--baseline", default="", help="an earlier run's JSON: report speed-up and agreement")
    p.add_argument("--json", default="", help="write the results here")
    return p.parse_args(argv)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def main(argv=None) -> dict:
    args = parse_args(argv)
    import flax.linen as nn

    import gopher_jax
    from gopher_jax import decode
    from gopher_jax.model.decoder import Decoder, init_cache, unstack_layers
    from gopher_jax.scaling.model_zoo import load_config

    config = load_config(args.gin_file)
    if config.position != "relative":
        raise ValueError(f"{args.gin_file} uses position={config.position!r}; this benchmark is about 'relative'")
    if args.prompt_len + args.steps + 1 > args.cache_len:
        raise ValueError(f"--prompt_len {args.prompt_len} + --steps {args.steps} + 1 exceeds "
                         f"--cache_len {args.cache_len}")
    params = nn.meta.unbox(jax.jit(Decoder(config).init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32)))["params"]
    if args.unrolled and config.scan_layers:
        params = unstack_layers(params, config.num_layers)
        config = config.replace(scan_layers=False)
    rng = np.random.default_rng(0)
    prompt = rng.integers(3, config.vocab_size, (args.batch, args.prompt_len)).astype(np.int32)
    prompt[:, 0] = 0  # the segment-start id every document starts from
    segs = np.ones_like(prompt)
    positions = np.broadcast_to(np.arange(args.prompt_len, dtype=np.int32), prompt.shape)

    cache = init_cache(config, args.batch, args.cache_len)
    t0 = time.perf_counter()
    logits, cache = decode.decode_step(config, params, cache, jnp.asarray(prompt), jnp.asarray(segs),
                                       jnp.asarray(positions))
    last = jax.block_until_ready(logits[:, -1])
    prefill_s = time.perf_counter() - t0  # includes the prefill's compile
    ones = jnp.ones((args.batch, 1), jnp.int32)
    step_s, step_cpu_s, tokens, step_logits = [], [], [], [np.asarray(last)]
    for s in range(args.steps + 1):  # the first step compiles: not timed
        chosen = jnp.argmax(last, axis=-1).astype(jnp.int32)
        tokens.append(np.asarray(chosen).tolist())
        pos = jnp.full((args.batch, 1), args.prompt_len + s, jnp.int32)
        t0, c0 = time.perf_counter(), time.process_time()
        logits, cache = decode.decode_step(config, params, cache, chosen[:, None], ones, pos)
        last = jax.block_until_ready(logits[:, -1])
        if s:
            step_s.append(time.perf_counter() - t0)
            step_cpu_s.append(time.process_time() - c0)
        step_logits.append(np.asarray(last))
    median = statistics.median(step_s)
    out = {"label": args.label, "gin_file": os.path.relpath(args.gin_file, REPO),
           "commit": args.code_commit or git_commit(),
           "gopher_jax": os.path.dirname(gopher_jax.__file__), "cache_len": args.cache_len,
           "prompt_len": args.prompt_len, "batch": args.batch, "steps": args.steps,
           "layers": "scanned" if config.scan_layers else "unrolled",
           "prefill_s_incl_compile": round(prefill_s, 3), "step_s_median": round(median, 5),
           "step_s_min": round(min(step_s), 5), "step_cpu_s_median": round(statistics.median(step_cpu_s), 5),
           "tokens_per_s": round(args.batch / median, 2),
           "greedy_tokens": tokens, "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]}
    if args.save_logits:
        np.save(args.save_logits, np.stack(step_logits))
        out["logits_file"] = args.save_logits
    if args.baseline:
        with open(args.baseline) as f:
            base = json.load(f)
        out["baseline"] = {"label": base.get("label"), "tokens_per_s": base["tokens_per_s"],
                           "speedup": round(out["tokens_per_s"] / base["tokens_per_s"], 2),
                           "cpu_time_ratio": round(base["step_cpu_s_median"] / out["step_cpu_s_median"], 2),
                           "same_greedy_tokens": base["greedy_tokens"] == tokens}
        if base.get("logits_file") and os.path.isfile(base["logits_file"]):
            ref = np.load(base["logits_file"])
            out["baseline"]["max_abs_logit_diff"] = float(np.abs(ref - np.stack(step_logits)).max())
    if args.json:
        from gopher_jax.atomic_write import atomic_write
        atomic_write(args.json, lambda f: f.write(json.dumps(out, indent=1) + "\n"))
    print(json.dumps({k: v for k, v in out.items() if k != "greedy_tokens"}))
    return out


if __name__ == "__main__":
    main()
