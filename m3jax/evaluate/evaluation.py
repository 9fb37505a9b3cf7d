"""Every evaluation of a trained model + bank in one call (the demo and ``m3jax eval``).

QA under five conditions (exact match, multiple choice), retrieval diagnostics (gold
reference recall, anti-copy drops), perplexity without memory, with causally retrieved
memory and with the own-text oracle (evaluate/perplexity.py), throughput and time to
first token (no memory / memory cold and warm / RAG, same weights, one run; see
evaluate/speed.py), memory attribution, plots. Returns one JSON-able dict.

``only`` selects parts (:data:`PARTS`; default :data:`DEFAULT_PARTS`, all but the slow
``retrievers`` comparison); a part that cannot run on the given data (too
little held-out text for perplexity, no gold references for insertion) is skipped with its
reason in ``results["skipped"]`` and the other parts are kept.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
from tqdm import tqdm

from m3jax.evaluate import attribution, fewshot, kinds, perplexity, plots, qa, retrievers, speed
from m3jax.inference import memory_sources, rag
from m3jax.inference.generate import Generator
from m3jax.inference.sampling import SamplingConfig
from m3jax.task import ChunkQuery


PARTS = ("qa", "retrievers", "perplexity", "speed", "attribution", "insertion")
# "retrievers" (TF-IDF vs MiniLM vs self-retrieval) embeds the whole KB with MiniLM: 142 s
# on the small demo's 8,249 references on the 2-core CPU, so it runs only when asked for.
DEFAULT_PARTS = tuple(p for p in PARTS if p != "retrievers")


def select_items(items: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
  """A seeded sample of ``n`` items in file order (0 = all)."""
  if not n or n >= len(items):
    return list(items)
  pick = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
  return [items[i] for i in pick]


def rag_prompt_budget(ev, trained_tokens: int | None, vocab, items) -> int | None:
  """RAG's prompt budget in tokens (``eval.rag_max_tokens``): as set; for 0 the trained
  row length less the answer's generated tokens; None for -1 or an unknown length."""
  if ev.rag_max_tokens > 0:
    return ev.rag_max_tokens
  if ev.rag_max_tokens < 0 or trained_tokens is None:
    return None
  answer, _ = qa.answer_token_budget(vocab, items, ev.max_new_tokens)
  return max(1, trained_tokens - answer)


