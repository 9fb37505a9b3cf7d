"""Do an answer's tokens survive selection into memory? (issue #10: the "selection" cause)

A memory keeps, per memory layer and KV head, only the top-k reference tokens (SPEC §3.3;
``m3jax/memory/sparsify.py``). If an answer's tokens are rarely kept, no amount of
training can read them. For held-out questions this reads the gold reference's stored
memory from the run's bank (``token_idx [L_mem, K, M]``: the reference positions each
layer's head kept), finds the answer's tokens in the reference, and reports per value
kind and per attribute the share of (layer, head) pairs that kept the answer's first
token, that kept all of its pieces, and, as chance, the share of the reference's tokens
an average head keeps.

  python experiments/probe_selection.py --workdir RUN [--questions 256] [--out FILE]

Writes ``<workdir>/eval/selection.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def find(seq: list[int], sub: list[int]) -> int:
  """First index of ``sub`` in ``seq``, -1 if absent."""
  n = len(sub)
  for i in range(len(seq) - n + 1):
    if seq[i : i + n] == sub:
      return i
  return -1


def answer_positions(vocab, ref_tokens: list[int], answer: str) -> list[int]:
  """Positions of the answer's pieces in the reference ([] if it is not there): as a
  word after a space first (how values sit in text), then as it is."""
  for text in (" " + answer.strip(), answer.strip()):
    sub = list(vocab.encode(text))
    at = find(ref_tokens, sub) if sub else -1
    if at >= 0:
      return list(range(at, at + len(sub)))
  return []


def survival(token_idx_LxKxM: np.ndarray, valid_M: np.ndarray, positions: list[int]):
  """(first kept, all kept, kept per head) shares over the (layer, head) pairs."""
  kept = [
    set(token_idx_LxKxM[layer, head][valid_M].tolist())
    for layer in range(token_idx_LxKxM.shape[0])
    for head in range(token_idx_LxKxM.shape[1])
  ]
  first = np.mean([positions[0] in k for k in kept])
  every = np.mean([set(positions) <= k for k in kept])
  return float(first), float(every), float(np.mean([len(k) for k in kept]))


def probe(run, items, value_kinds) -> dict:
  from m3jax.data.references import document_pieces
  from m3jax.evaluate import kinds

  tokens_of = {r.id: list(r.tokens) for r in run.refs}
  pieces = document_pieces(tokens_of)
  hits = []  # (kind, attribute, reference id holding the answer, the answer's positions)
  for item, kind in zip(items, kinds.item_kinds(items, value_kinds)):
    for ref_id in pieces.get(item.get("gold_ref_id"), []):
      pos = answer_positions(run.vocab, tokens_of[ref_id], str(item["answer"]))
      if pos:
        hits.append((kind or "unknown", item.get("attribute") or "unknown", ref_id, pos))
        break
  got = run.bank.read([hit[2] for hit in hits])  # one batched read
  by_kind: dict[str, list] = {}
  by_attribute: dict[str, list] = {}
  for j, (kind, attribute, ref_id, pos) in enumerate(hits):
    valid = np.asarray(got.mask[j], bool)
    first, every, per_head = survival(np.asarray(got.token_idx[j]), valid, pos)
    row = (first, every, per_head / len(tokens_of[ref_id]), len(pos))
    by_kind.setdefault(kind, []).append(row)
    by_attribute.setdefault(attribute, []).append(row)
  return {
    "by_value_kind": summarize(by_kind),
    # An attribute whose values are kept less often than a random token of the
    # reference is one memory cannot answer, however well the model reads (session 15).
    "by_attribute": summarize(by_attribute),
    "answers_not_in_gold_reference": len(items) - len(hits),
  }


def summarize(rows: dict[str, list]) -> dict:
  """Per group: n and the means of (first kept, all kept, chance per token, pieces)."""
  names = ("first_token_kept", "all_pieces_kept", "chance_per_token", "mean_pieces")
  return {
    group: {
      "n": len(v),
      **{name: float(np.mean([r[i] for r in v])) for i, name in enumerate(names)},
    }
    for group, v in sorted(rows.items())
  }


def main(argv=None) -> int:
  args = probe_arguments(__doc__, "selection.json", argv)
  run, items, value_kinds = held_out_questions(args.workdir, args.questions)
  result = probe(run, items, value_kinds)
  result.update(workdir=os.path.abspath(args.workdir), questions=len(items))
  for title, table in (("kind", "by_value_kind"), ("attribute", "by_attribute")):
    print(f"{title:<12} {'n':>4} {'first kept':>11} {'all kept':>9} {'chance':>7} {'pieces':>7}")
    for group, r in result[table].items():
      print(
        f"{group:<12} {r['n']:>4} {r['first_token_kept']:>11.3f} {r['all_pieces_kept']:>9.3f} "
        f"{r['chance_per_token']:>7.3f} {r['mean_pieces']:>7.2f}"
      )
  write_result(result, args.out)
  return 0


def probe_arguments(doc: str, out_name: str, argv=None) -> argparse.Namespace:
  """--workdir, --questions, --out (default ``<workdir>/eval/<out_name>``) of a probe."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained run (its config.json)")
  parser.add_argument("--questions", type=int, default=256)
  parser.add_argument("--out", default=None, help=f"default <workdir>/eval/{out_name}")
  args = parser.parse_args(argv)
  args.out = args.out or os.path.join(args.workdir, "eval", out_name)
  return args


def run_config(workdir: str):
  """The config recorded in ``workdir``, or exit naming the folder."""
  from m3jax.train.workdir import saved_config

  config = saved_config(workdir)
  if config is None:
    raise SystemExit(f"{workdir} has no config.json (not a trained run)")
  return config


def trained_run(workdir: str, config=None):
  """The trained run in ``workdir`` (``config``: its recorded one, read if not given)."""
  from m3jax.run.loading import load_trained_run

  config = run_config(workdir) if config is None else config
  return load_trained_run(config, workdir, progress=False)


def held_out_questions(workdir: str, questions: int):
  """(trained run, the evaluation's held-out questions, the value kinds of all of them)."""
  from m3jax.data.sources import read_jsonl
  from m3jax.evaluate import evaluation, kinds

  run = trained_run(workdir)
  all_items = read_jsonl(run.paths.qa_eval, "qa", ref_ids={r.id for r in run.refs})
  return run, evaluation.select_items(all_items, questions), kinds.value_kinds(all_items)


def write_result(result: dict, out: str) -> None:
  """Prints the count of answers missing from their reference and writes ``out``."""
  print(f"answers not found in their gold reference: {result['answers_not_in_gold_reference']}")
  write_json(result, out)


def write_json(result: dict, out: str) -> None:
  """Writes ``result`` to ``out`` (making its folder) and says where."""
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(f"wrote {out}")


if __name__ == "__main__":
  sys.exit(main())
