"""Evaluate a trained model: held-out QA (5 conditions), perplexity, throughput, plots."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from m3jax.config_loading import add_config_arguments
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument("--workdir", required=True, help="training workdir (checkpoints, bank)")
  parser.add_argument("--qa", default=None,
                      help="QA JSONL {question, answer, choices?, gold_ref_id?} "
                      "(default: the prepared held-out QA)")
  parser.add_argument("--results", default=None, help="results JSON (default: eval.results_path)")
  parser.add_argument("--plots", default=None, help="plot directory (default: eval.plot_dir)")


def run(args) -> int:
  from m3jax.config_loading import config_from_args
  from m3jax.data.sources import read_jsonl
  from m3jax.demo import load_trained_run
  from m3jax.evaluate import evaluation, report
  config = config_from_args(args)
  ev = report.eval_config_from(config.get("eval"))
  trained = load_trained_run(config, args.workdir)
  items = read_jsonl(args.qa, "qa") if args.qa else None
  t = trained
  res = evaluation.evaluate_all(t.cfg, t.params, t.vocab, t.paths, t.refs, t.bank, t.embedder,
                                t.retriever, ev,
                                plot_dir=args.plots or ev.plot_dir, qa_items=items)
  res.update({"checkpoint_step": t.step, "machine": report.machine()})
  path = report.write_json(args.results or ev.results_path.replace("demo.json", "eval.json"),
                           res)
  print(report.table(res))
  print(f"results -> {path}")
  return 0
