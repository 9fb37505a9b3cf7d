"""Two-stage Memory³ pretraining (warmup without memory, then continual with memory).

  python -m m3jax train --config configs/memory3.py:small --workdir DIR [--config.x=y ...]

Re-running the same command resumes from the latest checkpoints; SIGTERM saves and exits
with status 143 (128 + SIGTERM), so a scheduler sees the run as interrupted, not done.
"""

from __future__ import annotations

import json

PREEMPTED_EXIT = 143   # 128 + SIGTERM: saved, not finished


def add_arguments(parser) -> None:
  from m3jax.config_loading import add_config_arguments
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument("--workdir", required=True, help="checkpoints, metrics, plots")
  parser.add_argument("--multihost", action="store_true",
                      help="call jax.distributed.initialize() (multi-process runs)")


def run(args) -> int:
  import jax

  from m3jax.config_loading import config_from_args
  from m3jax.train.loop import NonFiniteLossError, train
  config = config_from_args(args)
  if args.multihost:
    config.train.multihost = True
  try:
    summary = train(config, args.workdir)
  except NonFiniteLossError as e:
    print(f"train: {e}")
    return 2
  if jax.process_index() == 0:   # one host reports for the pod
    print(json.dumps({"final_losses": summary["final_losses"], "plot": summary.get("plot"),
                      "metrics": summary["metrics"], "preempted": summary["preempted"],
                      "checkpoints": {k: v["latest_checkpoint"]
                                      for k, v in summary["stages"].items()}}, indent=2))
  return PREEMPTED_EXIT if summary["preempted"] else 0
