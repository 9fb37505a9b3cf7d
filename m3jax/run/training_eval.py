"""QA multiple choice during training, injected into the training loop as an evaluator.

Every ``train.eval_every`` steps the loop logs the held-out loss with and without memory
(m3jax.train.periodic_eval); :func:`training_evaluators` adds multiple-choice accuracy on
``train.eval_qa_questions`` held-out questions (0: off), without memory and with
retrieved memory, to the same record (``eval_metrics.jsonl``, TensorBoard ``eval/``:
one tag namespace across stages). Training sits below evaluation in the layering, so the
commands build this evaluator and pass it to ``train(..., evaluators=...)``.

It asks what ``m3jax eval --only qa`` asks of a finished run, on the current parameters
and cheaply: the same question sample (``evaluation.select_items``, seed 0), few-shot
prompts, retrieval (the bank's index over the knowledge base, anti-copy filter) and
choice scoring (``qa.evaluate_qa`` without generation, so no exact match). Memories are
the current parameters' own: a ``LiveBank`` encodes just the references retrieved for
these questions, every time, in memory (no bank is built or changed). With the same
parameters and ``eval.num_questions`` equal to ``train.eval_qa_questions`` the numbers are
those of ``eval --only qa`` on a bank built from that checkpoint.

Keys: ``qa_mc_no_memory``, ``qa_mc_memory`` (accuracy), ``qa_mc_n`` (questions with
choices), ``qa_mc_chance``. A run whose data cannot support it (synthetic batches, no
held-out QA, too few few-shot demonstrations) logs nothing of it and says why once.
"""

from __future__ import annotations

import os
from typing import Any, Callable


def training_evaluators(config) -> list[Callable]:
  """The evaluators ``train`` should run for ``config`` (empty when none applies)."""
  tr = config.train
  if not int(tr.get("eval_every", 0) or 0) or not int(tr.get("eval_qa_questions", 32) or 0):
    return []
  if "data" not in config or tr.get("data_source", "pipeline") != "pipeline":
    return []
  return [TrainingQA(config)]


class TrainingQA:
  """``qa(params) -> {"qa_mc_no_memory": x, "qa_mc_memory": y, "qa_mc_n": n, ...}``.

  Set up on the first call (``train`` has made ``config.data.data_dir`` content-addressed
  and prepared the data by then).
  """

  def __init__(self, config, num_questions: int | None = None):
    self.config = config
    self.num_questions = int(
      num_questions if num_questions is not None else config.train.get("eval_qa_questions", 32)
    )
    self._setup_done = False
    self._disabled: str | None = None
    self.bank: Any = None  # the LiveBank of the memory condition (models with memory layers)

  def _setup(self) -> None:
    from m3jax.data.config import data_config_from
    from m3jax.data.prepare import load_vocab, prepare_data
    from m3jax.data.sources import read_jsonl
    from m3jax.evaluate import evaluation, fewshot, qa
    from m3jax.evaluate.report import eval_config_from
    from m3jax.inference.memory_sources import RetrievedMemory
    from m3jax.memory.build import build_index_for, served_configs
    from m3jax.memory.feeder import MemoryFeeder, anti_copy_filter
    from m3jax.memory.live_bank import LiveBank
    from m3jax.run.loading import kb_references

    config = self.config
    cfg, bank_cfg = served_configs(config)  # read as served
    ev = eval_config_from(config.get("eval"))
    paths = prepare_data(config.data)  # a no-op once prepared
    vocab = load_vocab(data_config_from(config.data), paths)
    refs = kb_references(paths, vocab, cfg.memory.ref_len)
    text_of = {r.id: r.text for r in refs}
    items = read_jsonl(paths.qa_eval, "qa", ref_ids=text_of)
    pool = (
      read_jsonl(paths.qa_train, "qa_train") if os.path.exists(paths.qa_train) else []
    ) or items
    items = evaluation.select_items(items, self.num_questions)  # eval's sample
    with_choices = [it for it in items if it.get("choices")]
    if not with_choices:
      raise ValueError(f"{paths.qa_eval} has no held-out questions with choices")
    demos = None
    if ev.few_shot:
      demos = lambda batch: fewshot.demonstrations(batch, pool, ev.few_shot, ev.random_memory_seed)
      demos(items)  # too few demonstrations is an error now, not at every evaluation
    names = ("no_memory", "memory") if cfg.memory.memory_layers else ("no_memory",)
    retrieved = None
    if "memory" in names:
      self.bank = LiveBank(cfg, refs, batch_size=bank_cfg.encode_batch_size)
      embedder, retriever = build_index_for(refs, bank_cfg)
      tokens_of = {r.id: r.tokens for r in refs}
      keep = anti_copy_filter(tokens_of.__getitem__, ev.anti_copy_threshold)
      self._feeder = MemoryFeeder(
        embedder, retriever, self.bank, cfg.memory.refs_per_chunk, keep=keep
      )
      retrieved = RetrievedMemory(self._feeder, vocab)
    self._conditions = qa.make_conditions(
      vocab, cfg.memory.chunk_len, retrieved=retrieved, names=names, demos=demos
    )
    self._run = lambda params: qa.evaluate_qa(
      cfg,
      params,
      vocab,
      items,
      self._conditions,
      batch_size=ev.qa_batch_size,
      max_prompt_tokens=ev.max_prompt_tokens,
      progress=False,
      exact_match=False,
    )
    self._n = len(with_choices)
    self._chance = float(sum(1 / len(it["choices"]) for it in with_choices) / self._n)

  def __call__(self, params) -> dict:
    if self._disabled:
      return {}
    if not self._setup_done:
      try:
        self._setup()
      except (ValueError, KeyError, FileNotFoundError) as e:
        self._disabled = f"{type(e).__name__}: {e}"
        print(f"[m3jax.train] QA during training off ({self._disabled})")
        return {}
      self._setup_done = True
    if self.bank is not None:
      self.bank.set_params(params)  # memories of these parameters, encoded on demand
    res = self._run(params)
    out = {f"qa_mc_{c}": v for c, v in res["multiple_choice"].items() if v is not None}
    return {**out, "qa_mc_n": self._n, "qa_mc_chance": self._chance}
