"""Can the model copy in context at all? (issue #10: why values are not read from memory)

Reading a value out of memory is a copy: attend to a token, write its identity to the
output. This probe asks whether a trained run has any copy circuit (an "induction head"),
without memory. It tiles spans of held-out text (``valid_tokens.npy``) to a row, so every
token after the first pass repeats the token ``span`` positions earlier, and reports the
mean NLL of the first pass, the second, and the rest. A model that copies predicts the
later passes far better than the first; one that does not, does not.

  python experiments/probe_copy.py --workdir RUN [--spans 16,40] [--rows 32] [--out FILE]

Writes ``<workdir>/eval/copy.json`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiled_rows(stream: np.ndarray, span: int, rows: int, length: int, rng) -> np.ndarray:
  """``[rows, length]``: each row a random span of ``stream`` repeated to ``length``."""
  starts = rng.integers(0, len(stream) - span, size=rows)
  return np.stack([np.resize(stream[s : s + span], length) for s in starts]).astype(np.int32)


def pass_means(nll_BxT: np.ndarray, span: int) -> dict:
  """Mean NLL of the first pass (targets 0..span-1), the second and every later one."""
  return {
    "first_pass": float(nll_BxT[:, :span].mean()),
    "second_pass": float(nll_BxT[:, span : 2 * span].mean()),
    "later_passes": float(nll_BxT[:, 2 * span :].mean()),
  }


def probe(run, spans, rows: int, length: int, seed: int = 0) -> dict:
  import jax
  import jax.numpy as jnp

  from m3jax.model.transformer import Transformer
  from m3jax.task import target_logprobs

  model = Transformer(run.cfg)
  stream = np.load(run.paths.tokens("valid"))

  @jax.jit
  def nll(tokens_BxT):
    return -target_logprobs(model.apply({"params": run.params}, tokens_BxT, None), tokens_BxT)

  rng = np.random.default_rng(seed)
  out = {}
  for span in spans:
    if 3 * span > length:
      raise ValueError(f"span {span}: a row of {length} tokens holds under three passes")
    targets = tiled_rows(stream, span, rows, length - 1, rng)
    tokens = np.concatenate([np.full((rows, 1), run.cfg.bos_id, np.int32), targets], 1)
    out[str(span)] = pass_means(np.asarray(nll(jnp.asarray(tokens))), span)
  return out


def main(argv=None) -> int:
  from experiments.probe_selection import trained_run, write_json

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True, help="a trained run (its config.json)")
  parser.add_argument("--spans", default="16,40", help="span lengths, comma-separated")
  parser.add_argument("--rows", type=int, default=32)
  parser.add_argument("--length", type=int, default=129, help="tokens per row, <s> included")
  parser.add_argument("--out", default=None, help="default <workdir>/eval/copy.json")
  args = parser.parse_args(argv)
  run = trained_run(args.workdir)
  spans = [int(s) for s in args.spans.split(",")]
  result = {"by_span": probe(run, spans, args.rows, args.length)}
  result.update(workdir=os.path.abspath(args.workdir), rows=args.rows, length=args.length)
  print(f"{'span':>5} {'first pass':>11} {'second':>7} {'later':>7}")
  for span, r in result["by_span"].items():
    print(f"{span:>5} {r['first_pass']:>11.2f} {r['second_pass']:>7.2f} {r['later_passes']:>7.2f}")
  write_json(result, args.out or os.path.join(args.workdir, "eval", "copy.json"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
