"""Has the model learned to read *values* from memory yet? A short run and two probes.

On the small demo the gain from memory arrives suddenly (docs/design.md, "the small demo
config"): the model first copies entity *names* out of its memories, and only later the
attribute *values* that questions ask for. This script trains a config (with overrides)
for a short budget and reports, on held-out QA:

* multiple-choice accuracy with no memory and with the gold (oracle) reference, through
  the real bank and feeder;
* the mean NLL of the answer's first token and of the whole ``Q: … A: value`` text with
  no memory, the gold reference and a random reference. A gold-memory gain on the whole
  text with none on the answer token means "names yes, values not yet".

One JSON row per run is appended to ``--out``; a table is printed.

  python experiments/probe_memory_onset.py --name all4 --steps 50,550 \\
      --config.model.memory.memory_layers='(0,1,2,3)'
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.run.config import apply_overrides, load_config
from m3jax.data import synthetic
from m3jax.data.sources import read_jsonl
from m3jax.run.loading import load_trained_run
from m3jax.evaluate import evaluation, kinds, qa
from m3jax.inference import memory_sources
from m3jax.memory.feeder import MemoryFeeder
from m3jax.model.transformer import Transformer
from m3jax.train.loop import train
from m3jax.train.memory_batch import memory_from_batch
from m3jax.task import target_logprobs
from m3jax.train.stages import resize_stage
from m3jax.train.workdir import saved_config


def set_steps(config, steps: list[int]):
  """Stage lengths; a first length of 0 trains with memory from scratch (one stage)."""
  order = list(config.train.stage_order)
  if len(steps) != len(order):
    raise ValueError(f"--steps needs {len(order)} numbers (one per stage), got {steps}")
  for name, n in zip(order, steps):
    if n:
      resize_stage(config.train.stages[name], n)
  if steps[0] == 0:
    last = order[-1]
    apply_overrides(
      config,
      {
        "train.stages": {last: dict(config.train.stages[last].to_dict(), init_from="")},
        "train.stage_order": (last,),
      },
    )
  return config


def qa_token_masks(vocab, items, bos_id: int, chunk: int):
  """``(tokens_BxT, first_BxT1, later_BxT1)``: ``<s>`` + each item's ``Q: … A: value``
  text, zero-padded to whole chunks; ``first``/``later`` mark, in next-token (target)
  coordinates, the answer's first token and its later tokens."""
  prompts = [vocab.encode(synthetic.qa_prompt(it["question"])) for it in items]
  texts = [[bos_id] + vocab.encode(synthetic.qa_text(it["question"], it["answer"])) for it in items]
  b, t = len(items), -(-max(map(len, texts)) // chunk) * chunk
  tokens = np.zeros((b, t), np.int32)
  first, later = np.zeros((b, t - 1), bool), np.zeros((b, t - 1), bool)
  for i, (prompt, full) in enumerate(zip(prompts, texts)):
    tokens[i, : len(full)] = full
    first[i, len(prompt)] = True  # logits at <s>+prompt predict the answer
    later[i, len(prompt) + 1 : len(full) - 1] = True  # the answer's other tokens
  return tokens, first, later


def answer_nll(
  cfg, params, vocab, items, refs_by_id, ref_pool, seed: int = 0, value_kinds=None
) -> dict:
  """Mean NLL per memory kind (none, gold, random) of the answer's first token, of its
  later pieces (a multi-piece value's continuation, which a model can copy out of memory
  once it has the first piece: an induction copy, no attribute lookup), and of the whole
  QA text; the answer figures also per value kind (``evaluate.kinds``; pass
  ``value_kinds`` inferred from the whole QA file: a subset can make a closed list look
  like names)."""
  model, n_ref, chunk = Transformer(cfg), cfg.memory.ref_len, cfg.memory.chunk_len
  tokens, first, rest = qa_token_masks(vocab, items, cfg.bos_id, chunk)
  b, c = tokens.shape[0], tokens.shape[1] // chunk  # every chunk sees the same reference

  @jax.jit
  def nll_BxT(params, tokens_BxT, refs_BxN, ref_len_B):
    memory = memory_from_batch(
      params, cfg, jnp.repeat(refs_BxN[:, None], c, 1), jnp.repeat(ref_len_B[:, None], c, 1)
    )
    return -target_logprobs(model.apply({"params": params}, tokens_BxT, memory), tokens_BxT)

  row_kind = np.array([k or "unknown" for k in kinds.item_kinds(items, value_kinds)])
  refs = {k: np.zeros((b, n_ref), np.int32) for k in ("gold", "random")}
  lens = {k: np.zeros(b, np.int32) for k in ("none", "gold", "random")}
  rng = np.random.default_rng(seed)
  for i, it in enumerate(items):
    for kind, ref in (
      ("gold", refs_by_id[it["gold_ref_id"]]),
      ("random", refs_by_id[ref_pool[rng.integers(len(ref_pool))]]),
    ):
      refs[kind][i, : len(ref)] = ref
      lens[kind][i] = len(ref)
  text = tokens[:, 1:] > 0
  out = {}
  for kind in ("none", "gold", "random"):
    # "none" passes the gold tokens with length 0: every memory slot masked.
    nll = np.asarray(nll_BxT(params, tokens, refs.get(kind, refs["gold"]), lens[kind]))
    out[kind] = {
      "answer_first_token": float(nll[first].mean()),
      "answer_later_pieces": float(nll[rest].mean()) if rest.any() else None,
      "qa_text": float(nll[text].mean()),
      "by_value_kind": {
        vk: {
          "n": int((row_kind == vk).sum()),
          "answer_first_token": float(nll[first & (row_kind == vk)[:, None]].mean()),
          "answer_later_pieces": (
            float(nll[rest & (row_kind == vk)[:, None]].mean())
            if (rest & (row_kind == vk)[:, None]).any()
            else None
          ),
        }
        for vk in sorted(set(row_kind))
      },
    }
  return out


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/memory3.py:small")
  parser.add_argument("--name", required=True, help="row name in --out")
  parser.add_argument("--steps", required=True, help="steps per stage, e.g. 50,550")
  parser.add_argument("--workdir", default=None, help="default artifacts/probe/<name>")
  parser.add_argument("--out", default="experiments/results/probe_memory_onset.jsonl")
  parser.add_argument("--questions", type=int, default=256)
  parser.add_argument(
    "--no-train",
    action="store_true",
    help="probe the finished run in --workdir as it is (its recorded config; no training)",
  )
  args, overrides = parser.parse_known_args(argv)
  t0 = time.perf_counter()
  config = set_steps(load_config(args.config, overrides), [int(s) for s in args.steps.split(",")])
  config.train.progress_bar = config.train.plot = config.train.tensorboard = False
  workdir = args.workdir or os.path.join("artifacts", "probe", args.name)
  summary = {} if args.no_train else train(config, workdir)  # prepares the data itself
  train_s = time.perf_counter() - t0
  if args.no_train:
    config = saved_config(workdir)
    if config is None:
      raise SystemExit(f"--no-train: {workdir} has no config.json (not a trained run)")
  run = load_trained_run(config, workdir, progress=False)
  cfg, vocab = run.cfg, run.vocab
  feeder = MemoryFeeder(run.embedder, run.retriever, run.bank, cfg.memory.refs_per_chunk)
  all_items = read_jsonl(run.paths.qa_eval, "qa", ref_ids={r.id for r in run.refs})
  items = evaluation.select_items(all_items, args.questions)
  conditions = qa.make_conditions(
    vocab,
    cfg.memory.chunk_len,
    feeder=feeder,
    retrieved=memory_sources.RetrievedMemory(feeder, vocab),
    names=("no_memory", "oracle_memory"),
  )
  res = qa.evaluate_qa(
    cfg, run.params, vocab, items, conditions, max_new_tokens=6, batch_size=32, progress=False
  )
  by_id = {r.id: r.tokens for r in run.refs}  # QA gold_ref_id = KB reference id
  nll = answer_nll(
    cfg,
    run.params,
    vocab,
    items[:128],
    by_id,
    sorted(by_id),
    value_kinds=kinds.value_kinds(all_items),
  )
  row = {
    "name": args.name,
    "config": args.config,
    "overrides": overrides,
    "steps": args.steps,
    "multiple_choice": res["multiple_choice"],
    "exact_match": res["exact_match"],
    "nll": nll,
    "mc_by_attribute": res["multiple_choice_by_attribute"],
    "final_losses": summary.get("final_losses"),
    "train_s": round(train_s, 1),
    "backend": jax.default_backend(),
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "a") as f:
    f.write(json.dumps(row) + "\n")
  mc = res["multiple_choice"]
  print(
    f"{'run':<24} {'MC none':>8} {'MC gold':>8} {'ans NLL none':>13} {'ans NLL gold':>13} "
    f"{'text NLL none':>14} {'text NLL gold':>14}"
  )
  print(
    f"{args.name:<24} {mc['no_memory']:>8.3f} {mc['oracle_memory']:>8.3f} "
    f"{nll['none']['answer_first_token']:>13.3f} {nll['gold']['answer_first_token']:>13.3f} "
    f"{nll['none']['qa_text']:>14.3f} {nll['gold']['qa_text']:>14.3f}"
  )
  return row


if __name__ == "__main__":
  main()
