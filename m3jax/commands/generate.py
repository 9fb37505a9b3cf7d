"""Generate text with explicit memory (or without, or with RAG) from a trained model.

  python -m m3jax generate --workdir DIR --prompt "..." [--bank URL]

The workdir's config.json is the config (an override that changes the model is an error).
"""

from __future__ import annotations

import argparse

from m3jax.commands.common import add_bank_arguments, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
  add_config_arguments(parser, default=None)
  parser.add_argument("--workdir", required=True, help="trained workdir (python -m m3jax train)")
  add_bank_arguments(parser)
  parser.add_argument(
    "--prompt", action="append", required=True, help="prompt text (repeat for a batch)"
  )
  parser.add_argument(
    "--mode",
    choices=("memory", "no_memory", "rag"),
    default="memory",
    help="read retrieved memories, nothing, or the references as text (RAG)",
  )
  parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate")
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top-k", type=int, default=0, help="0 = the full vocabulary")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def run(args) -> int:
  import jax
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import DataPaths, load_vocab
  from m3jax.run.loading import build_bank_for, kb_references, load_trained_params
  from m3jax.evaluate.qa import encode_prompt
  from m3jax.inference import memory_sources, rag
  from m3jax.inference.generate import Generator
  from m3jax.inference.sampling import SamplingConfig
  from m3jax.memory.feeder import MemoryFeeder
  from m3jax.model.config import model_config_from

  config = config_from_args(args, workdir=args.workdir, fixed_model=True)
  cfg = model_config_from(config.model)
  data_cfg = data_config_from(config.data)
  paths = DataPaths(data_cfg.data_dir)
  vocab = load_vocab(data_cfg, paths)
  params, step = load_trained_params(config, args.workdir)
  texts, memory_fn, retrieved = list(args.prompt), None, None
  if args.mode != "no_memory":
    refs = kb_references(paths, vocab, cfg.memory.ref_len)
    bank, emb, ret = build_bank_for(
      config,
      cfg,
      params,
      refs,
      args.workdir,
      step,
      url=args.bank,
      vocab=vocab,
      allow_stale=args.allow_stale_bank,
    )
    retrieved = memory_sources.RetrievedMemory(
      MemoryFeeder(emb, ret, bank, cfg.memory.refs_per_chunk), vocab
    )
    if args.mode == "memory":
      memory_fn = retrieved
    else:
      text_of = {r.id: r.text for r in refs}
      texts, _ = rag.rag_prompts(
        retrieved,
        texts,
        lambda t: encode_prompt(vocab, t),
        text_of.__getitem__,
        cfg.memory.chunk_len,
      )
  gen = Generator(
    cfg, params, memory_fn=memory_fn, sampling=SamplingConfig(args.temperature, args.top_k)
  )
  res = gen.generate(
    [encode_prompt(vocab, t) for t in texts], args.max_new_tokens, rng=jax.random.key(args.seed)
  )
  for prompt, toks, ids in zip(args.prompt, res.tokens, res.memory_ids):
    print(f"--- {prompt}")
    print(vocab.decode([int(t) for t in toks]))
    if ids:
      print("memories:", {c: [i for i in v if i is not None] for c, v in sorted(ids.items())})
  print(f"time to first token {res.time_to_first_token:.3f} s, decode {res.decode_seconds:.3f} s")
  return 0
