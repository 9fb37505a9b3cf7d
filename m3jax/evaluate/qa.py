"""QA on held-out facts: exact match of greedy answers and multiple-choice accuracy.

Multiple choice scores each choice by the sum of its tokens' log-probabilities after the
prompt, in one full forward with the condition's memory: chunk c of the prompt gets the
memory its own prompt text retrieves (as in generation); answer tokens that spill past
the last prompt chunk inherit that chunk's memory (so a choice never retrieves with its
own text, which would leak the candidate into the query).

A *condition* maps a list of QA items to (prompt texts, memory_fn or None); see
:func:`make_conditions` for no_memory / memory / oracle_memory / rag / random_memory.
"""

from __future__ import annotations

import re
import string
from typing import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from m3jax.inference.generate import Generator
from m3jax.model.config import ModelConfig
from m3jax.task import ChunkQuery, LMTask, chunk_query_tokens, gather_memory, qa_prompt

CONDITIONS = ("no_memory", "memory", "oracle_memory", "rag", "random_memory")


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation and articles, squeeze spaces (SQuAD-style)."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def first_answer(generated: str) -> str:
  """The answer part of a continuation: up to the first line break or next ``Q:``."""
  return re.split(r"\n|\bQ:", generated, maxsplit=1)[0]


def answer_token_budget(vocab, items: Sequence[dict], max_new_tokens: int) -> tuple[int, int]:
  """-> (tokens to generate, answers that budget cannot judge).

  ``max_new_tokens`` 0 sizes the budget to the longest answer's tokens + 1: the line break
  that ends an answer must fit, or a greedy answer cut at the budget would match a longer
  wrong one. A fixed budget counts the answers it cannot hold with their break: their
  exact match is not measured, only cut off (a world with long answers)."""
  if max_new_tokens < 0:
    raise ValueError(f"max_new_tokens={max_new_tokens}: a number of tokens, or 0 for auto")
  lengths = [len(vocab.encode(" " + str(it["answer"]))) for it in items]
  budget = max_new_tokens or max(lengths, default=0) + 1
  return budget, sum(n >= budget for n in lengths)


def encode_prompt(vocab, text: str, max_len: int | None = None) -> np.ndarray:
  ids = np.asarray([vocab.bos_id] + list(vocab.encode(text)), np.int32)
  if max_len is not None and len(ids) > max_len:
    raise ValueError(
      f"prompt of {len(ids)} tokens exceeds the context budget of {max_len} "
      f"tokens: {text[:80]!r}…; shorten the question or raise "
      "eval.max_prompt_tokens"
    )
  return ids


def continuation(vocab, prompt_text: str, answer: str):
  """-> (prompt ids with <s>, answer ids) such that prompt + answer is the tokenization of
  ``prompt_text + " " + answer`` when it splits at the boundary (it does for SentencePiece
  on a space)."""
  prompt = encode_prompt(vocab, prompt_text)
  full = encode_prompt(vocab, f"{prompt_text} {answer}")
  if np.array_equal(full[: len(prompt)], prompt) and len(full) > len(prompt):
    return prompt, full[len(prompt) :]
  return prompt, np.asarray(vocab.encode(" " + answer), np.int32)


# ------------------------------------------------------------------------- scoring
def _scorer(cfg: ModelConfig):
  """The task's span scorer: (params, tokens, start, end, memory) -> Σ log p per row."""
  return LMTask.of(cfg).span_logprob


