"""Encode a knowledge base into a memory bank + retrieval index (warm start, resumable)."""

from __future__ import annotations

import argparse

from m3jax.config_loading import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument("--kb", required=True, help="knowledge base: .jsonl/.txt file or dir")
  parser.add_argument("--bank", default=None,
                      help="bank location: directory or TensorStore URL (default: bank.url)")
  parser.add_argument("--checkpoint", default=None,
                      help="model checkpoint dir (absent: random params, for demos/tests)")
  parser.add_argument("--tokenizer", default="byte",
                      help="'byte' (seqio ByteVocabulary) or a SentencePiece .model path")
  parser.add_argument("--explicit-references", action="store_true",
                      help="every JSONL line is one reference (never split; must fit)")
  parser.add_argument("--quantization", choices=("none", "pq"), default=None)
  parser.add_argument("--index-dir", default=None, help="default: <bank>/index (local banks)")
  parser.add_argument("--allow-stale-bank", action="store_true",
                      help="resume a bank built with other weights or another tokenizer "
                           "(its memories are stale; normally refused)")


def _tokenizer(name: str):
  import seqio
  if name == "byte":
    return seqio.ByteVocabulary()
  return seqio.SentencePieceVocabulary(name)


def _params(args, model_cfg):
  if args.checkpoint is None:
    import jax
    import jax.numpy as jnp
    from m3jax.model.transformer import Transformer
    print("build-memory: no --checkpoint given, encoding with RANDOM parameters "
          "(checkpoint step 0); the bank is only useful for demos and tests")
    params = jax.jit(Transformer(model_cfg).init)(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, 8), jnp.int32))["params"]
    return params, 0
  try:
    from m3jax.train.checkpoint import restore_params
  except ImportError:
    raise SystemExit("build-memory --checkpoint needs m3jax.train.checkpoint.restore_params"
                     " (not available yet); use build_bank(params, ...) from Python") from None
  return restore_params(args.checkpoint, model_cfg)


def run(args) -> int:
  from m3jax.data.references import load_references
  from m3jax.memory.build import bank_config_from, build_bank, default_index_dir
  from m3jax.model.config import model_config_from
  config = config_from_args(args)
  model_cfg = model_config_from(config.model)
  bank_values = dict(config.get("bank", {}) or {})
  if args.quantization:
    bank_values["quantization"] = args.quantization
  bank_cfg = bank_config_from(bank_values)
  url = args.bank or bank_cfg.url
  if not url:
    raise SystemExit("build-memory: give --bank DIR (or set config.bank.url)")
  tokenizer = _tokenizer(args.tokenizer)
  refs = load_references(args.kb, tokenizer, model_cfg.memory.ref_len,
                         explicit=args.explicit_references)
  print(f"build-memory: {len(refs)} references from {args.kb} -> {url}")
  params, step = _params(args, model_cfg)
  try:
    bank = build_bank(params, model_cfg, refs, url, bank_cfg=bank_cfg, checkpoint_step=step,
                      tokenizer=tokenizer, allow_stale=args.allow_stale_bank,
                      index_dir=args.index_dir)
  except ValueError as e:
    raise SystemExit(f"build-memory: {e}") from None
  print(f"build-memory: bank complete, {len(bank)} references, quantization "
        f"{bank.manifest['quantization']}; index in {args.index_dir or default_index_dir(url)}")
  return 0
