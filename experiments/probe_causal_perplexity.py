"""Why is causal perplexity with memory worse than without? (issue #10's honest figure)

The demo reports held-out perplexity three ways (``m3jax/evaluate/perplexity.py``): no
memory, causal memory (chunk c reads what chunk c-1's text retrieved, as decoding does)
and the own-text oracle (chunk c retrieves with the tokens it scores). Causal memory
scores worse than none. This probe splits the scored chunks (c >= 1) of the same
held-out sequences by whether the causal retrieval found the same top reference as the
chunk's own text would (``same``: the memory is about what the chunk says) or another
(``other``), and reports each group's mean next-token loss (nats per token) under no
memory, causal memory and own-text memory. If memory helps on ``same`` chunks and hurts
on ``other`` ones, the causal figure measures how often the previous chunk's reference
is the wrong one, and how much a model trained only on matching memories
(``data.train_query="own"``) trusts a wrong one.

  python experiments/probe_causal_perplexity.py --workdir RUN [--sequences 64] [--out FILE]

Writes ``<workdir>/eval/causal_perplexity.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.probe_selection import run_config, trained_run, write_json  # noqa: E402

CONDITIONS = ("no_memory", "causal", "own_text")


def chunk_losses(cfg, params, seqs, memory_fn, batch_size: int = 8):
  """-> (nll [n, C, 3] summed per chunk, tokens [n, C], same_top1 [n, C] bool).

  Chunk c's loss sums the next-token losses of its positions (from 1 on); ``same_top1``
  is False for chunk 0 (it reads nothing causally)."""
  import jax
  import jax.numpy as jnp

  from m3jax.evaluate.perplexity import chunk_queries
  from m3jax.task import LMTask, gather_memory, target_logprobs

  L = cfg.memory.chunk_len
  T = max(len(s) for s in seqs)
  C = -(-T // L)
  model = LMTask.of(cfg).model
  # One forward per condition: log p of every token t >= 1 (index t - 1), summed per chunk.
  token_logp = jax.jit(lambda p, t, m: target_logprobs(model.apply({"params": p}, t, m), t))
  nll = np.zeros((len(seqs), C, len(CONDITIONS)))
  count = np.zeros((len(seqs), C), np.int64)
  same = np.zeros((len(seqs), C), bool)
  for s in range(0, len(seqs), batch_size):
    part = list(seqs[s : s + batch_size])
    n = len(part)
    part += [part[0]] * (batch_size - n)
    tokens = np.full((batch_size, C * L), cfg.pad_id, np.int32)
    for i, seq in enumerate(part):
      tokens[i, : len(seq)] = seq
    mems, top1 = [None], {}
    for retrieval in ("causal", "own_text"):
      plan = [[None] * C for _ in range(batch_size)]
      for i, seq in enumerate(part):
        for c, q in chunk_queries(seq, i, L, retrieval):
          plan[i][c] = q
      got = gather_memory(memory_fn, plan)
      mems.append(got.memory)
      first = {id(q): got.ids[k][0] for k, q in enumerate(got.queries)}
      top1[retrieval] = [[first.get(id(q)) for q in row] for row in plan]
    logp = [np.asarray(token_logp(params, jnp.asarray(tokens), m), np.float64) for m in mems]
    for i in range(n):
      for c in range(C):
        start, end = max(1, c * L), min(len(part[i]), (c + 1) * L)
        for k in range(len(mems)):
          nll[s + i, c, k] = -logp[k][i, start - 1 : max(start, end) - 1].sum()
        count[s + i, c] = max(end - start, 0)
        same[s + i, c] = c > 0 and top1["causal"][i][c] == top1["own_text"][i][c]
  return nll, count, same


def summarize(nll, count, same) -> dict:
  """Mean loss per token under each condition, for every scored chunk and per group."""
  scored = np.zeros_like(same)
  scored[:, 1:] = True  # chunk 0 reads no memory causally: left out of every group
  groups = {"all_chunks_from_1": scored, "same": scored & same, "other": scored & ~same}
  out = {}
  for name, mask in groups.items():
    tokens = int(count[mask].sum())
    out[name] = {
      "chunks": int(mask.sum()),
      "tokens": tokens,
      **{c: float(nll[mask][:, k].sum() / max(tokens, 1)) for k, c in enumerate(CONDITIONS)},
    }
  out["share_same"] = out["same"]["chunks"] / max(out["all_chunks_from_1"]["chunks"], 1)
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained run (its config.json)")
  parser.add_argument("--sequences", type=int, default=64)
  parser.add_argument("--out", default=None, help="default <workdir>/eval/causal_perplexity.json")
  args = parser.parse_args(argv)
  out = args.out or os.path.join(args.workdir, "eval", "causal_perplexity.json")

  from m3jax.evaluate.perplexity import sequences_from_stream
  from m3jax.inference.memory_sources import RetrievedMemory
  from m3jax.memory.feeder import MemoryFeeder

  config = run_config(args.workdir)
  run = trained_run(args.workdir, config)
  cfg = run.cfg
  L = cfg.memory.chunk_len
  stream = np.load(run.paths.tokens("valid"))
  seqs = sequences_from_stream(stream, cfg.bos_id, 4 * L, args.sequences)
  feeder = MemoryFeeder(run.embedder, run.retriever, run.bank, cfg.memory.refs_per_chunk)
  nll, count, same = chunk_losses(cfg, run.params, seqs, RetrievedMemory(feeder, run.vocab))
  result = summarize(nll, count, same)
  result.update(workdir=os.path.abspath(args.workdir), sequences=len(seqs), chunk_len=L)
  print(f"{'chunks':<18} {'n':>5} {'tokens':>7} " + " ".join(f"{c:>10}" for c in CONDITIONS))
  for name in ("all_chunks_from_1", "same", "other"):
    r = result[name]
    print(
      f"{name:<18} {r['chunks']:>5} {r['tokens']:>7} "
      + " ".join(f"{r[c]:>10.3f}" for c in CONDITIONS)
    )
  print(f"causal top-1 = own-text top-1 on {result['share_same']:.0%} of the chunks")
  write_json(result, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
