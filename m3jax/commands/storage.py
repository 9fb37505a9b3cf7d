"""Print explicit-memory storage per reference and for a whole bank (paper §3.3)."""

from __future__ import annotations

import argparse

from m3jax.commands.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:paper_2p4b")
  parser.add_argument(
    "--num-references",
    type=float,
    default=None,
    help="bank size (default: config.bank.storage_num_references, 1.12e8)",
  )
  parser.add_argument(
    "--pq-bytes",
    type=int,
    default=None,
    help="bytes per PQ-coded vector (default: config.bank.pq_bytes_per_vector)",
  )


def run(args) -> int:
  from m3jax.memory.storage import storage_report
  from m3jax.model.config import model_config_from

  config = config_from_args(args)
  bank = config.get("bank", {}) or {}
  n = args.num_references or bank.get("storage_num_references", 112_000_000)
  pq = args.pq_bytes or bank.get("pq_bytes_per_vector", 14)
  report = storage_report(model_config_from(config.model), pq, int(n))
  print(f"storage for {args.config or args.default_config}")
  for line in report.lines():
    print("  " + line)
  return 0
