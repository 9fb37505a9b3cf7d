"""Encode a knowledge base into a memory bank + retrieval index (warm start, resumable).

  python -m m3jax build-memory --workdir DIR [--bank URL] [--kb kb.jsonl]

With --workdir the run is the default for everything: its config, its last checkpoint,
its vocabulary, and its knowledge base and reference ids (one reference per JSONL line,
as training saw them). Without it, give --kb, --config and --checkpoint (or none: random
parameters, for demos and tests).
"""

from __future__ import annotations

import argparse

from m3jax.commands.common import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default="configs/memory3.py:small")
  parser.add_argument(
    "--workdir",
    default=None,
    help="trained workdir: its config, last checkpoint, vocabulary and KB",
  )
  parser.add_argument(
    "--kb",
    default=None,
    help="knowledge base: .jsonl/.txt file or dir (default with --workdir: "
    "the run's prepared references)",
  )
  parser.add_argument(
    "--bank",
    default=None,
    help="bank location: directory or TensorStore URL (default: bank.url, "
    "or <workdir>/bank-step<step> with --workdir)",
  )
  parser.add_argument(
    "--checkpoint",
    default=None,
    help="checkpoint: workdir, stage or step directory (default: the "
    "--workdir's last stage; absent without --workdir: random parameters)",
  )
  parser.add_argument(
    "--tokenizer",
    default=None,
    help="'byte' (seqio ByteVocabulary) or a SentencePiece .model path "
    "(default: the --workdir's vocabulary, else 'byte')",
  )
  parser.add_argument(
    "--explicit-references",
    action="store_true",
    default=None,
    help="every JSONL line is one reference (never split; must fit); the default with --workdir",
  )
  parser.add_argument(
    "--quantization", choices=("none", "pq"), default=None, help="default: config.bank.quantization"
  )
  parser.add_argument("--index-dir", default=None, help="default: <bank>/index (local banks)")
  parser.add_argument(
    "--allow-stale-bank",
    action="store_true",
    help="resume a bank built with other weights or another tokenizer "
    "(its memories are stale; normally refused)",
  )


def _tokenizer(name: str):
  import seqio

  if name == "byte":
    return seqio.ByteVocabulary()
  return seqio.SentencePieceVocabulary(name)


def _random_params(model_cfg):
  import jax
  import jax.numpy as jnp
  from m3jax.model.transformer import Transformer

  print(
    "build-memory: no --checkpoint given, encoding with RANDOM parameters "
    "(checkpoint step 0); the bank is only useful for demos and tests"
  )
  return jax.jit(Transformer(model_cfg).init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))[
    "params"
  ], 0


def run(args) -> int:
  from m3jax.data.references import load_references
  from m3jax.memory.build import build_bank, default_index_dir, served_configs
  from m3jax.run.config import build
  from m3jax.run.loading import default_bank_url, kb_references, load_trained_params
  from m3jax.train.checkpoint import restore_params

  config = config_from_args(args, workdir=args.workdir, fixed_model=args.workdir is not None)
  build(config)
  overrides = {"quantization": args.quantization} if args.quantization else {}
  model_cfg, bank_cfg = served_configs(config, **overrides)
  if args.checkpoint:
    params, step = restore_params(args.checkpoint, model_cfg)
  elif args.workdir:
    params, step = load_trained_params(config, args.workdir)
  else:
    params, step = _random_params(model_cfg)
  url = (
    args.bank
    or bank_cfg.url
    or (default_bank_url(args.workdir, step, bank_cfg.tokens_per_head) if args.workdir else None)
  )
  if not url:
    raise ValueError("build-memory: give --bank DIR (or --workdir, or set config.bank.url)")
  if args.workdir and args.tokenizer is None:
    from m3jax.data.config import data_config_from
    from m3jax.data.prepare import load_vocab, prepare_data

    paths = prepare_data(config.data)
    tokenizer = load_vocab(data_config_from(config.data), paths)
    explicit = True if args.explicit_references is None else args.explicit_references
    refs = (
      load_references(args.kb, tokenizer, model_cfg.memory.ref_len, explicit=explicit)
      if args.kb
      else kb_references(paths, tokenizer, model_cfg.memory.ref_len)
    )
  else:
    if not args.kb:
      raise ValueError("build-memory: give --kb (the knowledge base), or --workdir")
    tokenizer = _tokenizer(args.tokenizer or "byte")
    refs = load_references(
      args.kb, tokenizer, model_cfg.memory.ref_len, explicit=bool(args.explicit_references)
    )
  print(f"build-memory: {len(refs)} references from {args.kb or 'the run'} -> {url}")
  bank = build_bank(
    params,
    model_cfg,
    refs,
    url,
    bank_cfg=bank_cfg,
    checkpoint_step=step,
    tokenizer=tokenizer,
    allow_stale=args.allow_stale_bank,
    index_dir=args.index_dir,
  )
  print(
    f"build-memory: bank complete, {len(bank)} references, quantization "
    f"{bank.manifest['quantization']}; index in {args.index_dir or default_index_dir(url)}"
  )
  return 0
