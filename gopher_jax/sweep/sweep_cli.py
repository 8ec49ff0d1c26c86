"""`gopher-jax sweep --spec=FILE --out=DIR [--workers=N] [--executor=local|ray] [--dry-run]`.

Expands the spec (spec.py) into runs named by their arm and config hash (plan.py), validates every
run before any trains (validate_arms.py), writes DIR/sweep.json, then trains every unfinished run
with N local workers or as Ray tasks, each run an ordinary `gopher-jax train` workdir DIR/<run>/.
Rerunning the same command resumes the sweep: finished runs are skipped, killed ones resume from
their checkpoints, failed ones are retried once more. See docs/ablations.md.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys

from gopher_jax import gin_utils
from gopher_jax.sweep import leases, plan, spec, status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax sweep`."""
    parser.add_argument("--spec", default=None, help="sweep spec file (gin syntax; see gin_configs/sweeps/)")
    parser.add_argument("--out", required=True, help="sweep directory, local or gs:// (shared by all workers)")
    gin_utils.add_gin_arguments(parser)  # without --spec: the base stack
    parser.add_argument("--axis", action="append", default=[],
                        help="without --spec: an axis, e.g. train.seed=0,1,2 or "
                             "position=relative:,rope:gin_configs/ablations/rope.gin (repeatable)")
    parser.add_argument("--zip", action="append", default=[], help="without --spec: axes that move together, a,b")
    parser.add_argument("--baseline", default="", help="baseline arm, e.g. position=relative (default: the first)")
    parser.add_argument("--seed_axis", default=spec.SEED_AXIS, help="the axis that holds seeds")
    parser.add_argument("--workers", type=int, default=1, help="runs trained at once (local processes or Ray tasks)")
    parser.add_argument("--executor", choices=("local", "ray"), default="local")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local one)")
    parser.add_argument("--cpus_per_run", type=float, default=1.0, help="Ray: CPUs each run's task asks for")
    parser.add_argument("--ray_resources", default="{}", help='Ray: other resources per run, e.g. \'{"TPU": 4}\'')
    parser.add_argument("--ttl", type=float, default=leases.DEFAULT_TTL_S,
                        help="lease time-to-live in seconds: a dead worker's run is reclaimed after this")
    parser.add_argument("--only", action="append", default=[],
                        help="train only these runs: a run name (DIR/<run>) or an arm label such as "
                             "position=rope, which selects all its seeds (repeatable); the others stay planned")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="validate, write the plan, print the launch commands; train nothing")


def build_spec(args) -> spec.SweepSpec:
    """Returns the spec from --spec, or from --gin_file/--gin_param/--axis flags."""
    if args.spec:
        if args.axis or args.gin_file or args.gin_param:
            raise spec.SweepSpecError("give either --spec or --gin_file/--gin_param/--axis flags, not both")
        return spec.load_spec(args.spec)
    if not args.axis:
        raise spec.SweepSpecError("nothing to sweep: pass --spec=FILE or at least one --axis (e.g. train.seed=0,1,2), "
                                  "or --out=DIR of a planned sweep (DIR/sweep.json) to resume it")
    return spec.from_flags(args.gin_file or ["gin_configs/runs/pretrain.gin", "gin_configs/models/tiny.gin"],
                           args.gin_param, args.axis, args.zip, args.baseline, args.seed_axis)


def devices_per_run(args) -> int:
    """Returns the device count every run trains on (and is validated against)."""
    from gopher_jax.platforms import gpu_attached, tpu_attached
    from gopher_jax.sweep import devices
    if tpu_attached() or gpu_attached():
        if args.workers > 1 and args.executor == "local":
            raise SystemExit("gopher-jax sweep: --workers>1 splits CPU hosts only; on an accelerator host run one "
                             "worker per host (start the same sweep command on each) or use --executor=ray")
        import jax
        return jax.local_device_count()
    return devices.devices_per_worker(args.workers)


def prepare(args) -> tuple[list[plan.RunPlan], dict]:
    """Expands and validates the sweep, writes DIR/sweep.json; returns (runs, parameter counts).

    With neither --spec nor --axis, the plan already in DIR (e.g. one `scaling sweep` generated) is resumed."""
    from gopher_jax.sweep.validate_arms import validate_runs
    from gopher_jax.train import workdir_fs
    if not (args.spec or args.axis) and workdir_fs.exists(workdir_fs.join(args.out, plan.PLAN_FILE)):
        _, runs = plan.load_plan(args.out)
        return runs, validate_runs(runs, devices_per_run(args))
    sw = build_spec(args)
    runs = plan.expand(sw)
    counts = validate_runs(runs, devices_per_run(args))
    plan.write_plan(args.out, sw, runs, extra={"params": {n: c["total"] for n, c in counts.items()}})
    return runs, counts


