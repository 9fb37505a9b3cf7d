"""Run the whole Memory³ pipeline end to end: data, two training stages, bank, evaluation."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from m3jax.config_loading import add_config_arguments
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument("--workdir", default=None,
                      help="training/bank directory (default: artifacts/demo/<variant>)")
  parser.add_argument("--quick", action="store_true",
                      help="shortened training and evaluation (every step still runs)")
  parser.add_argument("--results", default=None, help="results JSON (default: eval.results_path)")
  parser.add_argument("--plots", default=None, help="plot directory (default: eval.plot_dir)")
  parser.add_argument("--skip-train", action="store_true",
                      help="evaluate the existing checkpoints of --workdir")


def run(args) -> int:
  from m3jax.config_loading import config_from_args
  from m3jax.demo import run_demo
  config = config_from_args(args)
  workdir = args.workdir or f"artifacts/demo/{config.get('variant', 'run')}"
  run_demo(config, workdir, quick=args.quick, results_path=args.results,
           plot_dir=args.plots, skip_train=args.skip_train)
  return 0
