"""Two-stage Memory³ pretraining (warmup without memory, then continual with memory).

  python -m m3jax train --config configs/memory3.py:small --workdir DIR [--config.x=y ...]

Re-running the same command resumes from the latest checkpoints (a config that changes
the model, the data or a started stage is refused; --force starts a new run); SIGTERM
saves and exits with status 143 (128 + SIGTERM), so a scheduler sees the run as
interrupted, not done. The workdir records its config (config.json): every later command
needs only --workdir.
"""

from __future__ import annotations

import json

from m3jax.commands.common import add_config_arguments, config_from_args


def add_arguments(parser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument(
    "--workdir", required=True, help="run directory: config.json, checkpoints, metrics, plots"
  )
  parser.add_argument(
    "--force",
    action="store_true",
    help="start a new run even if --workdir holds one with another config "
    "(the old one is moved aside to <workdir>.replaced-<time>)",
  )
  parser.add_argument(
    "--multihost",
    action="store_true",
    help="call jax.distributed.initialize() (multi-process runs)",
  )


def run(args) -> int:
  import jax

  from m3jax.run.config import build
  from m3jax.run.training_eval import training_evaluators
  from m3jax.train.loop import NonFiniteLossError, train
  from m3jax.train.preempted import PREEMPTED_EXIT

  config = config_from_args(args, workdir=None if args.force else args.workdir)
  if args.multihost:
    config.train.multihost = True
  build(config)  # every section validated before any work
  try:
    summary = train(config, args.workdir, force=args.force, evaluators=training_evaluators(config))
  except NonFiniteLossError as e:
    print(f"train: {e}")
    return 2
  if jax.process_index() == 0:  # one host reports for the pod
    print(
      json.dumps(
        {
          "final_losses": summary["final_losses"],
          "plot": summary.get("plot"),
          "metrics": summary["metrics"],
          "preempted": summary["preempted"],
          "checkpoints": {k: v["latest_checkpoint"] for k, v in summary["stages"].items()},
        },
        indent=2,
      )
    )
  return PREEMPTED_EXIT if summary["preempted"] else 0
