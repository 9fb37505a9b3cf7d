"""Evaluation section (``config.eval``): QA, perplexity, throughput, plots, the demo.

Turned into the frozen ``m3jax.evaluate.report.EvalConfig`` by ``eval_config_from``
(unknown keys are rejected there).
"""

from __future__ import annotations

import ml_collections

_SIZES = {
    # questions, QA batch, throughput (batch, prompt, new tokens, runs), ppl sequences
    "tiny": dict(num_questions=16, qa_batch=8, speed=(4, 32, 32, 2), ppl=4),
    "small": dict(num_questions=256, qa_batch=32, speed=(16, 128, 128, 3), ppl=32),
    # Table 21 protocol: batch 32, 128 in, 128 out, 9 runs (first dropped).
    "paper_2p4b": dict(num_questions=1000, qa_batch=32, speed=(32, 128, 128, 9), ppl=256),
}


def get(variant: str) -> ml_collections.ConfigDict:
  s = _SIZES.get(variant, _SIZES["small"])
  c = ml_collections.ConfigDict()
  c.conditions = ["no_memory", "memory", "oracle_memory", "rag", "random_memory"]
  c.num_questions = s["num_questions"]   # held-out QA items evaluated (0 = all)
  c.qa_batch_size = s["qa_batch"]
  c.max_new_tokens = 8                   # greedy answer length for exact match
  # QA demonstrations before each question (paper §7: few-shot; m3jax/evaluate/fewshot.py):
  # a model pretrained on prose learns the "Q: … A:" format from them, not from its weights.
  c.few_shot = 3
  c.max_prompt_tokens = 1024             # longer prompts are an error, not a truncation
  c.temperature = 0.0                    # 0 = greedy
  c.top_k = 0                            # 0 = full vocabulary
  c.anti_copy_threshold = 2 / 3          # drop refs holding > 2/3 of the question (App. C)
  c.rag_header_references = "Reference:"  # §7.4: header1 + refs + header2 + question
  c.rag_header_question = "Question:"
  c.random_memory_seed = 0
  c.perplexity_sequences = s["ppl"]      # held-out validation sequences
  # Throughput (Table 21 set-up, scaled): batch, prompt tokens, new tokens, runs (the
  # first run is dropped as compile/warm-up and the rest averaged).
  c.speed_batch = s["speed"][0]
  c.speed_prompt_tokens = s["speed"][1]
  c.speed_new_tokens = s["speed"][2]
  c.speed_runs = s["speed"][3]
  c.plot_dir = "experiments/results/plots"
  c.results_path = "experiments/results/demo.json"
  c.attribution_examples = 4             # answers whose memory attribution is reported
  # Runtime knowledge insertion: QA on this many held-out facts with their references
  # removed, re-inserted, deleted (then restored). 0 skips it.
  c.insertion_examples = 8 if variant == "tiny" else 64
  return c
