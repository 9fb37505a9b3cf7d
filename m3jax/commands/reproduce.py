"""A reproduction run beyond the demo: learning curves and two-stage vs memory from scratch.

  python -m m3jax reproduce [--config configs/memory3.py:small] [--workdir DIR] [--out DIR]

Trains the config's two stages with the memory stage --scale times longer, and memory
from scratch for the same tokens; every --eval-every steps a checkpoint is evaluated on
held-out QA (no memory, memory, RAG, random memory; exact match and multiple choice per
value kind). Re-running the command resumes. On the 2-core CPU the default (small, scale
1.75: 200 + 6,125 = 6,325 steps per arm, 6.5M tokens) takes about 80 minutes on the Intel
VM and about 60 on the AMD one; scale 3 took about 2 hours, over the issue's 90. (The
default was scale 2 of a 3,000-step stage, 6,200 steps, until session 37 lengthened the
demo's stage to 3,500; 1.75 keeps the budget.) Plots and JSON go to --out.
"""

from __future__ import annotations

import argparse

from m3jax.commands.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument(
    "--workdir", default=None, help="root of the two runs (default: artifacts/reproduce/<variant>)"
  )
  parser.add_argument(
    "--out",
    default=None,
    help="curves.jsonl, learning_curves.png, summary.json (default: "
    "<workdir>/results; `make reproduce` passes experiments/results/reproduce)",
  )
  parser.add_argument(
    "--scale", type=float, default=1.75, help="length of the memory stage relative to the config's"
  )
  parser.add_argument(
    "--eval-every",
    type=int,
    default=None,
    help="steps between evaluated checkpoints (default: an eighth of the longer run)",
  )
  parser.add_argument("--questions", type=int, default=256, help="held-out QA per checkpoint")
  parser.add_argument(
    "--no-train",
    action="store_true",
    help="evaluate the checkpoints the runs already kept (e.g. one stopped early) without "
    "training further; Fig. 11 compares the runs at the tokens both reached",
  )
  parser.add_argument(
    "--runs",
    default=None,
    help="comma-separated runs to train and evaluate now (two_stage, from_scratch; default "
    "both); rows already in --out's curves.jsonl stay in the summary",
  )


def run(args) -> int:
  import json
  import os

  from m3jax.run.reproduce import reproduce

  if (
    args.scale <= 0 or (args.eval_every is not None and args.eval_every <= 0) or args.questions <= 0
  ):
    raise ValueError("reproduce: --scale, --eval-every and --questions must be positive")
  config = config_from_args(args)
  workdir = args.workdir or f"artifacts/reproduce/{config.get('variant', 'run')}"
  out = args.out or os.path.join(workdir, "results")
  summary = reproduce(
    config,
    workdir,
    out,
    scale=args.scale,
    eval_every=args.eval_every,
    num_questions=args.questions,
    runs=tuple(args.runs.split(",")) if args.runs else None,
    train_runs=not args.no_train,
  )
  print(
    json.dumps(
      {k: summary[k] for k in ("final", "fig11_equal_tokens", "plot") if k in summary}, indent=2
    )
  )
  return 0
