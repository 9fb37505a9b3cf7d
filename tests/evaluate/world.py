"""A tiny bank over a hand-made knowledge base (random tiny model, byte vocabulary)."""

from __future__ import annotations


from m3jax.data.references import Reference
from m3jax.data.vocab import ByteVocab
from m3jax.memory.build import BankConfig, build_bank
from m3jax.memory.feeder import MemoryFeeder

NAMES = [
  "Zorblat",
  "Quenby",
  "Drimo",
  "Feltra",
  "Gaskon",
  "Hulve",
  "Ispra",
  "Jorn",
  "Kelda",
  "Lumo",
  "Mirsk",
  "Nantu",
]
JOBS = ["baker", "sailor", "poet", "miner", "judge", "tailor"]


def references(vocab, ref_len, names=NAMES, prefix="ref"):
  out = []
  for i, n in enumerate(names):
    text = f"{n} | job = {JOBS[i % len(JOBS)]}"
    out.append(Reference(f"{prefix}-{i}", text, tuple(vocab.encode(text)[:ref_len])))
  return out


def qa_items(names=NAMES, prefix="ref"):
  items = []
  for i, n in enumerate(names):
    ans = JOBS[i % len(JOBS)]
    choices = [ans] + [j for j in JOBS if j != ans][:3]
    items.append(
      dict(
        question=f"What is the job of {n}?",
        answer=ans,
        choices=choices,
        gold_ref_id=f"{prefix}-{i}",
        attribute="job",
      )
    )
  return items


def build(cfg, params, path, refs=None):
  vocab = ByteVocab()
  refs = refs or references(vocab, cfg.memory.ref_len)
  bank = build_bank(
    params,
    cfg,
    refs,
    str(path),
    progress=False,
    bank_cfg=BankConfig(index_kind="numpy", encode_batch_size=8, embedding_dim=256),
  )
  embedder, retriever = bank.index
  feeder = MemoryFeeder(embedder, retriever, bank, cfg.memory.refs_per_chunk)
  return vocab, refs, bank, feeder
