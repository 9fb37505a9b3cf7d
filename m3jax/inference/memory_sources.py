"""Memory sources behind the generator's one interface, ``memory_fn(queries)``.

Every evaluation condition is a memory source over the same bank, so the same generator
and scorer run them all: ``RetrievedMemory`` (embed the chunk text, ScaNN, anti-copy
filter, bank read: the Memory³ condition), ``OracleMemory`` (the question's gold
reference), ``RandomMemory`` (R random references: a control for "any memory helps").
``None`` as memory_fn is the no-memory condition.

A source returns (MemoryKV [L, n, 1, R, K, M, D], ids object array [n, R], None = empty).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from m3jax.task import ChunkQuery


def _strip_specials(tokens, vocab) -> list[int]:
  special = {vocab.pad_id, vocab.eos_id, vocab.bos_id, vocab.ref_id}
  return [int(t) for t in tokens if int(t) not in special]


class RetrievedMemory:
  """Chunk tokens -> text -> feeder (retrieve R, filter, read bank) -> MemoryKV."""

  def __init__(self, feeder, vocab):
    self.feeder, self.vocab = feeder, vocab

  def texts(self, queries: Sequence[ChunkQuery]) -> list[str]:
    return [self.vocab.decode(_strip_specials(q.tokens, self.vocab)) for q in queries]

  def retrieve_ids(self, queries: Sequence[ChunkQuery]) -> np.ndarray:
    """The ids the memory condition uses for ``queries`` (RAG reuses them), [n, R]."""
    toks = [_strip_specials(q.tokens, self.vocab) for q in queries]
    return self.feeder.retrieve(self.texts(queries), toks)

  def __call__(self, queries: Sequence[ChunkQuery]):
    ids = self.retrieve_ids(queries)
    return self.feeder.assemble(ids[:, None]), ids


class FixedMemory:
  """Per-row fixed ids for every chunk: the oracle (gold reference) and random controls.

  ``rows_ids[row]`` lists the reference ids of that row (at most R; padded with None).
  """

  def __init__(self, feeder, rows_ids: Sequence[Sequence[str]]):
    self.feeder = feeder
    r = feeder.refs_per_chunk
    self.ids = np.full((len(rows_ids), r), None, object)
    for i, row in enumerate(rows_ids):
      row = list(row)[:r]
      self.ids[i, : len(row)] = row

  def __call__(self, queries: Sequence[ChunkQuery]):
    ids = self.ids[[q.row for q in queries]]
    return self.feeder.assemble(ids[:, None]), ids


def line_pieces(ref_id, pieces: Mapping[str, Sequence[str]] | None) -> list:
  """The references of the knowledge-base line ``ref_id``, in order (``pieces``:
  ``references.document_pieces``; without it, the id itself)."""
  if ref_id is None:
    return []
  return list(pieces.get(ref_id, [ref_id])) if pieces is not None else [ref_id]


def OracleMemory(
  feeder, gold_ids: Sequence[str], pieces: Mapping[str, Sequence[str]] | None = None
) -> FixedMemory:
  """Each row attends to its question's gold reference only: with ``pieces``
  (``references.document_pieces``) a split gold line gives its first R pieces, in order."""
  return FixedMemory(feeder, [line_pieces(g, pieces) for g in gold_ids])


def RandomMemory(
  feeder,
  num_rows: int,
  pool: Sequence[str],
  exclude: Sequence[str] = (),
  seed: int = 0,
  pieces: Mapping[str, Sequence[str]] | None = None,
) -> FixedMemory:
  """Each row attends to R references drawn at random (never its gold one, nor any piece
  of it with ``pieces``)."""
  rng = np.random.default_rng(seed)
  pool = list(pool)
  rows = []
  for i in range(num_rows):
    bad = set(line_pieces(exclude[i], pieces)) if i < len(exclude) else set()
    pick = [pool[j] for j in rng.permutation(len(pool))[: feeder.refs_per_chunk + len(bad)]]
    rows.append([p for p in pick if p not in bad][: feeder.refs_per_chunk])
  return FixedMemory(feeder, rows)