def evaluate_all(
  cfg,
  params,
  vocab,
  paths,
  refs,
  bank,
  embedder,
  retriever,
  ev,
  *,
  plot_dir: str,
  progress: bool = True,
  metrics_jsonl: str | None = None,
  qa_items: Sequence[dict] | None = None,
  only: Sequence[str] | None = None,
  trained_tokens: int | None = None,
) -> dict:
  """``trained_tokens``: the length of the rows the model was trained on (data.seq_len),
  which sets RAG's prompt budget when ``ev.rag_max_tokens`` is 0 (None: no budget)."""
  from m3jax.data.sources import read_jsonl

  selected = tuple(only) if only else DEFAULT_PARTS
  bad = sorted(set(selected) - set(PARTS))
  if bad:
    raise ValueError(
      f"eval --only {','.join(selected)}: unknown part(s) {bad}; choose from {','.join(PARTS)}"
    )
  from m3jax.memory.feeder import MemoryFeeder, anti_copy_filter

  L, R = cfg.memory.chunk_len, cfg.memory.refs_per_chunk
  clock = [time.perf_counter()]
  timings = {}

  def lap(name):
    now = time.perf_counter()
    timings[name] = round(now - clock[0], 2)
    clock[0] = now

  from m3jax.data.references import document_pieces

  text_of = {r.id: r.text for r in refs}
  tokens_of = {r.id: r.tokens for r in refs}
  pieces = document_pieces(text_of)  # gold_ref_id -> the references of that line
  keep = anti_copy_filter(tokens_of.__getitem__, ev.anti_copy_threshold)
  feeder_eval = MemoryFeeder(embedder, retriever, bank, R, keep=keep)  # with anti-copy
  feeder = MemoryFeeder(embedder, retriever, bank, R)
  retrieved = memory_sources.RetrievedMemory(feeder_eval, vocab)
  unfiltered = memory_sources.RetrievedMemory(feeder, vocab)
  if qa_items is None:
    items = read_jsonl(paths.qa_eval, "qa", ref_ids=pieces)
  else:
    check_gold_ids(qa_items, pieces)
    items = qa_items
  pool = items
  kinds_of = kinds.value_kinds(items)  # from the whole file: a sample misleads
  if os.path.exists(paths.qa_train):
    pool = read_jsonl(paths.qa_train, "qa_train") or items
  items = select_items(items, ev.num_questions)
  demos = None
  if ev.few_shot:
    demos = lambda batch: fewshot.demonstrations(batch, pool, ev.few_shot, ev.random_memory_seed)
  rag_budget = rag_prompt_budget(ev, trained_tokens, vocab, items)
  conditions = qa.make_conditions(
    vocab,
    L,
    retrieved=retrieved,
    feeder=feeder,
    ref_text=text_of.__getitem__,
    ref_pool=list(text_of),
    seed=ev.random_memory_seed,
    names=ev.conditions,
    rag_headers=dict(header1=ev.rag_header_references, header2=ev.rag_header_question),
    demos=demos,
    pieces=pieces,
    rag_max_tokens=rag_budget,
  )
  gen = Generator(cfg, params, sampling=SamplingConfig(ev.temperature, ev.top_k))
  out = {"num_questions": len(items), "skipped": {}}
  with_choices = [it for it in items if it.get("choices")]
  if with_choices:
    out["mc_chance"] = float(np.mean([1 / len(it["choices"]) for it in with_choices]))

  def run_part(name, fn):
    """Runs one part; one that is not selected or cannot run is skipped with a reason."""
    if name not in selected:
      out["skipped"][name] = "not selected (--only" + (
        " retrievers)" if name == "retrievers" else ")"
      )
      return
    try:
      fn()
    except (ValueError, KeyError, IndexError, FileNotFoundError) as e:
      out["skipped"][name] = f"{type(e).__name__}: {e}"
      print(f"[m3jax.eval] {name} skipped: {out['skipped'][name]}")
    lap(name)

  def qa_part():
    qa_res = qa.evaluate_qa(
      cfg,
      params,
      vocab,
      items,
      conditions,
      max_new_tokens=ev.max_new_tokens,
      batch_size=ev.qa_batch_size,
      max_prompt_tokens=ev.max_prompt_tokens,
      generator=gen,
      progress=progress,
    )
    out.update(
      {
        "qa_exact_match": qa_res["exact_match"],
        "qa_multiple_choice": qa_res["multiple_choice"],
        "qa_multiple_choice_by_attribute": qa_res["multiple_choice_by_attribute"],
        "qa_max_new_tokens": qa_res["max_new_tokens"],
        "qa_answers_over_budget": qa_res["answers_over_budget"],
        "qa_by_kind": {c: kinds.by_kind(items, p, kinds_of) for c, p in qa_res["per_item"].items()},
      }
    )
    out["retrieval"] = retrieval_diagnostics(
      items, retrieved, unfiltered, vocab, L, pieces, text_of=text_of, refs_per_chunk=R
    )
    out["qa_examples"] = {c: v[:5] for c, v in qa_res["per_item"].items()}
    if "rag" in qa_res["retrieved_ids"]:
      read = [len(row) for row in qa_res["retrieved_ids"]["rag"]]
      out["rag_prompt_budget"] = rag_budget
      out["rag_refs_read"] = float(np.mean(read))

  run_part("qa", qa_part)

  def retrievers_part():
    # Gold top-1 / recall@5 of TF-IDF, MiniLM and self-retrieval on the same questions.
    out["retrieval_by_retriever"] = retrievers.compare_retrievers(
      cfg,
      params,
      vocab,
      items,
      refs,
      bank,
      layer=ev.self_retrieval_layer,
      tokens_per_head=ev.self_retrieval_tokens,
    )

  run_part("retrievers", retrievers_part)

  def perplexity_part():
    # Perplexity of held-out text (valid split). "memory" is causal: chunk c reads what
    # chunk c-1's text retrieved (chunk 0 none). "oracle_memory" retrieves with the scored
    # chunk's own text: it peeks at the tokens it predicts (an upper bound, not a result).
    stream = np.load(paths.tokens("valid"))
    seqs = perplexity.sequences_from_stream(stream, cfg.bos_id, 4 * L, ev.perplexity_sequences)
    out["perplexity"] = {
      "no_memory": perplexity.perplexity(cfg, params, seqs),
      "memory": perplexity.perplexity(cfg, params, seqs, unfiltered, retrieval="causal"),
      "oracle_memory": perplexity.perplexity(cfg, params, seqs, unfiltered, retrieval="own_text"),
    }

  run_part("perplexity", perplexity_part)

  def speed_part():
    # Throughput: same weights, same prompts, conditions interleaved round by round;
    # memory cold (cache off, unique ids: the paper's worst case) and warm (row cache
    # on). Medians per condition, and paired per-round ratios with their spread.
    stream = np.load(paths.tokens("valid"))
    sp = perplexity.sequences_from_stream(
      stream, cfg.bos_id, ev.speed_prompt_tokens, ev.speed_batch
    )
    sp = (sp * ev.speed_batch)[: ev.speed_batch]
    texts = [vocab.decode([int(t) for t in s[1:]]) for s in sp]
    rag_texts, _ = rag.rag_prompts(
      unfiltered, texts, lambda t: qa.encode_prompt(vocab, t), text_of.__getitem__, L
    )
    rag_tokens = [qa.encode_prompt(vocab, t) for t in rag_texts]
    tp = speed.throughput(
      cfg,
      params,
      sp,
      new_tokens=ev.speed_new_tokens,
      runs=ev.speed_runs,
      memory_fn=unfiltered,
      rag_prompts=rag_tokens,
      bank=bank,
      pool=list(text_of),
      progress=progress,
    )
    conds = tp["conditions"]
    out["decode_tokens_per_s"] = {k: v["tokens_per_s"] for k, v in conds.items()}
    out["time_to_first_token_s"] = {k: v["ttft_s"] for k, v in conds.items()}
    out["decode_ratios"] = {k: v["median"] for k, v in tp["ratios"].items()}
    out["speed"] = tp

  run_part("speed", speed_part)

  def attribution_part():
    # Attribution: memory mass by layer and the references the answers attend to.
    attr = attribute_examples(
      cfg,
      params,
      vocab,
      items[: max(ev.attribution_examples, 0)],
      {
        "memory": retrieved,
        "oracle_memory": memory_sources.OracleMemory(
          feeder, [it.get("gold_ref_id") for it in items], pieces
        ),
        "random_memory": memory_sources.RandomMemory(
          feeder,
          len(items),
          list(text_of),
          [it.get("gold_ref_id") for it in items],
          ev.random_memory_seed,
          pieces,
        ),
      },
      progress,
    )
    out["memory_mass_by_layer"] = attr["mass_by_layer"]
    out["attribution"] = attr["examples"]

  run_part("attribution", attribution_part)

  def insertion_part():
    if not ev.insertion_examples:
      raise ValueError("eval.insertion_examples is 0")
    res = insertion_demo(
      cfg, params, vocab, refs, bank, embedder, retriever, items[: ev.insertion_examples], ev, gen
    )
    if res is None:
      raise ValueError("no question has its gold reference in the bank")
    out["knowledge_insertion"] = res

  run_part("insertion", insertion_part)

  pl = {}
  if out.get("qa_multiple_choice"):
    pl["accuracy"] = plots.accuracy_by_condition(out, os.path.join(plot_dir, "accuracy.png"))
    by_attr = plots.accuracy_by_attribute(
      out["qa_multiple_choice_by_attribute"],
      os.path.join(plot_dir, "accuracy_by_attribute.png"),
      chance=out.get("mc_chance"),
    )
    if by_attr:
      pl["accuracy_by_attribute"] = by_attr
  if metrics_jsonl:
    pl["losses"] = plots.loss_curves(metrics_jsonl, os.path.join(plot_dir, "losses.png"))
  if out.get("memory_mass_by_layer"):
    pl["memory_mass"] = plots.memory_mass_by_layer(
      out["memory_mass_by_layer"], os.path.join(plot_dir, "memory_mass.png")
    )
  out["plots"] = pl
  lap("plots")
  out["eval_timings_s"] = timings
  return out


