"""Issue #12: integrity (checksums, fingerprints), durable atomic edits, no pickle,
inverted-index retrieval, id lookup at scale, and splitting of long references."""

import json
import os
import pickle

import numpy as np
import pytest
from scipy import sparse

from m3jax.memory.build import BankConfig, build_bank, load_index
from m3jax.memory.fingerprint import params_fingerprint, tokenizer_fingerprint
from m3jax.memory.retriever import SparseRetriever
from m3jax.memory.layout import BankLayout
from m3jax.memory.damage import BankCorruptError
from m3jax.memory.store import MemoryBank
from tests.memory.helpers import WordTokenizer

LAYOUT = BankLayout(num_layers=2, kv_heads=2, tokens=4, head_dim=16)
SPARSE = BankConfig(encode_batch_size=8, embedder="sparse_tfidf")


def rows(n, seed=0):
  rng = np.random.default_rng(seed)
  shape = (n, 2, 2, 4, 16)
  return (
    rng.normal(size=shape).astype(np.float32),
    rng.normal(size=shape).astype(np.float32),
    np.ones((n, 4), bool),
    rng.integers(0, 32, shape[:-1]).astype(np.int32),
  )


def _chunk_files(url, array):
  root = os.path.join(url, array, "c")
  return sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)


# ------------------------------------------------------------------ integrity
@pytest.mark.parametrize("array", ["rows", "keys"])  # format 3 (packed), format 2
@pytest.mark.parametrize("sharded", [False, True])
@pytest.mark.parametrize("damage", ["flip", "truncate", "missing"])
def test_damaged_chunk_is_a_clear_error_naming_array_and_row(tmp_path, sharded, damage, array):
  url = str(tmp_path / "b")
  packed = array == "rows"
  bank = MemoryBank.create(
    url, LAYOUT, chunk_refs=2, sharded=sharded, shard_refs=4, packed_rows=packed
  )
  bank.append([f"r{i}" for i in range(8)], *rows(8))
  files = _chunk_files(url, array)
  victim = files[1]  # rows 2-3 (chunks of 2) or rows 4-7 (shards of 4)
  data = bytearray(open(victim, "rb").read())
  if damage == "flip":
    data[10] ^= 0x40  # inside the first row of the chunk / shard
    open(victim, "wb").write(bytes(data))
  elif damage == "truncate":
    open(victim, "wb").write(bytes(data[: len(data) // 2]))
  else:
    os.remove(victim)
  fresh = MemoryBank.open(url, cache_size=0)
  first = 4 if sharded else 2
  np.testing.assert_array_equal(fresh.read(["r0"]).mask, np.ones((1, 4), bool))  # others fine
  with pytest.raises(BankCorruptError, match=rf"array '{array}' rows {first}\b.*rebuild"):
    fresh.read(["r0", f"r{first}"])
  with pytest.raises(BankCorruptError, match=f"'{array}'"):
    fresh.verify()


def test_bank_from_another_checkpoint_or_tokenizer_is_refused(tmp_path, tiny_cfg):
  url = str(tmp_path / "b")
  p_a = {"layer": {"w": np.arange(6, dtype=np.float32)}}
  p_b = {"layer": {"w": np.arange(6, dtype=np.float32) * 2}}  # same shapes, same "step"
  tok_a, tok_b = WordTokenizer(offset=8), WordTokenizer(offset=9)
  MemoryBank.create(
    url,
    BankLayout.from_model(tiny_cfg),
    model_cfg=tiny_cfg,
    checkpoint_step=12,
    params_fingerprint=params_fingerprint(p_a),
    tokenizer_fingerprint=tokenizer_fingerprint(tok_a),
  )
  ok = dict(model_cfg=tiny_cfg, checkpoint_step=12)
  MemoryBank.open(
    url,
    params_fingerprint=params_fingerprint(p_a),
    tokenizer_fingerprint=tokenizer_fingerprint(tok_a),
    **ok,
  )
  with pytest.raises(ValueError, match=r"checkpoint weights.*--allow-stale-bank"):
    MemoryBank.open(url, params_fingerprint=params_fingerprint(p_b), **ok)
  with pytest.raises(ValueError, match=r"tokenizer.*--allow-stale-bank"):
    MemoryBank.open(
      url,
      params_fingerprint=params_fingerprint(p_a),
      tokenizer_fingerprint=tokenizer_fingerprint(tok_b),
      **ok,
    )
  MemoryBank.open(
    url,
    params_fingerprint=params_fingerprint(p_b),
    tokenizer_fingerprint=tokenizer_fingerprint(tok_b),
    allow_stale=True,
    **ok,
  )


def test_build_memory_refuses_a_non_empty_folder(tmp_path, tiny_cfg, tiny_params):
  folder = tmp_path / "precious"
  for sub in ("keys", "values"):
    (folder / sub).mkdir(parents=True)
    (folder / sub / "data.txt").write_text("keep me")
  with pytest.raises(ValueError, match="non-empty folder"):
    MemoryBank.create(str(folder), LAYOUT)
  refs = [type("R", (), {"id": "a", "text": "x", "tokens": (9, 10)})()]
  with pytest.raises(ValueError, match="non-empty folder"):
    build_bank(tiny_params, tiny_cfg, refs, str(folder), bank_cfg=SPARSE, progress=False)
  assert (folder / "keys" / "data.txt").read_text() == "keep me"


# ------------------------------------------------------------------ ids at scale
def test_id_lookup_through_sorted_run_tail_and_reinsert(tmp_path):
  bank = MemoryBank.create(str(tmp_path / "b"), LAYOUT, chunk_refs=512)
  want = {}
  k, v, m, t = rows(1, 1)
  rep = lambda n: (np.repeat(k, n, 0), np.repeat(v, n, 0), np.repeat(m, n, 0), np.repeat(t, n, 0))
  for s in range(0, 9000, 1500):  # crosses the 4096-row merge of the sorted run
    ids = [f"doc{i}#0" for i in range(s, s + 1500)]
    bank.append(ids, *rep(1500), texts=[f"text of {i}" for i in ids])
    want.update({i: s + j for j, i in enumerate(ids)})
  bank.delete(["doc5#0", "doc8000#0"])
  bank.append(["doc5#0"], *rep(1), texts=["new five"])
  want["doc5#0"], _ = 9000, want.pop("doc8000#0")
  assert bank.manifest["sorted_count"] > 0
  for b in (bank, MemoryBank.open(str(tmp_path / "b"))):
    probe = ["doc0#0", "doc5#0", "doc8000#0", "doc8999#0", "nope", "doc4500#0"]
    assert b.rows_of(probe).tolist() == [want.get(i, -1) for i in probe]
    assert len(b) == len(want)
    assert b.texts(["doc5#0", "doc7#0"]) == ["new five", "text of doc7#0"]


# ------------------------------------------------------------------ inverted index
def _exact_top_k(q, emb, ids, alive, k):
  s = np.asarray((q @ emb.T).toarray())
  out = []
  for row in s:
    live = np.flatnonzero(alive)
    order = np.lexsort((live, -row[live]))[:k]
    out.append(([ids[j] for j in live[order]], row[live[order]]))
  return out


def test_inverted_index_top_k_equals_exact_top_k():
  n, vocab, k = 600, 300, 7
  emb = sparse.random(n, vocab, density=0.03, random_state=1, format="csr", dtype=np.float32)
  emb = sparse.csr_matrix(emb.multiply(1 / np.maximum(np.sqrt(emb.multiply(emb).sum(1)), 1e-9)))
  ids = [f"r{i}" for i in range(n)]
  ret = SparseRetriever(ids[:500], emb[:500])  # 500 rows in the tail (< MERGE_ROWS)
  ret.MERGE_ROWS = 64
  ret.insert(ids[500:560], emb[500:560])  # tail merged into the postings
  ret.insert(ids[560:], emb[560:])  # a fresh tail, scored directly
  q = sparse.random(20, vocab, density=0.05, random_state=2, format="csr", dtype=np.float32)
  q = sparse.vstack([q, sparse.csr_matrix((1, vocab), dtype=np.float32)])  # no term matches
  top = np.asarray((q[:3] @ emb.T).toarray()).argmax(1)  # delete hits that would rank first
  gone = sorted({f"r{j}" for j in top} | {"r510"})
  ret.delete(gone)
  alive = np.array([i not in gone for i in ids])
  got_ids, got_s = ret.search(q, k)
  for r, (want_ids, want_s) in enumerate(_exact_top_k(q, emb, ids, alive, k)):
    np.testing.assert_allclose(got_s[r], want_s, rtol=1e-5, atol=1e-6)
    gaps = np.diff(want_s) < -1e-5  # ids must agree where scores differ
    sure = np.concatenate([[True], gaps]) & np.concatenate([gaps, [True]])
    assert [g for g, s in zip(got_ids[r], sure) if s] == [w for w, s in zip(want_ids, sure) if s]


def test_inverted_index_save_load_round_trip(tmp_path):
  emb = sparse.random(50, 40, density=0.2, random_state=3, format="csr", dtype=np.float32)
  ret = SparseRetriever([f"r{i}" for i in range(50)], emb)
  ret.delete(["r7"])
  ret.save(str(tmp_path))
  again = SparseRetriever.load(str(tmp_path))
  q = emb[:10]
  assert (ret.search(q, 5)[0] == again.search(q, 5)[0]).all() and len(again) == 49


# ------------------------------------------------------------------ no pickle
class _Evil:
  def __reduce__(self):
    return (os.mkdir, (os.environ["M3JAX_PWNED"],))


def test_crafted_embedder_pickle_is_never_loaded(tmp_path, monkeypatch):
  from m3jax.memory.embedders import SparseTfidfEmbedder, TfidfEmbedder

  marker = str(tmp_path / "pwned")
  monkeypatch.setenv("M3JAX_PWNED", marker)
  index = tmp_path / "index"
  (index / "g1").mkdir(parents=True)
  for name in ("embedder.pkl", "g1/embedder.npz", "g1/embedder.pkl"):
    with open(index / name, "wb") as f:
      pickle.dump(_Evil(), f)
  with pytest.raises(ValueError, match="no retrieval index"):  # legacy layout
    load_index(str(index))
  (index / "index.json").write_text(
    json.dumps({"embedder": "tfidf", "embedder_file": "embedder.npz", "generation": 1})
  )
  with pytest.raises(ValueError, match="never pickles"):
    load_index(str(index))
  for cls in (TfidfEmbedder, SparseTfidfEmbedder):
    with pytest.raises(ValueError, match="never pickles"):
      cls.load(str(index / "g1" / "embedder.pkl"))
  assert not os.path.exists(marker)


@pytest.mark.parametrize("name", ["tfidf", "sparse_tfidf"])
def test_embedders_round_trip_through_npz(tmp_path, name):
  from m3jax.memory.embedders import make_embedder

  texts = [f"land{i} has town{i} and river{i % 3} in year {1900 + i}" for i in range(40)]
  emb = make_embedder(name, **({"dim": 8} if name == "tfidf" else {})).fit(texts)
  emb.save(str(tmp_path / "e.npz"))
  again = type(emb).load(str(tmp_path / "e.npz"))
  np.testing.assert_allclose(
    again.embed(texts[:5] + ["unknown words"]), emb.embed(texts[:5] + ["unknown words"]), atol=1e-6
  )
  with open(tmp_path / "e.npz", "rb") as f:
    assert f.read(2) == b"PK"  # a zip of .npy arrays, not a pickle
