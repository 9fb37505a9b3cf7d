"""Does the answer position look at the answer in memory? (issue #10: lookup or copy)

For held-out questions whose answer is in the gold reference, the prompt ``Q: … A:`` is
run with the gold reference's stored memory (its only reference, every chunk) and each
memory layer's joint softmax is recomputed per memory token
(``m3jax.evaluate.attribution.memory_token_mass``). At the position that predicts the
answer's first token it reports, per value kind and memory layer, averaged over query
heads and questions:

* ``memory``: the attention mass on memory as a whole;
* ``answer``: the mass on the memory slots that hold the answer's first piece;
* ``answer_share``: ``answer / memory``, against ``chance``, the share the answer's slots
  would get if memory mass were spread evenly over the head's valid slots.

A value kind the model reads (names, in the demo) should show ``answer_share`` far above
chance at some layer; one it does not read either never finds the slot (a lookup
failure: share near chance) or finds it without using it (a copy failure: share high,
answer still not predicted).

  python experiments/probe_attention.py --workdir RUN [--questions 256] [--out FILE]

Writes ``<workdir>/eval/attention.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments.probe_selection import (  # noqa: E402
  answer_positions,
  held_out_questions,
  probe_arguments,
  write_result,
)


def answer_slots(token_idx_LxKxM: np.ndarray, valid_M: np.ndarray, first: int) -> np.ndarray:
  """bool [L, K, M]: the valid memory slots holding reference position ``first``."""
  return (np.asarray(token_idx_LxKxM) == first) & np.asarray(valid_M, bool)[None, None, :]


def head_shares(mass_LxHxM: np.ndarray, slots_LxKxM: np.ndarray, valid_M: np.ndarray) -> dict:
  """Per layer, means over query heads: memory mass, mass on the answer's slots, their
  share of the memory mass, and chance (answer slots / valid slots of the head's KV
  head). Query head h reads KV head h // (H / K)."""
  h, k = mass_LxHxM.shape[1], slots_LxKxM.shape[1]
  slots_LxHxM = np.repeat(slots_LxKxM, h // k, axis=1)
  memory = mass_LxHxM.sum(-1)
  answer = (mass_LxHxM * slots_LxHxM).sum(-1)
  share = np.where(memory > 0, answer / np.maximum(memory, 1e-30), 0.0)
  chance = slots_LxHxM.sum(-1) / max(int(np.asarray(valid_M).sum()), 1)
  return {
    "memory": memory.mean(1),
    "answer": answer.mean(1),
    "answer_share": share.mean(1),
    "chance": chance.mean(1),
  }


def probe(run, items, value_kinds, batch: int = 32) -> dict:
  import jax.numpy as jnp

  from m3jax.data.references import document_pieces
  from m3jax.evaluate import kinds
  from m3jax.evaluate.attribution import memory_token_mass
  from m3jax.evaluate.qa import encode_prompt
  from m3jax.memory.feeder import MemoryFeeder
  from m3jax.task import qa_prompt

  cfg = run.cfg
  tokens_of = {r.id: list(r.tokens) for r in run.refs}
  pieces = document_pieces(tokens_of)
  hits = []  # (kind, reference id holding the answer, its first position, prompt ids)
  for item, kind in zip(items, kinds.item_kinds(items, value_kinds)):
    for ref_id in pieces.get(item.get("gold_ref_id"), []):
      pos = answer_positions(run.vocab, tokens_of[ref_id], str(item["answer"]))
      if pos:
        prompt = encode_prompt(run.vocab, qa_prompt(item["question"]))
        hits.append((kind or "unknown", ref_id, pos[0], prompt))
        break
  if not hits:
    return {"by_value_kind": {}, "answers_not_in_gold_reference": len(items)}
  rows = run.bank.read([h[1] for h in hits])  # the stored memories: token_idx and mask
  feeder = MemoryFeeder(None, None, run.bank, cfg.memory.refs_per_chunk)
  L = cfg.memory.chunk_len
  t = -(-max(len(h[3]) for h in hits) // L) * L
  per_kind: dict[str, list] = {}
  for s in range(0, len(hits), batch):
    part = hits[s : s + batch]
    tokens = np.full((len(part), t), cfg.pad_id, np.int32)  # right padding: causal
    ids = np.full((len(part), t // L, cfg.memory.refs_per_chunk), None, object)
    for i, (_, ref_id, _, prompt) in enumerate(part):
      tokens[i, : len(prompt)] = prompt
      ids[i, :, 0] = ref_id
    mass, _ = memory_token_mass(cfg, run.params, jnp.asarray(tokens), feeder.assemble(ids))
    mass = np.asarray(mass)  # [Lm, B, T, H, R, M]
    for i, (kind, _, first, prompt) in enumerate(part):
      j = s + i
      valid = np.asarray(rows.mask[j], bool)
      slots = answer_slots(rows.token_idx[j], valid, first)
      at = len(prompt) - 1  # the position that predicts the answer's first token
      per_kind.setdefault(kind, []).append(head_shares(mass[:, i, at, :, 0], slots, valid))
  out = {
    kind: {
      "n": len(v),
      **{key: np.mean([r[key] for r in v], axis=0).tolist() for key in v[0]},
    }
    for kind, v in sorted(per_kind.items())
  }
  return {"by_value_kind": out, "answers_not_in_gold_reference": len(items) - len(hits)}


def main(argv=None) -> int:
  args = probe_arguments(__doc__, "attention.json", argv)
  run, items, value_kinds = held_out_questions(args.workdir, args.questions)
  result = probe(run, items, value_kinds)
  result.update(workdir=os.path.abspath(args.workdir), questions=len(items))
  print(f"{'kind':<12} {'n':>4}  per memory layer: memory mass | answer mass | share (chance)")
  for kind, r in result["by_value_kind"].items():
    cells = "  ".join(
      f"L{li}: {m:.3f} | {a:.3f} | {sh:.2f} ({c:.2f})"
      for li, (m, a, sh, c) in enumerate(
        zip(r["memory"], r["answer"], r["answer_share"], r["chance"])
      )
    )
    print(f"{kind:<12} {r['n']:>4}  {cells}")
  write_result(result, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
