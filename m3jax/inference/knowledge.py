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

from m3jax.data.references import Reference


class LiveKnowledge:

  def __init__(self, cfg, params, bank, embedder, retriever, texts: Mapping[str, str],
               tokenizer, *, bank_cfg=None, encode_batch_size: int = 32):
    from m3jax.memory.build import BankConfig, make_encoder
    self.cfg, self.params, self.bank = cfg, params, bank
    self.embedder, self.retriever = embedder, retriever
    self.texts = dict(texts)
    self.tokenizer = tokenizer
    self.bank_cfg = bank_cfg or BankConfig()
    self._encode = make_encoder(params, cfg, encode_batch_size)

  def references(self, records: Sequence[Mapping]) -> list[Reference]:
    out = []
    for i, r in enumerate(records):
      if not isinstance(r.get("id"), str) or not isinstance(r.get("text"), str) \
          or not r["text"].strip():
        raise ValueError(f"reference record {i} needs a string 'id' and a non-empty 'text', "
                         f"got keys {sorted(r)}")
      toks = list(self.tokenizer.encode(r["text"]))[:self.cfg.memory.ref_len]
      out.append(Reference(r["id"], r["text"], tuple(toks)))
    return out

  def insert(self, records: Sequence[Mapping], *, refit_index: bool = True) -> list[str]:
    """Encodes and adds ``{"id", "text"}`` records; returns their ids."""
    refs = self.references(records)
    if not refs:
      return []
    clash = [r.id for r in refs if r.id in self.texts]
    if clash:
      raise ValueError(f"reference ids already present: {clash[:5]}; delete them first")
    self.bank.append([r.id for r in refs], *self._encode(refs))
    self.texts.update({r.id: r.text for r in refs})
    if refit_index:
      self._rebuild_index()
    else:
      self.retriever.insert([r.id for r in refs], self.embedder.embed([r.text for r in refs]))
    return [r.id for r in refs]

  def delete(self, ids: Sequence[str], *, refit_index: bool = True) -> None:
    missing = [i for i in ids if i not in self.texts]
    if missing:
      raise KeyError(f"cannot delete unknown reference ids {missing[:5]}")
    self.bank.delete(list(ids))
    for i in ids:
      self.texts.pop(i)
    if refit_index:
      self._rebuild_index()
    else:
      self.retriever.delete(list(ids))

  def _rebuild_index(self):
    from m3jax.memory.build import build_index_for
    if not self.texts:
      raise ValueError("the knowledge base is empty: nothing to index")
    refs = [Reference(i, t, ()) for i, t in self.texts.items()]
    self.embedder, self.retriever = build_index_for(refs, self.bank_cfg)

  def feeder(self, *, keep=None):
    from m3jax.memory.feeder import MemoryFeeder
    return MemoryFeeder(self.embedder, self.retriever, self.bank,
                        self.cfg.memory.refs_per_chunk, keep=keep)
