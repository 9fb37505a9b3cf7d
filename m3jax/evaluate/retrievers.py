"""Gold-reference retrieval by retriever, side by side on the same questions (issue 12).

Each question's first prompt chunk (the query the memory condition retrieves with,
inference/rag.py ``rag_ids``) is searched, unfiltered, with:

- ``tfidf``: sparse TF-IDF (uni+bigrams, exact names kept) over the references' texts;
- ``minilm``: the dense Flax MiniLM over the same texts (skipped, with the reason, when
  its weights package is not installed);
- ``self``: the model's own memory-layer queries against the bank's stored keys
  (Remark 2, m3jax.memory.self_retrieval).

Returns ``{name: {"top1", "recall5"}}`` (or ``{"skipped": reason}``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from m3jax.evaluate import qa
from m3jax.task import chunk_query_tokens

K = 5


def gold_hits(ids_QxK: np.ndarray, gold: Sequence[str]) -> dict:
  """top-1 and recall@K of the gold ids in the rows of ``ids_QxK`` (best first)."""
  rows = [list(r) for r in ids_QxK]
  return {
    "top1": float(np.mean([r[0] == g for r, g in zip(rows, gold)])),
    f"recall{K}": float(np.mean([g in r[:K] for r, g in zip(rows, gold)])),
  }


def _text_search(embedder, retriever_kind, refs, queries):
  from m3jax.memory.retriever import make_retriever

  embedder.fit([r.text for r in refs])
  embed = getattr(embedder, "embed_sparse", embedder.embed)
  ret = make_retriever(retriever_kind, [r.id for r in refs], embed([r.text for r in refs]))
  return ret.search(embed(queries), K)[0]


def compare_retrievers(
  cfg, params, vocab, items, refs, bank, *, layer: int = 0, tokens_per_head: int = 0
) -> dict:
  """Gold top-1 / recall@5 per retriever over ``items`` with a ``gold_ref_id``."""
  from m3jax.memory.embedders import SparseTfidfEmbedder, make_embedder
  from m3jax.memory.self_retrieval import SelfRetriever

  with_gold = [it for it in items if it.get("gold_ref_id")]
  if not with_gold:
    raise ValueError("no question has a gold_ref_id: nothing to compare retrievers on")
  special = {vocab.pad_id, vocab.eos_id, vocab.bos_id, vocab.ref_id}
  toks = []
  for it in with_gold:
    p = qa.encode_prompt(vocab, qa.qa_prompt(it["question"]))
    q = chunk_query_tokens(p, len(p), 0, cfg.memory.chunk_len)
    toks.append([int(t) for t in q if int(t) not in special])
  texts = [vocab.decode(t) for t in toks]
  gold = [it["gold_ref_id"] for it in with_gold]
  in_bank = [r for r, ok in zip(refs, bank.contains([r.id for r in refs])) if ok]
  out: dict = {}
  out["tfidf"] = gold_hits(_text_search(SparseTfidfEmbedder(), "sparse", in_bank, texts), gold)
  try:
    out["minilm"] = gold_hits(_text_search(make_embedder("minilm"), "numpy", in_bank, texts), gold)
  except (ImportError, FileNotFoundError, OSError) as e:
    out["minilm"] = {"skipped": f"{type(e).__name__}: {e}"}
  ret = SelfRetriever(
    cfg, params, bank, [r.id for r in in_bank], layer=layer, tokens_per_head=tokens_per_head
  )
  out["self"] = gold_hits(ret.search(ret.tokenize(toks), K)[0], gold)
  return out