def dry_run_lines(out: str, runs: list[plan.RunPlan], counts: dict, ttl: float, only: list[str] | None = None) -> list[str]:
    """Returns the plan table and the launch commands: per run, and per extra worker machine."""
    from gopher_jax.sweep.local_executor import worker_command
    lines = [f"{r.name}  arm={r.arm} seed={r.seed} params={counts[r.name]['total']:,}" for r in runs]
    lines.append("# one `gopher-jax train` per run (what a worker executes, in-process):")
    lines += [shlex.join(["gopher-jax", "train", *r.train_args(f"{out.rstrip('/')}/{r.name}")]) for r in runs]
    lines.append("# or join the sweep from any machine that sees the directory (leases keep runs unique):")
    lines.append(shlex.join(["python", *worker_command(out, ttl, only=only)[1:]]))
    return lines


def select_runs(runs: list[plan.RunPlan], only: list[str]) -> list[plan.RunPlan]:
    """Returns the runs named by `only` (run names or arm labels), in plan order; all runs if `only` is empty.

    Raises ValueError naming an entry that matches no run, with the names and arms there are."""
    if not only:
        return runs
    names, arms = [r.name for r in runs], sorted({r.arm for r in runs})
    unknown = [o for o in only if o not in names and o not in arms]
    if unknown:
        raise ValueError(f"--only {', '.join(map(repr, unknown))} names no run of this sweep; give a run name "
                         f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) or an arm ({', '.join(arms)})")
    return [r for r in runs if r.name in only or r.arm in only]


def run(args: argparse.Namespace) -> int:
    """Runs the sweep command; returns 0 when every run is done, 1 if any failed, 2 on a bad spec."""
    import os
    from gopher_jax.train import workdir_fs
    if workdir_fs.scheme(args.out) is None:  # workers (Ray's too) may start in another directory
        args.out = os.path.abspath(args.out)
    try:
        runs, counts = prepare(args)
        chosen = select_runs(runs, args.only)
    except (spec.SweepSpecError, ValueError, FileNotFoundError) as e:
        print(f"gopher-jax sweep: {e}", file=sys.stderr)
        return 2
    arms = sorted({r.arm for r in runs})
    print(f"sweep {args.out}: {len(runs)} runs, {len(arms)} arms ({', '.join(arms)}), all validated; "
          f"plan in {args.out.rstrip('/')}/{plan.PLAN_FILE}", flush=True)
    if len(chosen) < len(runs):
        print(f"--only: training {len(chosen)} of the {len(runs)} runs; the others stay planned", flush=True)
    runs = chosen
    names = [r.name for r in runs]
    only = names if args.only else None  # workers are told which runs only when it is a subset
    if args.dry_run:
        print("\n".join(dry_run_lines(args.out, runs, counts, args.ttl, only)))
        return 0
    retried = status.clear_failed(args.out, names)
    if retried:
        print(f"retrying {len(retried)} run(s) that failed before: {retried}", flush=True)
    if args.executor == "ray":
        from gopher_jax.platforms import gpu_attached, tpu_attached
        from gopher_jax.sweep.ray_executor import run_ray
        code = run_ray(args.out, names, address=args.address, workers=args.workers, ttl_s=args.ttl,
                       cpus_per_run=args.cpus_per_run, resources=json.loads(args.ray_resources),
                       accelerator_host=tpu_attached() or gpu_attached()
                       or bool({"TPU", "GPU"} & set(json.loads(args.ray_resources))))
    else:
        from gopher_jax.sweep.local_executor import run_local
        code = run_local(args.out, names, workers=args.workers, ttl_s=args.ttl, only=only)
    states = status.statuses(args.out, names)
    failed = [n for n, s in states.items() if s == status.FAILED]
    if failed:
        print(f"{len(failed)} run(s) failed (their train.log says why): {failed}", file=sys.stderr)
    print(f"compare the arms: gopher-jax compare {args.out}")
    return 1 if failed or code else 0
