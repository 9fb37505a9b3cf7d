"""Evaluation section (``config.eval``): QA, perplexity, throughput, plots, the demo.

Every field and its default is the frozen ``m3jax.evaluate.report.EvalConfig``'s; this
file sets only the sizes of each variant.
"""

from __future__ import annotations

import ml_collections

from m3jax.evaluate.report import EvalConfig
from m3jax.run.config import section_of

_SIZES = {
  # questions, QA batch, throughput (batch, prompt, new tokens, runs), ppl sequences
  "tiny": dict(num_questions=16, qa_batch=8, speed=(4, 32, 32, 2), ppl=4, insertion=8),
  # small: 9 interleaved rounds, so the demo's memory / RAG ratio is a median of 9 pairs
  # (one pair varies by ±20% on a shared 2-core machine; evaluate/speed.py).
  "small": dict(num_questions=256, qa_batch=32, speed=(16, 128, 128, 9), ppl=32, insertion=64),
  # Table 21 protocol: batch 32, 128 in, 128 out, 9 runs (first dropped).
  "paper_2p4b": dict(
    num_questions=1000, qa_batch=32, speed=(32, 128, 128, 9), ppl=256, insertion=64
  ),
}


def get(variant: str) -> ml_collections.ConfigDict:
  s = _SIZES.get(variant, _SIZES["small"])
  return section_of(
    EvalConfig,
    dict(
      num_questions=s["num_questions"],
      qa_batch_size=s["qa_batch"],
      perplexity_sequences=s["ppl"],
      speed_batch=s["speed"][0],
      speed_prompt_tokens=s["speed"][1],
      speed_new_tokens=s["speed"][2],
      speed_runs=s["speed"][3],
      insertion_examples=s["insertion"],
    ),
  )
