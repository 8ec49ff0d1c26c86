"""`gopher-jax data process`: filter, dedup and decontaminate a jsonl/text corpus.

Example:
  gopher-jax data process --input tests/fixtures/corpus --output /tmp/out --stats /tmp/stats.json \
      --stages unicode,langid,quality,repetition,exact_dedup,fuzzy_dedup,decontam \
      --eval tests/fixtures/eval --gin_file gin_configs/data/gopher.gin --runner inprocess
Runners: "inprocess" (this process, with progress bars), or a Beam runner: direct, dataflow,
flink, spark, portable (arguments after `--` go to Beam, e.g. -- --project=P --region=R).
Output: OUT/<component>/{train,validation}/part-SSSSS-of-NNNNN.{jsonl,tfrecord}, OUT/stats.json
and OUT/manifest.json (gopher_jax.data.manifest), merged across runs into the same OUT.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from gopher_jax import gin_utils
from gopher_jax.data.manifest import MANIFEST_NAME

RUNNERS = ("inprocess", "direct", "dataflow", "flink", "spark", "portable")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the command's flags (and gin's) to parser."""
    parser.add_argument("--input", action="append", required=True,
                        help="jsonl/txt file, directory or quoted glob, optionally NAME=PATH (repeatable)")
    parser.add_argument("--output", required=True,
                        help="output directory: OUTPUT/<component>/{train,validation}/ shards and "
                             "OUTPUT/manifest.json (merged with one already there)")
    parser.add_argument("--stats", default=None, help="stats json path (default OUTPUT/stats.json)")
    parser.add_argument("--stages", default=None,
                        help="comma-separated stages to run, in pipeline order (default: all): "
                             "unicode,langid,short_docs,quality,repetition,exact_dedup,fuzzy_dedup,decontam")
    parser.add_argument("--eval", action="append", default=[],
                        help="evaluation file or directory for decontamination (repeatable)")
    parser.add_argument("--decontam_mode", choices=("gopher", "mtnlg"), default=None,
                        help="override DecontamConfig.mode")
    parser.add_argument("--runner", choices=RUNNERS, default="inprocess")
    parser.add_argument("--num_shards", type=int, default=None, help="override PipelineConfig.num_shards")
    parser.add_argument("--no_tfrecord", action="store_true", help="write jsonl shards only")
    parser.add_argument("--validation_fraction", type=float, default=None,
                        help="override PipelineConfig.validation_fraction (share of each component's "
                             "documents held out, chosen by document-id hash; 0 = no validation split)")
    parser.add_argument("beam_args", nargs=argparse.REMAINDER, help="after `--`: Beam pipeline options")
    gin_utils.add_gin_arguments(parser)


def build_config(args: argparse.Namespace):
    """Returns the ProcessConfig from gin plus command-line overrides."""
    from gopher_jax.data.corpus import config as cfg_mod
    gin_utils.parse_gin(args.gin_file, args.gin_param)
    config = cfg_mod.ProcessConfig.from_gin()
    pipeline = config.pipeline
    if args.stages is not None:
        pipeline = dataclasses.replace(pipeline, stages=cfg_mod.parse_stages(args.stages))
    if args.num_shards is not None:
        pipeline = dataclasses.replace(pipeline, num_shards=args.num_shards)
    if args.no_tfrecord:
        pipeline = dataclasses.replace(pipeline, write_tfrecord=False)
    if args.validation_fraction is not None:
        pipeline = dataclasses.replace(pipeline, validation_fraction=args.validation_fraction)
    decontam = config.decontam
    if args.eval:
        decontam = dataclasses.replace(decontam, eval_paths=tuple(args.eval))
    if args.decontam_mode:
        decontam = dataclasses.replace(decontam, mode=args.decontam_mode)
    if "decontam" in cfg_mod.parse_stages(pipeline.stages) and not decontam.eval_paths:
        if args.stages is not None or gin_utils.is_bound("corpus.PipelineConfig.stages"):
            raise ValueError("stage 'decontam' needs evaluation sets: pass --eval PATH "
                             "(or drop it with --stages ...)")
        # Default stage list and no eval sets: run everything else rather than fail.
        print("note: no --eval given, skipping stage 'decontam'", file=sys.stderr)
        pipeline = dataclasses.replace(pipeline, stages=tuple(
            s for s in cfg_mod.parse_stages(pipeline.stages) if s != "decontam"))
    return dataclasses.replace(config, pipeline=pipeline, decontam=decontam)


def run(args: argparse.Namespace) -> int:
    """Runs the pipeline, prints the stats summary; returns 0, or 2 on a bad argument."""
    try:
        config = build_config(args)
        # Inputs, component names and the output's manifest, checked before any processing.
        from gopher_jax.data.corpus.reader import expand_inputs
        from gopher_jax.data.corpus.writer import check_output
        check_output(expand_inputs(args.input), args.output, config.pipeline.validation_fraction)
    except (ValueError, FileNotFoundError) as e:
        print(f"gopher-jax data process: {e}", file=sys.stderr)
        return 2
    stats_path = args.stats or os.path.join(args.output, "stats.json")
    beam_args = [a for a in args.beam_args if a != "--"]
    print(f"stages: {','.join(config.stages)}  runner: {args.runner}", file=sys.stderr)
    try:
        if args.runner == "inprocess":
            from gopher_jax.data.corpus.local_pipeline import run_local
            stats = run_local(args.input, args.output, config, stats_path)
        else:
            from gopher_jax.data.corpus.beam_pipeline import run_beam
            stats = run_beam(args.input, args.output, config, stats_path, args.runner, beam_args)
    except FileNotFoundError as e:
        print(f"gopher-jax data process: {e}", file=sys.stderr)
        return 2
    if stats is None:
        print(f"pipeline submitted; stats will be written to {stats_path}, "
              f"the manifest to {os.path.join(args.output, MANIFEST_NAME)}")
        return 0
    print(stats.summary())
    print(f"output: {args.output}   stats: {stats_path}   manifest: {os.path.join(args.output, MANIFEST_NAME)}")
    return 0
