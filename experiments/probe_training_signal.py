"""How much of a training row only memory can predict, and does the model read it?

Issue #10's first candidate cause: "how many training tokens can only be predicted by
reading a value out of memory". The counterfactual swap (m3jax.data.counterfactual) makes
such tokens: a value a row shares with its references is replaced, in both, by a word the
weights have never seen there. This probe draws training batches twice from the same
position of the stream, with and without the swap, so the tokens that differ are exactly
the memory-only ones, and reports

* how many there are (per row and as a fraction of the scored tokens);
* the mean NLL of those tokens (all of them, and only their first occurrence in the row:
  a repeated value can be copied from the row itself) and of all tokens, with the row's
  own references, another row's references, and no memory.

A model that reads values has a far lower NLL on swapped tokens with its own references
than with another row's or none; one that has only memorized its corpus does not. A run
trained without the swap is probed at ``--swap-rate`` (default 0.5).

  python experiments/probe_training_signal.py --workdir RUN [--batches 8] [--out FILE]

Writes ``<workdir>/eval/training_signal.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MEMORIES = ("own", "other_row", "none")


def swapped_mask(targets_swapped_BxT, targets_plain_BxT, loss_mask_BxT) -> np.ndarray:
  """bool [B, T]: scored targets that the swap changed (only memory predicts them)."""
  if targets_swapped_BxT.shape != targets_plain_BxT.shape:
    raise ValueError("the two batches must come from the same stream position")
  return (targets_swapped_BxT != targets_plain_BxT) & (loss_mask_BxT > 0)


def first_occurrences(targets_BxT, mask_BxT) -> np.ndarray:
  """bool [B, T]: the positions of ``mask_BxT`` whose token is not among the row's earlier
  targets. A swapped value repeated in its row is predictable by copying its first
  occurrence in context; only its first occurrence needs memory."""
  out = np.zeros_like(mask_BxT)
  for b, row in enumerate(targets_BxT):
    seen: set = set()
    for t, token in enumerate(row.tolist()):
      out[b, t] = mask_BxT[b, t] and token not in seen
      seen.add(token)
  return out


def memory_variant(ref_tokens, ref_lengths, kind: str):
  """The references a row reads under ``kind``: its own, the previous row's (a wrong
  memory of the same shape), or none (every length 0: all memory slots masked)."""
  if kind == "own":
    return ref_tokens, ref_lengths
  if kind == "other_row":
    return np.roll(ref_tokens, 1, axis=0), np.roll(ref_lengths, 1, axis=0)
  if kind == "none":
    return ref_tokens, np.zeros_like(ref_lengths)
  raise ValueError(f"memory kind {kind!r}: use one of {MEMORIES}")


def summarize(
  nll_by_kind: dict, swapped: np.ndarray, scored: np.ndarray, first: np.ndarray | None = None
) -> dict:
  """Means of the NLL arrays (each [N, B, T]) over the swapped tokens, their first
  occurrences in the row (``first``, optional) and all scored tokens."""
  first = np.zeros_like(swapped) if first is None else first
  out = {
    "swapped_tokens": int(swapped.sum()),
    "swapped_first_occurrences": int(first.sum()),
    "scored_tokens": int(scored.sum()),
    "swapped_fraction": float(swapped.sum() / max(scored.sum(), 1)),
    "swapped_per_row": float(swapped.sum() / (swapped.shape[0] * swapped.shape[1])),
  }
  for kind, nll in nll_by_kind.items():
    out[kind] = {
      "nll_swapped": float(nll[swapped].mean()) if swapped.any() else None,
      "nll_swapped_first": float(nll[first].mean()) if first.any() else None,
      "nll_all": float(nll[scored].mean()),
    }
  return out


def probe(config, run, batches: int, batch_size: int, swap_rate: float, seed: int = 123):
  import jax
  import jax.numpy as jnp
  import ml_collections

  from m3jax.data.pipeline import make_train_iterator
  from m3jax.model.transformer import Transformer
  from m3jax.train.memory_batch import memory_from_batch

  cfg = run.cfg
  if not cfg.memory.memory_layers:
    raise SystemExit("the run's model has no memory layers: nothing to read")
  swapped_cfg = ml_collections.ConfigDict(config.data.to_dict())
  swapped_cfg.memory_swap_rate = swap_rate
  plain_cfg = ml_collections.ConfigDict(config.data.to_dict())
  plain_cfg.memory_swap_rate = 0.0
  streams = [
    make_train_iterator(d, cfg, batch_size=batch_size, with_references=True, seed=seed)
    for d in (swapped_cfg, plain_cfg)
  ]
  model = Transformer(cfg)

  @jax.jit
  def nll(params, inputs, targets, ref_tokens, ref_lengths):
    memory = memory_from_batch(params, cfg, ref_tokens, ref_lengths)
    logp = jax.nn.log_softmax(model.apply({"params": params}, inputs, memory), -1)
    return -jnp.take_along_axis(logp, targets[..., None], -1)[..., 0]

  nlls = {k: [] for k in MEMORIES}
  swapped, scored, first = [], [], []
  for _ in range(batches):
    b, plain = next(streams[0]), next(streams[1])
    swapped.append(swapped_mask(b["targets"], plain["targets"], b["loss_mask"]))
    first.append(first_occurrences(b["targets"], swapped[-1]))
    scored.append(b["loss_mask"] > 0)
    for kind in MEMORIES:
      refs, lens = memory_variant(b["ref_tokens"], b["ref_lengths"], kind)
      nlls[kind].append(np.asarray(nll(run.params, b["inputs"], b["targets"], refs, lens)))
  return summarize(
    {k: np.stack(v) for k, v in nlls.items()},
    np.stack(swapped),
    np.stack(scored),
    np.stack(first),
  )


def main(argv=None) -> int:
  from experiments.probe_selection import run_config, trained_run, write_json

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained run (its config.json)")
  parser.add_argument("--batches", type=int, default=8)
  parser.add_argument("--batch-size", type=int, default=16)
  parser.add_argument(
    "--swap-rate", type=float, default=None, help="default: the run's, or 0.5 if it had none"
  )
  parser.add_argument("--out", default=None, help="default <workdir>/eval/training_signal.json")
  args = parser.parse_args(argv)
  config = run_config(args.workdir)
  run = trained_run(args.workdir, config)
  rate = args.swap_rate
  if rate is None:
    rate = float(config.data.get("memory_swap_rate", 0.0)) or 0.5
  if not 0.0 < rate <= 1.0:
    raise SystemExit(f"--swap-rate {rate}: must be in (0, 1]")
  if args.batch_size < 2:
    raise SystemExit("--batch-size must be >= 2 (another row's references are a control)")
  result = probe(config, run, args.batches, args.batch_size, rate)
  result.update(workdir=os.path.abspath(args.workdir), swap_rate=rate, batches=args.batches)
  print(
    f"memory-only tokens: {result['swapped_per_row']:.1f} per row "
    f"({100 * result['swapped_fraction']:.1f}% of scored tokens; "
    f"{result['swapped_first_occurrences']} of {result['swapped_tokens']} first in their row)"
  )
  nan = float("nan")
  print(f"{'memory':>10} {'NLL swapped':>12} {'first occ.':>11} {'NLL all':>8}")
  for kind in MEMORIES:
    r = result[kind]
    print(
      f"{kind:>10} {r['nll_swapped'] or nan:>12.2f} {r['nll_swapped_first'] or nan:>11.2f} "
      f"{r['nll_all']:>8.3f}"
    )
  write_json(result, args.out or os.path.join(args.workdir, "eval", "training_signal.json"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
