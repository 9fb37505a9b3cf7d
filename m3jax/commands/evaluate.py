"""Evaluate a trained model: held-out QA (5 conditions), perplexity, throughput, plots.

  python -m m3jax eval --workdir DIR [--bank URL] [--qa qa.jsonl]

The workdir's config.json is the config (an override that changes the model is an
error). Results and plots go to <workdir>/eval/ unless --results/--plots say otherwise.
"""

from __future__ import annotations

import argparse
import os

from m3jax.commands.common import add_bank_arguments, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default=None)
  parser.add_argument("--workdir", required=True, help="trained workdir (python -m m3jax train)")
  add_bank_arguments(parser)
  parser.add_argument(
    "--qa",
    default=None,
    help="QA JSONL {question, answer, choices?, gold_ref_id?}; default: the prepared held-out QA",
  )
  parser.add_argument(
    "--only",
    default=None,
    help="comma-separated parts to run: qa,retrievers,perplexity,speed,attribution,"
    "insertion (default: all but retrievers, the slow TF-IDF/MiniLM/self-retrieval "
    "comparison); a part that cannot run is skipped with its "
    "reason in the results",
  )
  parser.add_argument(
    "--results",
    default=None,
    help="results JSON; default: eval.results_path or <workdir>/eval/eval.json",
  )
  parser.add_argument(
    "--plots", default=None, help="plot directory; default: eval.plot_dir or <workdir>/eval/plots"
  )


def run(args) -> int:
  from m3jax.data.sources import read_jsonl
  from m3jax.evaluate import report
  from m3jax.run.config import build
  from m3jax.run.loading import evaluate_run, load_trained_run

  config = config_from_args(args, workdir=args.workdir, fixed_model=True)
  ev = build(config).eval
  trained = load_trained_run(
    config, args.workdir, bank_url=args.bank, allow_stale=args.allow_stale_bank
  )
  items = read_jsonl(args.qa, "qa") if args.qa else None
  out = os.path.join(args.workdir, "eval")
  res = evaluate_run(
    trained,
    ev,
    plot_dir=args.plots or ev.plot_dir or os.path.join(out, "plots"),
    qa_items=items,
    only=args.only.split(",") if args.only else None,
  )
  res.update({"checkpoint_step": trained.step, "machine": report.machine()})
  path = report.write_json(args.results or ev.results_path or os.path.join(out, "eval.json"), res)
  page = report.write_html(
    os.path.splitext(path)[0] + ".html", res, f"m3jax eval {os.path.abspath(args.workdir)}"
  )
  print(report.table(res))
  print(f"results -> {path}; report -> {page}")
  return 0
