"""Run a sweep: every point of experiments/<study>.py:<variant> into its own workdir.

  python -m m3jax sweep --sweep experiments/sweep_tokens_per_head.py:tiny --workdir DIR

Points that share their first stage train it once. --config.x=y overrides apply to
every point (the sweep file supplies the config).
"""

from __future__ import annotations

from m3jax.commands.common import OVERRIDES_HELP


def add_arguments(parser) -> None:
  parser.add_argument(
    "--sweep",
    required=True,
    help="experiments/<file>.py:<variant> defining get_config and get_sweep. " + OVERRIDES_HELP,
  )
  parser.add_argument(
    "--workdir", required=True, help="root directory: one workdir per point, summary.md/.json"
  )
  parser.add_argument(
    "--no-eval", action="store_true", help="train only: no held-out QA per point in the summary"
  )


def run(args) -> int:
  from m3jax.run.sweep import run_sweep

  run_sweep(
    args.sweep, args.workdir, extra_overrides=args.config_overrides, evaluate=not args.no_eval
  )
  return 0
