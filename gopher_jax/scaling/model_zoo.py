"""The real model configs in gin_configs/models/*.gin, with analytic parameter counts."""
from __future__ import annotations

import functools
import glob
import math
import os

from gopher_jax.gin_utils import GIN_CONFIGS, REPO_ROOT, parse_gin
from gopher_jax.model.config import ModelConfig
from gopher_jax.scaling.params import count_params


def load_config(gin_files, gin_params=()) -> ModelConfig:
    """Returns the ModelConfig that model gin file(s) (plus bindings) describe. Clears the global gin config."""
    import gin

    parse_gin([gin_files] if isinstance(gin_files, str) else list(gin_files), gin_params)
    try:
        return ModelConfig()
    finally:
        gin.clear_config()


@functools.lru_cache(maxsize=None)
def zoo() -> tuple[tuple[str, int], ...]:
    """Returns ((gin file relative to the repo, parameter count), ...) for every model gin file."""
    out = []
    for path in sorted(glob.glob(os.path.join(GIN_CONFIGS, "models", "*.gin"))):
        out.append((os.path.relpath(path, REPO_ROOT), count_params(load_config(path))))
    if not out:
        raise FileNotFoundError(f"no model gin files under {os.path.join(GIN_CONFIGS, 'models')}")
    return tuple(out)


def nearest_config(n_params: float) -> dict:
    """Returns {'gin_file', 'params', 'ratio'} of the config closest to n_params in log space."""
    gin_file, params = min(zoo(), key=lambda z: abs(math.log(z[1] / n_params)))
    return {"gin_file": gin_file, "params": params, "ratio": params / n_params}
