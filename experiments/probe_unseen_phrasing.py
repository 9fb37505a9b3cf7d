"""Held-out facts of the unseen world asked two ways: the training prose's phrasing, or QA.

A run trained on ``make_unseen_world.py`` data never sees ``Q: … A:`` text. This probe
separates "cannot read held-out facts from memory" from "cannot answer in the QA format":
for each held-out question it scores the four choices (sum of the answer's token
log-probs) after

* ``prose``: the first training template of that attribute that puts the value after the
  entity, cut at the value ("Sailors on the Zorcad answer to"), and
* ``qa``: the evaluation's zero-shot prompt (``Q: <question> A:``),

with the gold reference in memory (the piece of it that holds the answer, in every chunk)
and with no memory. Multiple-choice accuracy per format and memory is printed and
written as JSON.

  python experiments/probe_unseen_phrasing.py --workdir RUN --qa /tmp/unseen/qa.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.make_unseen_world import _SCHEMA  # noqa: E402


def prose_prefixes() -> dict[str, str]:
  """attribute -> a training template cut before its value (one that names the entity
  first), e.g. ``"Sailors on the {e} answer to"``."""
  out = {}
  for attrs in _SCHEMA.values():
    for attr, (_, _, prose, _) in attrs.items():
      for p in prose:
        if p.index("{v}") > p.index("{e}"):
          out[attr] = p.split("{v}")[0].rstrip()
          break
  return out


def entity_of(item: dict, reference_text: str) -> str | None:
  """The entity a question asks about: its last capitalized word the reference holds."""
  words = [w.strip("?,.") for w in item["question"].split()]
  named = [w for w in words if w[:1].isupper() and w in reference_text]
  return named[-1] if named else None


def main(argv=None) -> int:
  import jax

  from experiments.probe_selection import trained_run, write_json
  from m3jax.model.transformer import Transformer
  from m3jax.task import qa_prompt, target_logprobs
  from m3jax.train.memory_batch import memory_from_batch

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--qa", required=True, help="the unseen world's qa.jsonl")
  parser.add_argument("--questions", type=int, default=256)
  parser.add_argument("--out", default=None, help="default <workdir>/eval/phrasing.json")
  args = parser.parse_args(argv)
  run = trained_run(args.workdir)
  cfg, vocab = run.cfg, run.vocab
  chunk, ref_len = cfg.memory.chunk_len, cfg.memory.ref_len
  with open(args.qa) as f:
    items = [json.loads(line) for line in f if line.strip()][: args.questions]
  pieces: dict[str, list] = {}
  for r in run.refs:
    pieces.setdefault(r.id.split("#")[0], []).append(r)
  prefixes = prose_prefixes()
  model = Transformer(cfg)
  row_len = 4 * chunk

  @jax.jit
  def logprobs(tokens_BxT, refs_BxCxN, lengths_BxC):
    memory = memory_from_batch(run.params, cfg, refs_BxCxN, lengths_BxC)
    out = model.apply({"params": run.params}, tokens_BxT, memory)
    return target_logprobs(out, tokens_BxT)

  correct: dict[str, dict[str, list[bool]]] = {f: {"gold": [], "none": []} for f in ("prose", "qa")}
  for it in items:
    gold = pieces.get(it.get("gold_ref_id", ""), [])
    holding = [r for r in gold if it["answer"] in vocab.decode(list(r.tokens))]
    if not holding or it.get("attribute") not in prefixes:
      continue
    ref = np.asarray(holding[0].tokens, np.int32)[:ref_len]
    refs = np.zeros((1, row_len // chunk, ref_len), np.int32)
    refs[0, :, : len(ref)] = ref
    entity = entity_of(it, vocab.decode(list(ref)))
    prompts = {"qa": qa_prompt(it["question"])}
    if entity is not None:
      prompts["prose"] = prefixes[it["attribute"]].format(e=entity)
    for fmt, prompt in prompts.items():
      p = vocab.encode(prompt)
      for mem in ("gold", "none"):
        lengths = np.full((1, row_len // chunk), len(ref) if mem == "gold" else 0, np.int32)
        scores = []
        for choice in it["choices"]:
          c = vocab.encode(" " + choice)
          seq = [cfg.bos_id] + p + c
          tokens = np.zeros((1, row_len), np.int32)
          tokens[0, : len(seq)] = seq
          lp = np.asarray(logprobs(tokens, refs, lengths))[0]
          scores.append(float(lp[len(p) : len(p) + len(c)].sum()))
        correct[fmt][mem].append(int(np.argmax(scores)) == it["choices"].index(it["answer"]))
  result = {
    fmt: {mem: {"accuracy": float(np.mean(v)) if v else None, "n": len(v)} for mem, v in d.items()}
    for fmt, d in correct.items()
  }
  result["workdir"] = os.path.abspath(args.workdir)
  print(f"{'format':>7} {'gold memory':>12} {'no memory':>10} {'n':>5}")
  for fmt in ("prose", "qa"):
    g, n = result[fmt]["gold"], result[fmt]["none"]
    print(f"{fmt:>7} {g['accuracy'] or 0:>12.3f} {n['accuracy'] or 0:>10.3f} {g['n']:>5}")
  write_json(result, args.out or os.path.join(args.workdir, "eval", "phrasing.json"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
