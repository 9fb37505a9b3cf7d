"""Nearest-reference search behind one small protocol (paper §3: cosine over embeddings).

Embeddings are L2-normalized, so cosine is a dot product. ``NumpyRetriever`` is exact
(the recall reference, and the fallback when scann is not installed, e.g. on the GPU
image); ``ScannRetriever`` uses brute force for small banks and tree + asymmetric
hashing + exact reorder for large ones, chosen by size. Both support runtime insert and
delete without retraining (ScaNN's mutable searcher: upsert / delete by docid) and are
saved beside the bank.
"""

from __future__ import annotations

import json
import math
import os
from typing import Protocol, Sequence

import numpy as np


class Retriever(Protocol):
  def search(self, query_QxE: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (ids [Q, k] object array of reference ids, None-padded; scores [Q, k], -inf padded)."""

  def insert(self, ids: Sequence[str], embeddings_NxE: np.ndarray) -> None: ...

  def delete(self, ids: Sequence[str]) -> None: ...

  def save(self, directory: str) -> None: ...

  def __len__(self) -> int: ...


def _check(ids, emb):
  emb = np.asarray(emb, np.float32)
  if emb.ndim != 2 or len(ids) != emb.shape[0]:
    raise ValueError(f"{len(ids)} ids need embeddings [{len(ids)}, dim], got {emb.shape}")
  return [str(i) for i in ids], emb


def _top_k(s_QxN: np.ndarray, all_ids: Sequence[str], k: int):
  """Best k of every row, best first: (ids [Q, k] None-padded, scores [Q, k] -inf-padded)."""
  q, n = s_QxN.shape
  ids = np.full((q, k), None, object)
  scores = np.full((q, k), -np.inf, np.float32)
  kk = min(k, n)
  if kk == 0:
    return ids, scores
  top = np.argpartition(-s_QxN, kk - 1, axis=1)[:, :kk]
  order = np.argsort(-np.take_along_axis(s_QxN, top, 1), axis=1, kind="stable")
  top = np.take_along_axis(top, order, 1)
  ids[:, :kk] = np.asarray(all_ids, object)[top]
  scores[:, :kk] = np.take_along_axis(s_QxN, top, 1)
  return ids, scores


_META_FILE = "retriever.json"  # {"kind", ...}: what load_retriever dispatches on


def _write_meta(directory: str, meta: dict) -> None:
  with open(os.path.join(directory, _META_FILE), "w") as f:
    json.dump(meta, f)


def _read_meta(directory: str) -> dict:
  with open(os.path.join(directory, _META_FILE)) as f:
    return json.load(f)


class _ExactIndex:
  """What the exact retrievers share: reference ids in insertion order and id -> row."""

  def __init__(self, ids: Sequence[str] = (), embeddings_NxE=None, dim: int | None = None):
    self._ids: list[str] = []
    self._pos: dict[str, int] = {}
    self._clear(dim or 0)
    if len(ids):
      self.insert(ids, embeddings_NxE)

  def _clear(self, dim: int) -> None:
    """Empty storage for ``dim``-wide embeddings."""
    raise NotImplementedError

  def insert(self, ids, embeddings_NxE) -> None:
    raise NotImplementedError


class NumpyRetriever(_ExactIndex):
  """Exact maximum-inner-product search over a dense matrix."""

  kind = "numpy"

  def _clear(self, dim: int) -> None:
    self._emb = np.zeros((0, dim), np.float32)

  def __len__(self):
    return len(self._ids)

  @property
  def ids(self) -> list[str]:
    return list(self._ids)

  @property
  def embeddings(self) -> np.ndarray:
    return self._emb

  def insert(self, ids, embeddings_NxE):
    """Upsert: a known id gets its embedding replaced, a new id is appended."""
    ids, emb = _check(ids, embeddings_NxE)
    if self._emb.shape[0] == 0:
      self._emb = np.zeros((0, emb.shape[1]), np.float32)
    new_rows = []
    for i, row in zip(ids, emb):
      if i in self._pos:
        self._emb[self._pos[i]] = row
      else:
        self._pos[i] = len(self._ids)
        self._ids.append(i)
        new_rows.append(row)
    if new_rows:
      self._emb = np.concatenate([self._emb, np.stack(new_rows)], 0)

  def delete(self, ids):
    drop = {str(i) for i in ids}
    unknown = drop - set(self._pos)
    if unknown:
      raise KeyError(f"cannot delete ids not in the index: {sorted(unknown)[:5]}")
    keep = [j for j, i in enumerate(self._ids) if i not in drop]
    self._ids = [self._ids[j] for j in keep]
    self._emb = self._emb[keep]
    self._pos = {i: j for j, i in enumerate(self._ids)}

  def search(self, query_QxE, k):
    q = np.asarray(query_QxE, np.float32)
    return _top_k(q @ self._emb.T if len(self._ids) else np.zeros((q.shape[0], 0)), self._ids, k)

  # Subclasses with another embedding storage override these three.
  EMBEDDINGS_FILE = "embeddings.npy"

  @staticmethod
  def _write_embeddings(path, emb):
    np.save(path, emb)

  @staticmethod
  def _read_embeddings(path):
    return np.load(path, allow_pickle=False)

  def save(self, directory):
    os.makedirs(directory, exist_ok=True)
    self._write_embeddings(os.path.join(directory, self.EMBEDDINGS_FILE), self._emb)
    _write_meta(directory, {"kind": self.kind, "ids": self._ids})

  @classmethod
  def load(cls, directory):
    meta = _read_meta(directory)
    return cls(meta["ids"], cls._read_embeddings(os.path.join(directory, cls.EMBEDDINGS_FILE)))


class ScannRetriever:
  """ScaNN searcher with docids (mutable: upsert/delete without retraining)."""

  kind = "scann"

  def __init__(
    self,
    ids: Sequence[str],
    embeddings_NxE,
    *,
    brute_force_max: int = 20_000,
    reorder: int = 100,
    search_fraction: float = 0.1,
  ):
    ids, emb = _check(ids, embeddings_NxE)
    if not ids:
      raise ValueError("ScannRetriever needs at least one reference to build an index")
    self.brute_force_max = brute_force_max
    self.mode = "brute_force" if len(ids) <= brute_force_max else "tree_ah"
    self._searcher = _build_scann(ids, emb, self.mode, reorder, search_fraction)
    self.dim = emb.shape[1]

  def __len__(self):
    return self._searcher.size()

  def insert(self, ids, embeddings_NxE):
    ids, emb = _check(ids, embeddings_NxE)
    self._searcher.upsert(ids, emb)

  def delete(self, ids):
    self._searcher.delete([str(i) for i in ids])

  def search(self, query_QxE, k):
    q = np.asarray(query_QxE, np.float32)
    out_ids = np.full((q.shape[0], k), None, object)
    scores = np.full((q.shape[0], k), -np.inf, np.float32)
    if len(self) == 0:
      return out_ids, scores
    got, dist = self._searcher.search_batched(q, final_num_neighbors=min(k, len(self)))
    for r, (row_ids, row_s) in enumerate(zip(got, dist)):
      out_ids[r, : len(row_ids)] = row_ids
      scores[r, : len(row_ids)] = row_s[: len(row_ids)]
    return out_ids, scores

  def save(self, directory):
    """ScaNN's own assets, but the docids as JSON: scann pickles them (scann_docids.pkl),
    which is deleted here and never read back."""
    sdir = os.path.join(directory, "scann")
    os.makedirs(sdir, exist_ok=True)
    self._searcher.serialize(sdir)
    pkl = os.path.join(sdir, "scann_docids.pkl")
    if os.path.exists(pkl):
      os.remove(pkl)
    with open(os.path.join(sdir, "docids.json"), "w") as f:
      json.dump(list(self._searcher.docids), f)
    _write_meta(directory, {"kind": self.kind, "mode": self.mode, "dim": self.dim})

  @classmethod
  def load(cls, directory):
    from scann.scann_ops.py import scann_ops_pybind

    meta = _read_meta(directory)
    sdir = os.path.join(directory, "scann")
    with open(os.path.join(sdir, "docids.json")) as f:
      docids = [str(i) for i in json.load(f)]
    with open(os.path.join(sdir, "scann_assets.pbtxt")) as f:
      assets = f.read()
    out = cls.__new__(cls)
    out.mode, out.dim = meta["mode"], meta["dim"]
    out._searcher = scann_ops_pybind.ScannSearcher(
      scann_ops_pybind.scann_pybind.ScannNumpy(sdir, assets), docids
    )
    return out


def _build_scann(ids, emb, mode, reorder, search_fraction):
  """Tree + AH: sqrt(n) k-means leaves, ``search_fraction`` of them searched per query,
  anisotropic hashing (2 dims per 4-bit code) to score, exact re-scoring of ``reorder``."""
  from scann.scann_ops.py import scann_ops_pybind

  n, dim = emb.shape
  builder = scann_ops_pybind.builder(emb, min(10, n), "dot_product")
  if mode == "brute_force":
    builder = builder.score_brute_force()
  else:
    leaves = max(2, int(math.sqrt(n)))
    builder = builder.tree(
      num_leaves=leaves,
      num_leaves_to_search=max(1, int(round(leaves * search_fraction))),
      training_sample_size=min(n, 100_000),
    )
    builder = builder.score_ah(2, anisotropic_quantization_threshold=0.2)
    builder = builder.reorder(reorder)
  return builder.build(docids=list(ids))


def scann_available() -> bool:
  try:
    import scann  # noqa: F401
  except ImportError:
    return False
  return True


class SparseRetriever(_ExactIndex):
  """Exact cosine over sparse (CSR) embeddings, e.g. unprojected TF-IDF, by an inverted index.

  Knowledge lookups hinge on rare exact tokens (an entity's name) that a dense projection
  blurs (docs/data.md: 100% vs 90% top-1 on held-out questions). The index keeps the
  postings (a CSR matrix [vocabulary, references]): a query touches only the references
  that share one of its terms, and its cost grows with their postings, not with the bank.
  Ties are broken by insertion order (the first inserted wins), as in :func:`exact_top_k`.
  Inserts go to a small tail scored directly and merged into the postings past 4096 rows;
  deletes are tombstones: both O(batch).
  """

  kind = "sparse"
  MERGE_ROWS = 4096

  def _clear(self, dim: int) -> None:
    from scipy import sparse

    # self._pos: id -> live doc number (a deleted id's doc stays, tombstoned in _alive)
    self._alive = np.zeros((0,), bool)
    self._post_VxN = sparse.csr_matrix((dim, 0), dtype=np.float32)
    self._tail: list = []  # CSR [n, V] rows not yet in the postings
    self._tail_start = 0

  def __len__(self):
    return len(self._pos)

  @property
  def ids(self) -> list[str]:
    return [i for j, i in enumerate(self._ids) if self._alive[j]]

  def insert(self, ids, embeddings_NxE):
    """Upsert: a known id is tombstoned and its new vector appended."""
    from scipy import sparse

    emb = sparse.csr_matrix(embeddings_NxE, dtype=np.float32)
    ids = [str(i) for i in ids]
    if emb.shape[0] != len(ids):
      raise ValueError(f"{len(ids)} ids need embeddings [{len(ids)}, dim], got {emb.shape}")
    if len(set(ids)) != len(ids):
      raise ValueError("insert got repeated ids; nothing was inserted")
    if self._post_VxN.shape[0] == 0 and not self._ids:
      self._post_VxN = sparse.csr_matrix((emb.shape[1], 0), dtype=np.float32)
    if emb.shape[1] != self._post_VxN.shape[0]:
      raise ValueError(f"embeddings have width {emb.shape[1]}, the index {self._post_VxN.shape[0]}")
    known = [i for i in ids if i in self._pos]
    if known:
      self.delete(known)
    for i in ids:
      self._pos[i] = len(self._ids)
      self._ids.append(i)
    self._alive = np.concatenate([self._alive, np.ones(len(ids), bool)])
    self._tail.append(emb)
    if sum(t.shape[0] for t in self._tail) >= self.MERGE_ROWS:
      self._merge()

  def _merge(self):
    from scipy import sparse

    if not self._tail:
      return
    tail = sparse.vstack(self._tail, format="csr")
    self._post_VxN = sparse.hstack([self._post_VxN, tail.T.tocsr()], format="csr")
    self._tail, self._tail_start = [], self._post_VxN.shape[1]

  def delete(self, ids):
    ids = [str(i) for i in ids]
    unknown = [i for i in ids if i not in self._pos]
    if unknown or len(set(ids)) != len(ids):
      raise KeyError(
        f"cannot delete ids not in the index (or repeated): {unknown[:5]}; nothing was deleted"
      )
    for i in ids:
      self._alive[self._pos.pop(i)] = False

  def search(self, query_QxE, k):
    from scipy import sparse

    q = sparse.csr_matrix(query_QxE, dtype=np.float32)
    ids = np.full((q.shape[0], k), None, object)
    scores = np.full((q.shape[0], k), -np.inf, np.float32)
    n_post = self._post_VxN.shape[1]
    hits = (q @ self._post_VxN).tocsr() if n_post else None  # only docs sharing a term
    tail = sparse.vstack(self._tail, format="csr") if self._tail else None
    tail_s = np.asarray((q @ tail.T).toarray(), np.float32) if tail is not None else None
    for r in range(q.shape[0]):
      docs = np.zeros((0,), np.int64)
      vals = np.zeros((0,), np.float32)
      if hits is not None:
        lo, hi = hits.indptr[r], hits.indptr[r + 1]
        docs, vals = hits.indices[lo:hi].astype(np.int64), hits.data[lo:hi]
      if tail_s is not None:
        docs = np.concatenate([docs, self._tail_start + np.arange(tail_s.shape[1])])
        vals = np.concatenate([vals, tail_s[r]])
      keep = self._alive[docs] & (vals > 0)
      docs, vals = docs[keep], vals[keep]
      if len(docs) < k:  # fewer matches than k: pad with live zero-score docs, in order
        extra = np.flatnonzero(self._alive)
        extra = extra[~np.isin(extra, docs)][: k - len(docs)]
        docs = np.concatenate([docs, extra])
        vals = np.concatenate([vals, np.zeros(len(extra), np.float32)])
      order = np.lexsort((docs, -vals))[:k]
      ids[r, : len(order)] = [self._ids[d] for d in docs[order]]
      scores[r, : len(order)] = vals[order]
    return ids, scores

  def save(self, directory):
    from scipy import sparse

    self._merge()
    os.makedirs(directory, exist_ok=True)
    sparse.save_npz(os.path.join(directory, "postings.npz"), self._post_VxN)
    np.save(os.path.join(directory, "alive.npy"), self._alive)
    _write_meta(directory, {"kind": self.kind, "ids": self._ids})

  @classmethod
  def load(cls, directory):
    from scipy import sparse

    meta = _read_meta(directory)
    out = cls()
    out._post_VxN = sparse.load_npz(os.path.join(directory, "postings.npz")).tocsr()
    out._alive = np.load(os.path.join(directory, "alive.npy"), allow_pickle=False)
    out._ids = [str(i) for i in meta["ids"]]
    out._pos = {i: j for j, i in enumerate(out._ids) if out._alive[j]}
    out._tail_start = out._post_VxN.shape[1]
    return out


def make_retriever(kind: str, ids: Sequence[str], embeddings_NxE, **kwargs) -> Retriever:
  """kind: "scann" | "numpy" | "sparse" | "auto" (scann when importable, else numpy)."""
  if kind == "sparse":
    return SparseRetriever(ids, embeddings_NxE)
  if kind == "auto":
    kind = "scann" if scann_available() else "numpy"
  if kind == "scann":
    return ScannRetriever(ids, embeddings_NxE, **kwargs)
  if kind == "numpy":
    return NumpyRetriever(ids, embeddings_NxE)
  raise ValueError(f"unknown retriever kind {kind!r}; choose scann, numpy or auto")


def load_retriever(directory: str) -> Retriever:
  if not os.path.exists(os.path.join(directory, _META_FILE)):
    raise ValueError(f"{directory} holds no saved retriever (no {_META_FILE})")
  kind = _read_meta(directory)["kind"]
  if kind == "scann" and not scann_available():
    raise ValueError(
      f"{directory} holds a ScaNN index but scann is not installed; "
      "pip install scann, or rebuild the index with kind='numpy'"
    )
  return {"scann": ScannRetriever, "numpy": NumpyRetriever, "sparse": SparseRetriever}[kind].load(
    directory
  )
