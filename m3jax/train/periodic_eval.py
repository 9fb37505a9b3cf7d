"""Evaluation during training: every ``train.eval_every`` steps, the held-out loss of the
current parameters with and without memory, on the same validation batches each time.

The batches come from the validation split with their pre-retrieved references (the
synthetic generator's own when ``data_source="synthetic"``); memories are encoded live by
the current parameters, as in stage 2, without gradients. The loss without memory on the
same rows is the baseline, so the gap is what memory buys at this point of training.
QA multiple choice needs the evaluate package, a layer above training: the commands inject
it as an evaluator (``train(..., evaluators=...)``, m3jax.run.training_eval), and its
numbers join these losses in the same record.
"""

from __future__ import annotations

import jax
import numpy as np

from m3jax.train.stages import StageSpec
from m3jax.train.step import make_loss_fn

EVAL_FILE = "eval_metrics.jsonl"


def _held_out_fn(cfg, stage: StageSpec):
  """jit(params, batch) -> the stage's loss, without dropout-like randomness (fixed key)."""
  fn = make_loss_fn(cfg, stage)
  return jax.jit(lambda p, b: fn(p, b, jax.random.key(0))[0])


class HeldOutLoss:
  """``held_out(params) -> {"held_out_loss_no_memory": x, "held_out_loss_memory": y}``."""

  def __init__(self, config, cfg, *, seq_len: int, batch_size: int, num_batches: int = 2):
    use_memory = bool(cfg.memory.memory_layers) and seq_len % cfg.memory.chunk_len == 0
    if config.train.data_source == "synthetic":
      from m3jax.train.synthetic import SyntheticIterator

      it = SyntheticIterator(
        batch_size=batch_size,
        seq_len=seq_len,
        vocab_size=cfg.vocab_size,
        chunk_len=cfg.memory.chunk_len,
        ref_len=cfg.memory.ref_len,
        bos_id=cfg.bos_id,
        with_refs=use_memory,
        seed=int(config.seed) + 1,
      )
    else:
      from m3jax.data import pipeline

      def valid(b):
        return pipeline.make_train_iterator(
          config.data,
          cfg,
          split="valid",
          batch_size=b,
          seq_len=seq_len,
          with_references=use_memory,
          shuffle=False,
        )

      # A small bring-your-own corpus can hold fewer held-out sequences than a training
      # batch: evaluate on what there is rather than stop the run at its first eval.
      it = valid(1)
      if it.num_seqs < batch_size:
        batch_size = it.num_seqs
        num_batches = 1
        it = valid(batch_size)
    self.batch_size = batch_size
    self.batches = [next(it) for _ in range(num_batches)]
    kinds = {"no_memory": StageSpec("held_out", 1, 0.0)}
    if use_memory:
      kinds["memory"] = StageSpec("held_out", 1, 0.0, use_memory=True, encode_grad=False)
    self._fns = {k: _held_out_fn(cfg, s) for k, s in kinds.items()}

  def __call__(self, params) -> dict:
    out = {}
    for kind, fn in self._fns.items():
      losses = [fn(params, {k: v for k, v in b.items()}) for b in self.batches]
      out[f"held_out_loss_{kind}"] = float(np.mean(jax.device_get(losses)))
    return out
