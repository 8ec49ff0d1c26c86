"""Every run of a sweep is checked before anything trains: its gin stack parses, its configs build,
`validate` (model vs mesh vs batch vs devices, the check `gopher-jax train` runs first) passes, and
its parameters are counted (`gopher-jax params`). One bad arm stops the whole sweep, naming the arm,
the run and the binding, so a typo costs seconds instead of the runs queued behind it.
"""
from __future__ import annotations

from gopher_jax.sweep.plan import RunPlan


class ArmError(ValueError):
    """One line per invalid run: arm, run name, and what `validate` or gin said."""


def import_configurables() -> None:
    """Imports every gin configurable `gopher-jax train` knows (the train command's own list)."""
    from gopher_jax.train.cli import import_configurables as train_configurables
    train_configurables()


def check_run(run: RunPlan, num_devices: int) -> dict:
    """Parses the run's gin and validates it for `num_devices` devices; returns its parameter counts.

    Raises ValueError (gin, config construction) or validate.ConfigError (shapes vs mesh)."""
    from gopher_jax import gin_utils
    from gopher_jax.model.config import ModelConfig
    from gopher_jax.model.param_count import count_params
    from gopher_jax.parallel.mesh import MeshConfig
    from gopher_jax.parallel.rules import sharding_rules
    from gopher_jax.train.config import OptimizerConfig, TrainConfig
    from gopher_jax.train.validate import validate

    gin_utils.parse_gin(run.gin_files, run.params)
    model, train, _ = ModelConfig(), TrainConfig(), OptimizerConfig()
    validate(model, train, MeshConfig(), sharding_rules(), num_devices=num_devices)
    return count_params(model)


def validate_runs(runs: list[RunPlan], num_devices: int) -> dict[str, dict]:
    """Checks every run (see check_run); returns {run name: parameter counts}; raises ArmError listing
    every invalid run before any of them trains. Leaves gin cleared."""
    import gin

    import_configurables()
    counts, problems = {}, []
    try:
        for r in runs:
            try:
                counts[r.name] = check_run(r, num_devices)
            except (ValueError, TypeError, FileNotFoundError) as e:
                problems.append(f"arm {r.arm!r} (run {r.name}; bindings {list(r.params)}, gin files "
                                f"{list(r.gin_files)}): {e}")
    finally:
        gin.clear_config()
    if problems:
        raise ArmError(f"{len(problems)} of {len(runs)} runs are invalid; nothing was trained:\n  - "
                       + "\n  - ".join(problems))
    return counts
