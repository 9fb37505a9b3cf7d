"""MemoryBank on real TensorStore: round trips, LRU, tombstones, stale/corrupt refusal."""

import dataclasses
import json
import os

import ml_dtypes
import numpy as np
import pytest

from m3jax.memory import quantize
from m3jax.memory.lru import LRUCache
from m3jax.memory.bankfiles import read_manifest
from m3jax.memory.layout import BankLayout
from m3jax.memory.store import MemoryBank

LAYOUT = BankLayout(num_layers=2, kv_heads=2, tokens=4, head_dim=16)


def rows(n, seed=0, layout=LAYOUT):
  rng = np.random.default_rng(seed)
  shape = (n, layout.num_layers, layout.kv_heads, layout.tokens, layout.head_dim)
  mask = np.ones((n, layout.tokens), bool)
  mask[0, -1] = False
  return (
    rng.normal(size=shape).astype(np.float32),
    rng.normal(size=shape).astype(np.float32),
    mask,
    rng.integers(0, 32, shape[:-1]).astype(np.int32),
  )


@pytest.fixture(params=["file", "memory", "sharded"])
def bank_url(request, tmp_path):
  if request.param == "memory":
    return "memory://bank", {}
  return str(tmp_path / "bank"), {"sharded": request.param == "sharded", "shard_refs": 4}


def test_append_read_round_trip(bank_url, tiny_cfg):
  url, kw = bank_url
  bank = MemoryBank.create(url, LAYOUT, model_cfg=tiny_cfg, checkpoint_step=7, chunk_refs=2, **kw)
  k, v, m, t = rows(5)
  bank.append([f"r{i}" for i in range(3)], k[:3], v[:3], m[:3], t[:3])
  bank.append(["r3", "r4"], k[3:], v[3:], m[3:], t[3:])
  assert not bank.complete and len(bank) == 5
  got = bank.read(["r4", "r0", "r4"])
  np.testing.assert_array_equal(got.keys, k[[4, 0, 4]].astype(ml_dtypes.bfloat16))
  np.testing.assert_array_equal(got.values, v[[4, 0, 4]].astype(ml_dtypes.bfloat16))
  np.testing.assert_array_equal(got.mask, m[[4, 0, 4]])
  np.testing.assert_array_equal(got.token_idx, t[[4, 0, 4]])
  bank.finalize()
  again = MemoryBank.open(
    url, model_cfg=tiny_cfg, checkpoint_step=7, require_complete=True, context=bank.context
  )
  assert again.ids == [f"r{i}" for i in range(5)] and again.complete
  np.testing.assert_array_equal(again.read(["r1"]).keys, k[[1]].astype(ml_dtypes.bfloat16))
  with pytest.raises(ValueError, match="already exists"):
    MemoryBank.create(url, LAYOUT, context=bank.context)


def test_lru_counts_hits_and_can_be_disabled(tmp_path):
  bank = MemoryBank.create(str(tmp_path / "b"), LAYOUT, cache_size=2)
  bank.append(["a", "b", "c"], *rows(3))
  bank.read(["a", "b"])
  bank.read(["a", "b"])
  assert (bank.cache.hits, bank.cache.misses) == (2, 2)
  bank.read(["c"])  # evicts the least recently used ("a")
  bank.read(["a"])
  assert bank.cache.stats()["hit_rate"] == pytest.approx(2 / 6)
  off = MemoryBank.open(str(tmp_path / "b"), cache_size=0)
  off.read(["a"]), off.read(["a"])
  assert off.cache.hits == 0 and len(off.cache) == 0
  with pytest.raises(ValueError):
    LRUCache(-1)


def test_insert_delete_tombstones(tmp_path):
  url = str(tmp_path / "b")
  bank = MemoryBank.create(url, LAYOUT)
  k, v, m, t = rows(3)
  bank.append(["a", "b"], k[:2], v[:2], m[:2], t[:2])
  bank.read(["a"])  # cached
  bank.delete(["a"])
  assert "a" not in bank and bank.ids == ["b"]
  with pytest.raises(KeyError, match="deleted"):
    bank.read(["a"])
  reopened = MemoryBank.open(url)
  assert reopened.ids == ["b"] and "a" not in reopened
  with pytest.raises(ValueError, match="already in the bank"):
    bank.insert(["b"], k[2:], v[2:], m[2:], t[2:])
  bank.insert(["a"], k[2:], v[2:], m[2:], t[2:])  # re-insert gets the new row
  np.testing.assert_array_equal(bank.read(["a"]).keys, k[2:].astype(ml_dtypes.bfloat16))
  assert MemoryBank.open(url).ids == ["b", "a"]