def row_memory(
  memory_fn, prompts: Sequence[np.ndarray], rows_q: Sequence[int], num_chunks: int, chunk_len: int
):
  """MemoryKV [L, len(rows_q), C, …]: row i uses question rows_q[i]'s prompt memories;
  chunks past the prompt inherit its last chunk's (one retrieval per prompt chunk)."""
  per_q = {}
  for q in sorted(set(rows_q)):
    p = prompts[q]
    per_q[q] = [
      ChunkQuery(q, c, chunk_query_tokens(p, len(p), c, chunk_len))
      for c in range(-(-len(p) // chunk_len))
    ]
  plan = [[per_q[q][min(c, len(per_q[q]) - 1)] for c in range(num_chunks)] for q in rows_q]
  return gather_memory(memory_fn, plan).memory


def choice_log_likelihoods(
  cfg: ModelConfig,
  params,
  prompts: Sequence[np.ndarray],
  choices: Sequence[Sequence[np.ndarray]],
  memory_fn=None,
  *,
  batch_size: int = 32,
  scorer=None,
  progress: bool = False,
):
  """Sum of answer-token log-probs for every (question, choice): list of arrays [n_q]."""
  L = cfg.memory.chunk_len
  rows = [(q, j) for q, cs in enumerate(choices) for j in range(len(cs))]
  if not rows:
    return [np.zeros((0,))] * len(prompts)
  longest = max(len(prompts[q]) + len(choices[q][j]) for q, j in rows)
  t = -(-longest // L) * L
  score = scorer or _scorer(cfg)
  out = np.zeros(len(rows))
  for s in tqdm(range(0, len(rows), batch_size), desc="score choices", disable=not progress):
    part = rows[s : s + batch_size]
    part = part + [part[0]] * (batch_size - len(part))  # fixed shape: one compile
    tokens = np.full((batch_size, t), cfg.pad_id, np.int32)
    start, end = np.zeros(batch_size, np.int32), np.zeros(batch_size, np.int32)
    for i, (q, j) in enumerate(part):
      seq = np.concatenate([prompts[q], choices[q][j]])
      tokens[i, : len(seq)] = seq
      start[i], end[i] = len(prompts[q]), len(seq)
    mem = (
      None if memory_fn is None else row_memory(memory_fn, prompts, [q for q, _ in part], t // L, L)
    )
    got = np.asarray(score(params, jnp.asarray(tokens), jnp.asarray(start), jnp.asarray(end), mem))
    n = min(batch_size, len(rows) - s)
    out[s : s + n] = got[:n]
  res, k = [], 0
  for cs in choices:
    res.append(out[k : k + len(cs)])
    k += len(cs)
  return res


# ------------------------------------------------------------------------- conditions
def make_conditions(
  vocab,
  chunk_len: int,
  *,
  retrieved=None,
  feeder=None,
  ref_text: Callable[[str], str] | None = None,
  ref_pool=(),
  seed: int = 0,
  rag_headers: dict | None = None,
  names: Sequence[str] = CONDITIONS,
  demos: Callable[[Sequence[dict]], list[str]] | None = None,
  pieces: Mapping[str, Sequence[str]] | None = None,
  rag_max_tokens: int | None = None,
):
  """Condition name -> fn(items) -> (prompt texts, memory_fn or None, ids or None).

  ``retrieved``: a RetrievedMemory (the memory and RAG conditions share its ids);
  ``feeder``: the MemoryFeeder for oracle / random memories (no filter needed);
  ``demos``: items -> few-shot prefixes (``m3jax.evaluate.fewshot``). With demonstrations,
  memory and RAG retrieve with the question alone (§7.4), and RAG's text goes
  header1 + refs + header2 + demonstrations + question. ``pieces``: gold id -> its
  reference ids (``references.document_pieces``) for the oracle and random memories.
  ``rag_max_tokens``: RAG's prompt budget; it reads the retrieved references, best first,
  that fit (``rag.references_that_fit``; at least one), and its ids are those it read
  (None where one was left out). None: every retrieved reference."""
  from m3jax.evaluate import fewshot
  from m3jax.inference import memory_sources, rag

  enc = lambda t: encode_prompt(vocab, t)

  def questions(items):
    return [qa_prompt(it["question"]) for it in items]

  def prompts(items):
    prefixes = demos(items) if demos is not None else [""] * len(items)
    return [p + q for p, q in zip(prefixes, questions(items))]

  def source(items):
    if demos is None:
      return retrieved
    return fewshot.QuestionRetrieval(retrieved, [enc(q) for q in questions(items)])

  def _memory(items):
    src = source(items)
    return prompts(items), src, rag.rag_ids(src, [enc(q) for q in questions(items)], chunk_len)

  def _rag(items):
    src = source(items)
    headers = rag_headers or {}
    texts, read = [], []
    for p, row in zip(
      prompts(items), rag.rag_ids(src, [enc(q) for q in questions(items)], chunk_len)
    ):
      ranked = [i for i in row if i is not None]
      refs = [ref_text(i) for i in ranked]
      n = rag.references_that_fit(refs, p, lambda t: len(enc(t)), rag_max_tokens, **headers)
      texts.append(rag.rag_text(refs[:n], p, **headers))
      read.append(ranked[:n] + [None] * (len(row) - n))
    return texts, None, read

  table = {
    "no_memory": lambda items: (prompts(items), None, None),
    "memory": _memory,
    "oracle_memory": lambda items: (
      prompts(items),
      memory_sources.OracleMemory(feeder, [it.get("gold_ref_id") for it in items], pieces),
      None,
    ),
    "random_memory": lambda items: (
      prompts(items),
      memory_sources.RandomMemory(
        feeder, len(items), ref_pool, [it.get("gold_ref_id") for it in items], seed, pieces
      ),
      None,
    ),
    "rag": _rag,
  }
  return {n: table[n] for n in names}


def evaluate_qa(
  cfg: ModelConfig,
  params,
  vocab,
  items: Sequence[dict],
  conditions: dict,
  *,
  max_new_tokens: int = 0,
  batch_size: int = 16,
  max_prompt_tokens: int = 2048,
  generator: Generator | None = None,
  progress: bool = True,
  exact_match: bool = True,
) -> dict:
  """-> {"exact_match": {cond: acc}, "multiple_choice": {cond: acc}, "per_item": …,
  "retrieved_ids": {cond: [[ids]]}, "max_new_tokens", "answers_over_budget"}. Items
  without ``choices`` skip multiple choice. ``max_new_tokens`` 0 (default) generates as
  many tokens as the longest answer needs (:func:`answer_token_budget`).

  ``exact_match=False`` scores the choices only (no generation; exact match is None):
  the cheap check run during training."""
  if not items:
    raise ValueError("no QA items to evaluate (empty QA file?)")
  gen = (generator or Generator(cfg, params)) if exact_match else None
  over = 0  # scoring the choices alone generates nothing: no budget to size
  if gen is not None:
    max_new_tokens, over = answer_token_budget(vocab, items, max_new_tokens)
  if over:
    print(
      f"[m3jax.qa] {over} of {len(items)} answers need more than max_new_tokens="
      f"{max_new_tokens} generated tokens (with the line break that ends them): their exact "
      "match is cut off; raise eval.max_new_tokens, or set it to 0 to size it to the answers"
    )
  scorer = _scorer(cfg)
  em, mc, per_item, all_ids = {}, {}, {}, {}
  for name, cond in conditions.items():
    hits, mc_hits, mc_n, preds, ids_out = 0, 0, 0, [], []
    for s in tqdm(range(0, len(items), batch_size), desc=f"QA {name}", disable=not progress):
      real = list(items[s : s + batch_size])
      n = len(real)
      part = real + [real[0]] * (batch_size - n)  # one compiled shape per condition
      texts, memory_fn, ids = cond(part)
      toks = [encode_prompt(vocab, t, max_prompt_tokens) for t in texts]
      base = len(preds)
      if gen is None:
        preds += [dict(question=it["question"], answer=it["answer"]) for it in real]
      else:
        res = gen.generate(toks, max_new_tokens, memory_fn=memory_fn)
        for it, g in zip(real, res.tokens):
          pred = first_answer(vocab.decode([int(x) for x in g]))
          ok = normalize_answer(pred) == normalize_answer(it["answer"])
          hits += ok
          preds.append(
            dict(question=it["question"], answer=it["answer"], prediction=pred, correct=bool(ok))
          )
      if ids is not None:
        ids_out += [[i for i in row if i is not None] for row in np.asarray(ids)[:n]]
      with_choices = [i for i, it in enumerate(real) if it.get("choices")]
      if with_choices:
        cont = [
          [continuation(vocab, texts[i], c)[1] for c in part[i]["choices"]] for i in with_choices
        ]
        ll = choice_log_likelihoods(
          cfg,
          params,
          [toks[i] for i in with_choices],
          cont,
          _subset(memory_fn, with_choices),
          scorer=scorer,
          batch_size=4 * batch_size,
        )
        for i, scores in zip(with_choices, ll):
          ok = part[i]["choices"][int(np.argmax(scores))] == part[i]["answer"]
          mc_hits += ok
          mc_n += 1
          preds[base + i]["mc_correct"] = bool(ok)
    em[name] = hits / len(items) if gen is not None else None
    mc[name] = mc_hits / mc_n if mc_n else None
    per_item[name] = preds
    if ids_out:
      all_ids[name] = ids_out
  return {
    "exact_match": em,
    "multiple_choice": mc,
    "per_item": per_item,
    "retrieved_ids": all_ids,
    "num_items": len(items),
    "max_new_tokens": max_new_tokens,
    "answers_over_budget": over,
    "multiple_choice_by_attribute": {
      name: by_attribute(items, preds) for name, preds in per_item.items()
    },
  }


def by_attribute(items: Sequence[dict], preds: Sequence[dict]) -> dict:
  """Multiple-choice accuracy per ``attribute`` field: {attr: {"accuracy", "count"}}.

  Items without an ``attribute`` (or without choices) are left out; {} when none has one.
  Which facts memory helps with is often more telling than the mean (docs/design.md).
  """
  hits: dict[str, list[bool]] = {}
  for it, p in zip(items, preds):
    if it.get("attribute") is not None and "mc_correct" in p:
      hits.setdefault(str(it["attribute"]), []).append(bool(p["mc_correct"]))
  return {a: {"accuracy": sum(v) / len(v), "count": len(v)} for a, v in sorted(hits.items())}


def _subset(memory_fn, rows: Sequence[int]):
  """Maps scorer question indices back to the batch rows a FixedMemory was built for."""
  if memory_fn is None:
    return None
  rows = list(rows)
  return lambda queries: memory_fn([ChunkQuery(rows[q.row], q.chunk, q.tokens) for q in queries])
