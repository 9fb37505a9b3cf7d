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
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab, prepare_data
  from m3jax.data.sources import read_jsonl
  from m3jax.demo import build_bank_for, kb_references, load_trained_params
  from m3jax.evaluate import evaluation, report
  from m3jax.model.config import model_config_from
  config = config_from_args(args)
  cfg = model_config_from(config.model)
  ev = report.eval_config_from(config.get("eval"))
  paths = prepare_data(config.data)
  vocab = load_vocab(data_config_from(config.data), paths)
  params, step = load_trained_params(config, args.workdir)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank, emb, ret = build_bank_for(config, cfg, params, refs, args.workdir, step)
  items = read_jsonl(args.qa, "qa") if args.qa else None
  res = evaluation.evaluate_all(cfg, params, vocab, paths, refs, bank, emb, ret, ev,
                                plot_dir=args.plots or ev.plot_dir, qa_items=items)
  res.update({"checkpoint_step": step, "machine": report.machine()})
  path = report.write_json(args.results or ev.results_path.replace("demo.json", "eval.json"),
                           res)
  print(report.table(res))
  print(f"results -> {path}")
  return 0