def test_cold_start_encodes_missing_once(tmp_path):
  bank = MemoryBank.create(str(tmp_path / "b"), LAYOUT)
  k, v, m, t = rows(3)
  table = {i: j for j, i in enumerate(["x", "y", "z"])}
  calls = []

  def encode_fn(ids):
    calls.append(list(ids))
    j = [table[i] for i in ids]
    return k[j], v[j], m[j], t[j]

  got = bank.get_or_encode(["y", "x", "y"], encode_fn)
  np.testing.assert_array_equal(got.keys, k[[1, 0, 1]].astype(ml_dtypes.bfloat16))
  bank.get_or_encode(["x", "z"], encode_fn)
  assert calls == [["y", "x"], ["z"]]
  assert MemoryBank.open(str(tmp_path / "b")).ids == ["y", "x", "z"]


def test_quantized_bank_stores_codes(tmp_path):
  lay = dataclasses.replace(LAYOUT, pq_subspaces=4)
  k, v, m, t = rows(6)
  vecs = np.stack([k.reshape(-1, 16), v.reshape(-1, 16)])[:, None]
  cb = quantize.train_codebooks(np.repeat(vecs, 2, 1), 4, iters=3)
  bank = MemoryBank.create(str(tmp_path / "b"), lay, codebooks=cb, pq_rel_mse=0.1)
  bank.append([str(i) for i in range(6)], k, v, m, t)
  got = MemoryBank.open(str(tmp_path / "b")).read(["2"])
  assert got.keys.dtype == np.uint8 and got.keys.shape == (1, 2, 2, 4, 4)
  kh, vh = bank.dequantize(got.keys, got.values)
  assert kh.shape == (1, 2, 2, 4, 16)
  assert quantize.relative_mse(k[2], np.asarray(kh[0])) < 1.0
  assert bank.manifest["quantization"]["bytes_per_vector"] == 4


def test_mismatched_bank_refused_unless_stale_allowed(tmp_path, tiny_cfg):
  url = str(tmp_path / "b")
  MemoryBank.create(url, BankLayout.from_model(tiny_cfg), model_cfg=tiny_cfg, checkpoint_step=3)
  with pytest.raises(ValueError, match=r"checkpoint step 3 .* step 9.*allow_stale=True"):
    MemoryBank.open(url, model_cfg=tiny_cfg, checkpoint_step=9)
  other = dataclasses.replace(
    tiny_cfg, memory=dataclasses.replace(tiny_cfg.memory, tokens_per_head=8)
  )
  with pytest.raises(ValueError, match=r"tokens=4.*tokens=8.*allow_stale=True"):
    MemoryBank.open(url, model_cfg=other)
  rope = dataclasses.replace(tiny_cfg, rope_base=500.0)
  with pytest.raises(ValueError, match="fingerprint"):
    MemoryBank.open(url, model_cfg=rope)
  MemoryBank.open(url, model_cfg=other, checkpoint_step=9, allow_stale=True)
  with pytest.raises(ValueError, match="incomplete"):
    MemoryBank.open(url, require_complete=True)


@pytest.mark.parametrize(
  "content,match",
  [
    (b"{not json", "corrupt"),
    (b'{"spec_version": 2}', "missing fields"),
    (b"\xff\xfe", "corrupt"),
  ],
)
def test_corrupt_manifest_is_a_clear_error(tmp_path, content, match):
  url = str(tmp_path / "b")
  MemoryBank.create(url, LAYOUT)
  with open(os.path.join(url, "manifest.json"), "wb") as f:
    f.write(content)
  with pytest.raises(ValueError, match=rf"{match}.*rebuild the bank with build-memory"):
    MemoryBank.open(url)  # each names the remedy
  with pytest.raises(ValueError, match="not a memory bank"):
    read_manifest(str(tmp_path / "nothing"))


def test_manifest_is_written_after_the_arrays(tmp_path):
  """Rows written but never committed (a crash before the manifest) stay invisible."""
  url = str(tmp_path / "b")
  bank = MemoryBank.create(url, LAYOUT)
  bank.append(["a"], *[x[:1] for x in rows(2)])
  committed = json.load(open(os.path.join(url, "manifest.json")))
  bank.append(["b"], *[x[1:] for x in rows(2)])
  with open(os.path.join(url, "manifest.json"), "w") as f:  # "crash": old manifest
    json.dump(committed, f)
  again = MemoryBank.open(url)
  assert again.ids == ["a"] and again.count == 1
  assert not os.path.exists(os.path.join(url, "manifest.json.tmp"))