def check_gold_ids(items: Sequence[dict], ref_ids) -> None:
  """QA items read elsewhere: an unknown gold_ref_id is an error here, not a late KeyError."""
  for i, it in enumerate(items):
    gold = it.get("gold_ref_id")
    if gold is not None and gold not in ref_ids:
      raise ValueError(
        f"QA item {i} ({it.get('question', '')[:60]!r}): gold_ref_id {gold!r} "
        "is not a reference id of the knowledge base; fix the id or drop the "
        "field"
      )


def retrieval_diagnostics(
  items, retrieved, unfiltered, vocab, chunk_len, pieces=None, text_of=None, refs_per_chunk=1
) -> dict:
  """How often the gold reference is retrieved (top-R), before and after anti-copy. With
  ``pieces`` (``references.document_pieces``) any piece of a split gold line counts.

  With ``text_of`` (reference id -> text), also how often the answer's text is in what
  memory reads (``answer_in_retrieved``: the R references retrieved) and in what the
  oracle reads (``answer_in_oracle``: the gold line's first R pieces): a split line's
  gold piece may be one that does not hold the answer.
  """
  with_gold = [it for it in items if it.get("gold_ref_id")]
  if not with_gold:
    return {}
  toks = [qa.encode_prompt(vocab, qa.qa_prompt(it["question"])) for it in with_gold]
  f = rag.rag_ids(retrieved, toks, chunk_len)
  u = rag.rag_ids(unfiltered, toks, chunk_len)
  gold_pieces = [memory_sources.line_pieces(it["gold_ref_id"], pieces) for it in with_gold]
  gold = [set(p) for p in gold_pieces]
  hit = lambda ids: float(np.mean([bool(g.intersection(row)) for g, row in zip(gold, ids)]))
  top1 = lambda ids: float(np.mean([row[0] in g for g, row in zip(gold, ids)]))
  dropped = float(
    np.mean([sum(i is not None for i in a) - sum(i is not None for i in b) for a, b in zip(u, f)])
  )
  out = {
    "gold_recall_at_R": hit(f),
    "gold_top1": top1(f),
    "gold_recall_at_R_unfiltered": hit(u),
    "mean_refs_dropped_by_anti_copy": dropped,
  }
  if text_of is not None:
    answers = [str(it["answer"]) for it in with_gold]
    holds = lambda ids, a: any(i is not None and a in text_of[i] for i in ids)
    oracle = [p[:refs_per_chunk] for p in gold_pieces]  # what OracleMemory reads
    out["answer_in_retrieved"] = float(np.mean([holds(r, a) for r, a in zip(f, answers)]))
    out["answer_in_oracle"] = float(np.mean([holds(o, a) for o, a in zip(oracle, answers)]))
  return out


