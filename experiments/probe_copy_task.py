"""How long a plain copy task sits on its plateau, with and without smeared keys.

Reading a value from memory is a copy (attend to the token after the one just written,
write its identity). docs/design.md ("Repetition rows do not build one within the
budget") found that the ``small`` network, and an independent LLaMA-style net of its
size, stay at chance for 300+ steps on the plainest copy task there is. This probe runs
that task on m3jax's own Transformer (``small``'s shape, no memory) with
``model.smeared_keys`` off and on, same data and seed: rows of 128 random tokens that
repeat with a period of 8-32, loss on positions >= 40 (every target there is the token
one period back), batch 16, AdamW at a constant 3e-3. Chance is ln(vocab) = 7.62.

  python experiments/probe_copy_task.py [--steps 600] [--seeds 0] [--out FILE]

Prints the loss every 50 steps and writes JSON (default
``experiments/results/probe_copy_task.json``) and a PNG next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ROW, FIRST_SCORED, BATCH, LR = 128, 40, 16, 3e-3


def copy_rows(rng: np.random.Generator, vocab: int, batch: int = BATCH) -> np.ndarray:
  """[batch, ROW] int32: each row a random span of 8-32 tokens (ids >= 5) tiled."""
  rows = np.empty((batch, ROW), np.int32)
  for i in range(batch):
    span = rng.integers(5, vocab, rng.integers(8, 33))
    rows[i] = np.resize(span, ROW)
  return rows


def train_curve(cfg, steps: int, seed: int, every: int = 50) -> list[tuple[int, float]]:
  """Mean scored NLL per ``every`` steps of a fresh model (the mean of that window)."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from m3jax.model.transformer import Transformer

  model = Transformer(cfg)
  params = nn.meta.unbox(model.init(jax.random.key(seed), jnp.zeros((1, ROW), jnp.int32)))
  tx = optax.adamw(LR, weight_decay=0.0)
  opt = tx.init(params)

  def loss(p, rows):
    logits = model.apply(p, rows[:, :-1])[:, FIRST_SCORED - 1 :]
    return optax.softmax_cross_entropy_with_integer_labels(logits, rows[:, FIRST_SCORED:]).mean()

  @jax.jit
  def step(p, o, rows):
    value, g = jax.value_and_grad(loss)(p, rows)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, value

  rng = np.random.default_rng(seed)
  curve, window = [], []
  for i in range(1, steps + 1):
    params, opt, value = step(params, opt, copy_rows(rng, cfg.vocab_size))
    window.append(float(value))
    if i % every == 0:
      curve.append((i, float(np.mean(window))))
      window = []
      print(f"  smeared_keys={cfg.smeared_keys} step {i}: NLL {curve[-1][1]:.3f}", flush=True)
  return curve


def plateau_exit(curve: list[tuple[int, float]], chance: float, drop: float = 1.0) -> int | None:
  """The first logged step whose window mean is ``drop`` nats under chance, or None."""
  return next((s for s, v in curve if v < chance - drop), None)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/memory3.py:small")
  p.add_argument("--steps", type=int, default=600)
  p.add_argument("--seeds", default="0")
  p.add_argument("--out", default="experiments/results/probe_copy_task.json")
  args, overrides = p.parse_known_args(argv)

  from m3jax.model.config import model_config_from
  from m3jax.run.config import load_config

  base = model_config_from(load_config(args.config, overrides).model)
  chance = float(np.log(base.vocab_size))
  runs = []
  for seed in [int(s) for s in args.seeds.split(",")]:
    for smeared in (False, True):
      cfg = dataclasses.replace(base, smeared_keys=smeared)
      t0 = time.perf_counter()
      curve = train_curve(cfg, args.steps, seed)
      runs.append(
        {
          "seed": seed,
          "smeared_keys": smeared,
          "curve": curve,
          "final_nll": curve[-1][1],
          "plateau_exit_step": plateau_exit(curve, chance),
          "seconds": time.perf_counter() - t0,
        }
      )
  print(f"\n{'seed':>4}  {'smeared_keys':>12}  {'final NLL':>9}  {'1 nat under chance at':>21}")
  for r in runs:
    exit_ = r["plateau_exit_step"] or f"> {args.steps}"
    print(f"{r['seed']:>4}  {str(r['smeared_keys']):>12}  {r['final_nll']:>9.3f}  {exit_!s:>21}")
  result = {
    "config": args.config,
    "overrides": overrides,
    "task": {
      "row": ROW,
      "first_scored": FIRST_SCORED,
      "batch": BATCH,
      "lr": LR,
      "periods": [8, 32],
    },
    "chance_nll": chance,
    "runs": runs,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  _plot(result, os.path.splitext(args.out)[0] + ".png")
  print(f"wrote {args.out}")
  return 0


def _plot(result: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 3.5))
  for r in result["runs"]:
    steps, nll = zip(*r["curve"])
    label = f"smeared keys {'on' if r['smeared_keys'] else 'off'}, seed {r['seed']}"
    ax.plot(steps, nll, "-" if r["smeared_keys"] else "--", label=label)
  ax.axhline(result["chance_nll"], color="grey", lw=0.8, label="chance")
  ax.set_xlabel("training step")
  ax.set_ylabel("copy-task NLL (scored positions)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


if __name__ == "__main__":
  raise SystemExit(main())
