"""Run a sweep: every point of experiments/<study>.py:<variant> into its own workdir.

  python -m m3jax sweep --sweep experiments/sweep_tokens_per_head.py:tiny --workdir DIR
"""

from __future__ import annotations


def add_arguments(parser) -> None:
  from m3jax.config_loading import add_config_arguments
  add_config_arguments(parser, default="configs/memory3.py:tiny")
  parser.add_argument("--sweep", required=True, help="experiments/<file>.py:<variant>")
  parser.add_argument("--workdir", required=True)


def run(args) -> int:
  from m3jax.train.sweep import run_sweep
  # --config.x=y overrides apply to every point (the sweep file supplies the config).
  run_sweep(args.sweep, args.workdir, extra_overrides=args.config_overrides)
  return 0
