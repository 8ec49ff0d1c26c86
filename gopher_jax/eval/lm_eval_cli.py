"""`gopher-jax-lm-eval`: lm-evaluation-harness's own command line, with `--model gopher_jax` registered.

    gopher-jax-lm-eval --model gopher_jax --model_args workdir=RUN --tasks lambada_openai,piqa --batch_size 16

lm-eval 0.4 finds models only in its built-in table and among classes already imported into the
process; it reads no plugin entry points (EleutherAI/lm-evaluation-harness issues #1457, #1621,
#3282), so the plain `lm_eval` script cannot know `gopher_jax`. This console script (installed with
the package; lm-eval itself comes with the `eval` extra) imports the adapter, which registers the
name, then hands the unchanged argument list to lm-eval's CLI: every lm_eval flag works as documented.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Runs lm-eval's CLI on `argv` (default: sys.argv[1:]) with gopher_jax registered; returns 0
    (2 when lm-eval is not installed)."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError as e:
        print(f"gopher-jax-lm-eval: lm-eval is not installed ({e}); pip install 'gopher-jax[eval]'", file=sys.stderr)
        return 2
    import gopher_jax.eval.lm_eval_adapter  # noqa: F401 — registers --model gopher_jax

    saved = sys.argv
    # lm-eval's parser reads sys.argv (and inserts 'run' into it when no subcommand is given).
    sys.argv = ["lm-eval", *(saved[1:] if argv is None else argv)]
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
