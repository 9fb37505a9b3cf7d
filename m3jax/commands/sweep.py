"""Run a sweep: every point of experiments/<study>.py:<variant> into its own workdir.

  python -m m3jax sweep --sweep experiments/sweep_tokens_per_head.py:tiny --workdir DIR

Points that share their first stage train it once. --config.x=y overrides apply to
every point (the sweep file supplies the config).
"""

from __future__ import annotations

from m3jax.commands.common import OVERRIDES_HELP


def add_arguments(parser) -> None:
  parser.add_argument("--sweep", required=True,
                      help="experiments/<file>.py:<variant> defining get_config and get_sweep. "
                      + OVERRIDES_HELP)
  parser.add_argument("--workdir", required=True,
                      help="root directory: one workdir per point, summary.md/.json")


def run(args) -> int:
  from m3jax.run.sweep import run_sweep
  run_sweep(args.sweep, args.workdir, extra_overrides=args.config_overrides)
  return 0