def attribute_examples(cfg, params, vocab, items, sources: dict, progress=True) -> dict:
  """Per condition, mean memory mass by layer at answer tokens; per example (memory
  condition), the retrieved references ranked by the mass the answer gives them."""
  L = cfg.memory.chunk_len
  mass, examples = {}, []
  for name, source in sources.items():
    layers = []
    for i, it in enumerate(tqdm(items, desc=f"attribution {name}", disable=not progress)):
      prompt, answer = qa.continuation(vocab, qa.qa_prompt(it["question"]), it["answer"])
      chunks = -(-(len(prompt) + len(answer)) // L)
      last = -(-len(prompt) // L) - 1
      q = ChunkQuery(i, last, prompt[last * L :])
      _, ids = source([q])
      mem = qa.row_memory(_as_row(source, i), [prompt], [0], chunks, L)
      a = attribution.attribute(cfg, params, prompt, answer, mem, list(ids[0]))
      layers.append(a["mass_by_layer"])
      if name == "memory":
        examples.append(
          {
            "question": it["question"],
            "answer": it["answer"],
            "gold_ref_id": it.get("gold_ref_id"),
            **a,
          }
        )
    if layers:
      mass[name] = np.mean(layers, 0).tolist()
  return {"mass_by_layer": mass, "examples": examples}


def _as_row(source, row: int):
  """Queries for question 0 of a one-question scorer go to ``row`` of the source."""
  return lambda queries: source([ChunkQuery(row, q.chunk, q.tokens) for q in queries])


def insertion_demo(cfg, params, vocab, refs, bank, embedder, retriever, items, ev, gen):
  """Runtime insertion on a trained model: the gold references of ``items`` are removed,
  then QA runs before re-insertion, after it, and after deleting them again; finally the
  index is restored. The bank is edited through an in-memory overlay (never on disk: a
  killed run loses nothing). The embedder knows these texts, so the index is upserted.
  A split gold line is deleted and re-inserted piece by piece (each piece is a record)."""
  from m3jax.evaluate.insertion import insertion_roundtrip
  from m3jax.inference.knowledge import LiveKnowledge
  from m3jax.memory.overlay import BankOverlay

  from m3jax.data.references import document_pieces

  text_of = {r.id: r.text for r in refs}
  pieces = document_pieces(text_of)
  items = [
    it for it in items if pieces.get(it.get("gold_ref_id")) and pieces[it["gold_ref_id"]][0] in bank
  ]
  if not items:
    return None
  gold = list(dict.fromkeys(p for it in items for p in pieces[it["gold_ref_id"]]))
  kn = LiveKnowledge(cfg, params, BankOverlay(bank), embedder, retriever, text_of, vocab)
  kn.delete(gold, refit_index=False)
  try:
    out = insertion_roundtrip(
      kn,
      cfg,
      params,
      vocab,
      items,
      [{"id": g, "text": text_of[g]} for g in gold],
      generator=gen,
      max_new_tokens=ev.max_new_tokens,
      batch_size=ev.qa_batch_size,
      refit_index=False,
    )
  finally:
    kn.insert([{"id": g, "text": text_of[g]} for g in gold], refit_index=False)
  out["num_items"] = len(items)
  return out
