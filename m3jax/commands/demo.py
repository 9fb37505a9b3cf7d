"""Run the whole Memory³ pipeline end to end: data, two training stages, bank, evaluation.

Results and plots go to <workdir>/eval/ unless --results/--plots say otherwise
(``make demo`` writes the committed experiments/results/ on purpose).
"""

from __future__ import annotations

import argparse

from m3jax.commands.common import add_bank_arguments, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument(
    "--workdir", default=None, help="run directory (default: artifacts/demo/<variant>)"
  )
  add_bank_arguments(parser, bank=False)
  parser.add_argument(
    "--quick", action="store_true", help="shortened training and evaluation (every step still runs)"
  )
  parser.add_argument(
    "--results",
    default=None,
    help="results JSON (default: eval.results_path or <workdir>/eval/demo.json)",
  )
  parser.add_argument(
    "--plots", default=None, help="plot directory (default: eval.plot_dir or <workdir>/eval/plots)"
  )
  parser.add_argument(
    "--skip-train",
    action="store_true",
    help="evaluate the existing checkpoints of --workdir (its config.json is the config)",
  )


def run(args) -> int:
  from m3jax.run.demo import run_demo

  if args.skip_train and not args.workdir:
    raise ValueError("demo --skip-train needs --workdir (the trained run to evaluate)")
  config = config_from_args(
    args, workdir=args.workdir if args.skip_train else None, fixed_model=args.skip_train
  )
  workdir = args.workdir or f"artifacts/demo/{config.get('variant', 'run')}"
  run_demo(
    config,
    workdir,
    quick=args.quick,
    results_path=args.results,
    plot_dir=args.plots,
    skip_train=args.skip_train,
    allow_stale_bank=args.allow_stale_bank,
  )
  return 0
