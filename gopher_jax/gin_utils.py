"""Parsing gin files and overrides the same way for every command.

Gin files are looked up as given, then relative to the repository root (the folder holding
`gin_configs/`), so `--gin_file=gin_configs/models/tiny.gin` works from any directory and
`include 'gin_configs/...'` lines inside gin files resolve too.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_CONFIGS = os.path.join(REPO_ROOT, "gin_configs")


def add_gin_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the repeatable `--gin_file` and `--gin_param` flags to a command's parser."""
    parser.add_argument("--gin_file", action="append", default=[],
                        help="gin file (repeatable; later files override earlier ones)")
    parser.add_argument("--gin_param", action="append", default=[],
                        help="gin binding, e.g. ModelConfig.num_layers=4 (repeatable; applied last)")


def resolve_gin_file(path: str) -> str:
    """Returns an existing path for a gin file, or raises FileNotFoundError naming where it looked."""
    candidates = [path, os.path.join(REPO_ROOT, path), os.path.join(GIN_CONFIGS, path)]
    for c in candidates:
        if os.path.isfile(c):
            return c
    known = sorted(
        os.path.relpath(os.path.join(d, f), REPO_ROOT)
        for d, _, files in os.walk(GIN_CONFIGS) for f in files if f.endswith(".gin"))
    raise FileNotFoundError(
        f"gin file {path!r} not found (looked in {candidates}). Known gin files:\n  " + "\n  ".join(known))


def parse_gin(gin_files: Sequence[str], gin_params: Sequence[str] = (), *, finalize: bool = False) -> None:
    """Clears gin, then parses the given files and bindings (configurables must be imported first)."""
    gin.clear_config()
    if REPO_ROOT not in gin.config._LOCATION_PREFIXES:  # lets `include 'gin_configs/..'` resolve
        gin.add_config_file_search_path(REPO_ROOT)
    files = [resolve_gin_file(f) for f in gin_files]
    try:
        gin.parse_config_files_and_bindings(files, list(gin_params), finalize_config=finalize)
    except (ValueError, KeyError) as e:
        raise ValueError(f"bad gin configuration ({e}); files={list(gin_files)}, params={list(gin_params)}") from e


def is_bound(name: str) -> bool:
    """Returns whether gin has a binding for `name` (e.g. "register_massivetext_tasks.manifest")."""
    import gin
    try:
        gin.query_parameter(name)
        return True
    except ValueError:
        return False
