"""Runtime knowledge insertion and deletion for a trained model (no retraining).

A ``LiveKnowledge`` holds a model's bank, retrieval index and reference texts. ``insert``
encodes new references with the model's own memory layers (the same jitted encoder as the
bank build), appends them to the bank, and indexes them; ``delete`` removes them from
both. The model parameters never change. With a fitted-vocabulary embedder (TF-IDF), new
words (a new entity's name) are unknown to it, so ``refit_index=True`` (default) refits
the embedder on all live texts and rebuilds the index: seconds for 10^4 references, and
still no model training.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from m3jax.data.references import Reference, SentenceEnds, document_pieces, split_reference


class LiveKnowledge:
  """``index_dir``: where the bank's index lives (default ``<bank>/index`` for a local
  ``MemoryBank``; None for an in-memory ``BankOverlay``). Edits are durable: the bank
  commits rows, texts and tombstones (manifest last); a refitted index is saved, an
  upserted one is rebuilt on open by replaying the bank (``build.load_index``)."""

  def __init__(
    self,
    cfg,
    params,
    bank,
    embedder,
    retriever,
    texts: Mapping[str, str],
    tokenizer,
    *,
    bank_cfg=None,
    encode_batch_size: int = 32,
    index_dir: str | None = "default",
  ):
    from m3jax.memory.build import BankConfig, default_index_dir, make_encoder
    from m3jax.memory.store import MemoryBank

    self.cfg, self.params, self.bank = cfg, params, bank
    self.embedder, self.retriever = embedder, retriever
    self.texts = dict(texts)
    self.tokenizer = tokenizer
    self.bank_cfg = bank_cfg or BankConfig()
    self._encode = make_encoder(params, cfg, encode_batch_size)
    if index_dir == "default":
      index_dir = default_index_dir(bank.url) if isinstance(bank, MemoryBank) else None
    self.index_dir = index_dir

  def references(self, records: Sequence[Mapping]) -> list[Reference]:
    """Records -> references; a text longer than ``ref_len`` tokens is split into pieces
    ``id``, ``id#1``, … (``references.split_reference``, as the run's KB; never truncated)."""
    out = []
    ends = SentenceEnds(self.tokenizer)
    for i, r in enumerate(records):
      if (
        not isinstance(r.get("id"), str)
        or not isinstance(r.get("text"), str)
        or not r["text"].strip()
      ):
        raise ValueError(
          f"reference record {i} needs a string 'id' and a non-empty 'text', got keys {sorted(r)}"
        )
      out.extend(
        split_reference(r["id"], r["text"], self.tokenizer, self.cfg.memory.ref_len, ends=ends)
      )
    return out

  def insert(self, records: Sequence[Mapping], *, refit_index: bool = True) -> list[str]:
    """Encodes and adds ``{"id", "text"}`` records; returns the ids of their references."""
    refs = self.references(records)
    if not refs:
      return []
    ids = [r.id for r in refs]
    clash = [i for i in ids if i in self.texts]
    if clash or len(set(ids)) != len(ids):
      raise ValueError(
        f"reference ids already present (or repeated): {clash[:5]}; "
        "delete them first; nothing was inserted"
      )
    self.bank.append(ids, *self._encode(refs), texts=[r.text for r in refs])
    self.texts.update({r.id: r.text for r in refs})
    if refit_index:
      self._rebuild_index()
    else:
      embed = getattr(self.embedder, "embed_sparse", self.embedder.embed)
      self.retriever.insert(ids, embed([r.text for r in refs]))
    return ids

  def expand(self, ids: Sequence[str]) -> list[str]:
    """Document ids -> their reference ids (``x`` -> ``x``, ``x#1``, … when split;
    ``references.document_pieces``), each once: a document and its own pieces (``x``,
    ``x#1``, the list :meth:`insert` returns) name ``x#1`` twice."""
    pieces = document_pieces(self.texts)
    return list(dict.fromkeys(p for i in ids for p in pieces.get(i, [])))

  def delete(self, ids: Sequence[str], *, refit_index: bool = True) -> None:
    ids = list(ids)
    if len(set(ids)) != len(ids):
      raise ValueError(f"delete got repeated ids {ids}; nothing was deleted")
    missing = [i for i in ids if not self.expand([i])]
    if missing:
      raise KeyError(f"cannot delete unknown reference ids {missing[:5]}; nothing was deleted")
    ids = self.expand(ids)
    self.bank.delete(ids)
    for i in ids:
      self.texts.pop(i)
    if refit_index:
      self._rebuild_index()
    else:
      self.retriever.delete(ids)

  def _rebuild_index(self):
    from m3jax.memory.build import build_index_for, save_index

    if not self.texts:
      raise ValueError("the knowledge base is empty: nothing to index")
    refs = [Reference(i, t, ()) for i, t in self.texts.items()]
    self.embedder, self.retriever = build_index_for(refs, self.bank_cfg)
    if self.index_dir:
      save_index(self.index_dir, self.embedder, self.retriever, self.bank)

  def feeder(self, *, keep=None):
    from m3jax.memory.feeder import MemoryFeeder

    return MemoryFeeder(
      self.embedder, self.retriever, self.bank, self.cfg.memory.refs_per_chunk, keep=keep
    )
