"""Retrievers: exact numpy search vs a naive argsort, ScaNN vs exact, insert/delete, save/load."""

import numpy as np
import pytest

from m3jax.memory.retriever import (
  NumpyRetriever,
  ScannRetriever,
  load_retriever,
  make_retriever,
  scann_available,
)

needs_scann = pytest.mark.skipif(not scann_available(), reason="scann not installed")


def unit(rng, n, d):
  x = rng.normal(size=(n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_numpy_search_is_exact():
  rng = np.random.default_rng(0)
  emb, q = unit(rng, 300, 16), unit(rng, 7, 16)
  ids = [f"r{i}" for i in range(300)]
  got, scores = NumpyRetriever(ids, emb).search(q, 5)
  want = np.argsort(-(q @ emb.T), axis=1)[:, :5]
  assert (got == np.asarray(ids, object)[want]).all()
  np.testing.assert_allclose(scores, np.take_along_axis(q @ emb.T, want, 1), rtol=1e-6)
  few, s = NumpyRetriever(ids[:2], emb[:2]).search(q, 4)  # k > n: None/-inf padded
  assert (few[:, 2:] == None).all() and np.isneginf(s[:, 2:]).all()  # noqa: E711


@pytest.mark.parametrize("kind", ["numpy", pytest.param("scann", marks=needs_scann)])
def test_insert_then_delete(kind, tmp_path):
  rng = np.random.default_rng(1)
  emb = unit(rng, 50, 16)
  r = make_retriever(kind, [f"r{i}" for i in range(50)], emb)
  new = unit(rng, 1, 16)
  r.insert(["new"], new)
  assert r.search(new, 1)[0][0, 0] == "new" and len(r) == 51
  r.delete(["new", "r3"])
  got, _ = r.search(np.concatenate([new, emb[3:4]]), 10)
  assert "new" not in got and "r3" not in got and len(r) == 49
  r.save(str(tmp_path / "idx"))
  back = load_retriever(str(tmp_path / "idx"))
  np.testing.assert_array_equal(back.search(emb[:4], 3)[0], r.search(emb[:4], 3)[0])


@needs_scann
def test_scann_brute_force_equals_exact_and_tree_ah_recalls():
  # Clustered embeddings (as real text embeddings are): 60 topics, queries near topics.
  rng = np.random.default_rng(2)
  centers = unit(rng, 60, 32)
  emb = centers[rng.integers(0, 60, 6000)] + 0.3 * unit(rng, 6000, 32)
  emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  q = centers[rng.integers(0, 60, 50)] + 0.3 * unit(rng, 50, 32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  ids = [str(i) for i in range(6000)]
  exact, _ = NumpyRetriever(ids, emb).search(q, 5)
  small = ScannRetriever(ids[:3000], emb[:3000])
  assert small.mode == "brute_force"
  np.testing.assert_array_equal(
    small.search(q, 5)[0], NumpyRetriever(ids[:3000], emb[:3000]).search(q, 5)[0]
  )
  big = ScannRetriever(ids, emb, brute_force_max=1000)
  assert big.mode == "tree_ah"
  got, _ = big.search(q, 5)
  recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(got, exact)])
  assert recall >= 0.9  # 10% of leaves searched, then exact reorder


def test_sparse_tfidf_retriever_finds_exact_names_and_round_trips(tmp_path):
  from m3jax.memory.embedders import make_embedder
  from m3jax.memory.retriever import SparseRetriever, load_retriever

  texts = [f"Entity{i} | occupation = job{i % 7} | born = {1700 + i}" for i in range(300)]
  emb = make_embedder("sparse_tfidf").fit(texts)
  ids = [f"e{i}" for i in range(300)]
  ret = SparseRetriever(ids, emb.embed_sparse(texts))
  got, scores = ret.search(
    emb.embed_sparse([f"What is the occupation of Entity{i}?" for i in range(0, 300, 7)]), 3
  )
  assert [g[0] for g in got] == [f"e{i}" for i in range(0, 300, 7)]
  assert np.all(np.diff(scores, axis=1) <= 0)
  # Dense queries give the same answer; delete removes, insert restores.
  dense_got, _ = ret.search(emb.embed(["Entity5 occupation"]), 1)
  assert dense_got[0, 0] == "e5"
  ret.delete(["e5"])
  assert "e5" not in set(ret.search(emb.embed_sparse(["Entity5 occupation"]), 5)[0][0])
  ret.insert(["e5"], emb.embed_sparse([texts[5]]))
  ret.save(str(tmp_path))
  again = load_retriever(str(tmp_path))
  assert again.search(emb.embed_sparse(["Entity5 occupation"]), 1)[0][0, 0] == "e5"
  assert len(again) == 300
