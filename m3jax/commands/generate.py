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
  from m3jax.evaluate.qa import encode_prompt
  from m3jax.inference import memory_sources, rag
  from m3jax.inference.generate import Generator
  from m3jax.inference.sampling import SamplingConfig
  from m3jax.memory.feeder import MemoryFeeder
  from m3jax.run.loading import load_trained_run

  config = config_from_args(args, workdir=args.workdir, fixed_model=True)
  trained = load_trained_run(
    config,
    args.workdir,
    bank_url=args.bank,
    allow_stale=args.allow_stale_bank,
    with_bank=args.mode != "no_memory",
  )
  cfg, vocab = trained.cfg, trained.vocab
  texts, memory_fn, retrieved = list(args.prompt), None, None
  if args.mode != "no_memory":
    feeder = MemoryFeeder(
      trained.embedder, trained.retriever, trained.bank, cfg.memory.refs_per_chunk
    )
    retrieved = memory_sources.RetrievedMemory(feeder, vocab)
    if args.mode == "memory":
      memory_fn = retrieved
    else:
      text_of = {r.id: r.text for r in trained.refs}
      texts, _ = rag.rag_prompts(
        retrieved,
        texts,
        lambda t: encode_prompt(vocab, t),
        text_of.__getitem__,
        cfg.memory.chunk_len,
      )
  gen = Generator(
    cfg, trained.params, memory_fn=memory_fn, sampling=SamplingConfig(args.temperature, args.top_k)
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
