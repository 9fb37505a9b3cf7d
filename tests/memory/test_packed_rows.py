"""Bank format 3 (one packed record per row, the id run as [C, FENCE, 2] pairs) reads
exactly what format 2 (one array per field) reads, through appends, deletions,
re-insertions, run merges and hash collisions; format-2 banks still open and append."""

import numpy as np
import pytest

from m3jax.memory import rowindex, rowrecord
from m3jax.memory.bankfiles import read_manifest
from m3jax.memory.layout import BankLayout
from m3jax.memory.store import MemoryBank

LAYOUT = BankLayout(num_layers=2, kv_heads=2, tokens=4, head_dim=16)
PQ = BankLayout(num_layers=2, kv_heads=2, tokens=4, head_dim=16, pq_subspaces=4)


def batch(n, seed, layout=LAYOUT):
  rng = np.random.default_rng(seed)
  shape = (n,) + layout.row_shape[:-1] + (layout.head_dim,)
  return (
    rng.normal(size=shape).astype(np.float32),
    rng.normal(size=shape).astype(np.float32),
    rng.random((n, layout.tokens)) < 0.7,
    rng.integers(0, 1 << 20, shape[:-1]).astype(np.int32),
  )


def edit_both(banks, rng):
  """The same random appends, deletions and re-insertions on every bank -> live ids."""
  live = []
  for step in range(6):
    n = int(rng.integers(1, 700))
    ids = [f"s{step}-{j}" for j in range(n)]
    for b in banks:
      b.append(ids, *batch(n, step), texts=[f"t{i}" for i in ids])
    live += ids
    gone = [live[j] for j in rng.choice(len(live), len(live) // 5, replace=False)]
    for b in banks:
      b.delete(gone)
    live = [i for i in live if i not in set(gone)]
    back = gone[: len(gone) // 2]  # re-inserted with other memories
    for b in banks:
      b.append(back, *batch(len(back), 100 + step))
    live += back
    if step == 2:  # merge the tail into the sorted run midway: later edits hit both
      for b in banks:
        b.finalize()
  return live


@pytest.mark.parametrize("sharded", [False, True])
def test_packed_read_equals_per_array_read(tmp_path, sharded):
  kw = dict(chunk_refs=16, sharded=sharded, shard_refs=32, cache_size=0)
  packed = MemoryBank.create(str(tmp_path / "p"), LAYOUT, **kw)
  split = MemoryBank.create(str(tmp_path / "s"), LAYOUT, packed_rows=False, **kw)
  rng = np.random.default_rng(0)
  live = edit_both([packed, split], rng)
  packed.finalize()
  split.finalize()
  assert read_manifest(str(tmp_path / "p"))["spec_version"] == 3
  assert read_manifest(str(tmp_path / "s"))["spec_version"] == 2
  for _ in range(3):
    pick = [live[j] for j in rng.choice(len(live), 160)]  # repeats allowed
    a = MemoryBank.open(str(tmp_path / "p"), cache_size=0).read(pick)
    b = MemoryBank.open(str(tmp_path / "s"), cache_size=0).read(pick)
    for f in ("keys", "values", "mask", "token_idx"):
      np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
  reopened = MemoryBank.open(str(tmp_path / "p"))
  assert reopened.ids == split.ids
  assert sorted(reopened.ids) == sorted(live)
  np.testing.assert_array_equal(reopened.rows_of(live), split.rows_of(live))
  assert reopened.texts(live[:50]) == split.texts(live[:50])
  for f, arr in reopened.read_arrays().items():
    np.testing.assert_array_equal(arr, split.read_arrays()[f], err_msg=f)
  with pytest.raises(KeyError, match="not in memory bank"):
    reopened.read([live[0], "never-stored"])
  reopened.verify()


def test_hash_collision_resolved_by_the_record_id(tmp_path, monkeypatch):
  monkeypatch.setattr(
    rowindex, "hash_ids", lambda ids: np.full(len(ids), 7, np.uint64)
  )  # every id collides
  bank = MemoryBank.create(str(tmp_path / "b"), LAYOUT, cache_size=0)
  k, v, m, t = batch(5, 0)
  bank.append(["a", "b", "c", "d", "e"], k, v, m, t)
  bank.finalize()  # the colliding ids in the sorted run
  bank.append(["f"], *batch(1, 1))  # and in the tail
  got = MemoryBank.open(str(tmp_path / "b"), cache_size=0).read(["d", "a", "f"])
  np.testing.assert_array_equal(got.token_idx[:2], t[[3, 0]])
  np.testing.assert_array_equal(got.token_idx[2], batch(1, 1)[3][0])
  with pytest.raises(KeyError):
    bank.read(["z"])


def test_pq_records_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  cb = rng.normal(size=(2, 2, 4, 256, 4)).astype(np.float32)
  bank = MemoryBank.create(str(tmp_path / "b"), PQ, codebooks=cb, cache_size=0)
  k, v, m, t = batch(9, 0, PQ)
  bank.append([f"r{i}" for i in range(9)], k, v, m, t)
  want_k, want_v = bank.quantize_rows(k, v)
  got = MemoryBank.open(str(tmp_path / "b")).read(["r4", "r0"])
  assert got.keys.dtype == np.uint8
  np.testing.assert_array_equal(got.keys, want_k[[4, 0]])
  np.testing.assert_array_equal(got.values, want_v[[4, 0]])
  np.testing.assert_array_equal(got.mask, m[[4, 0]])


def test_record_pack_unpack_round_trip():
  import ml_dtypes

  rec = rowrecord.RecordLayout.of((2, 2, 4, 16), ml_dtypes.bfloat16, 4, 64)
  k, v, m, t = batch(3, 0)
  fields = {
    "keys": k.astype(ml_dtypes.bfloat16),
    "values": v.astype(ml_dtypes.bfloat16),
    "mask": m,
    "token_idx": t,
    "ids": np.arange(3 * 64, dtype=np.uint8).reshape(3, 64),
  }
  packed = rowrecord.pack(fields, rec)
  assert packed.shape == (3, rec.record_bytes) and packed.dtype == np.uint8
  for name, arr in rowrecord.unpack(packed, rec).items():
    np.testing.assert_array_equal(arr, fields[name], err_msg=name)


def test_lookup_over_padded_run_chunks_returns_only_real_rows():
  # A run of 2.5 chunks; its last chunk is padded (hash PAD, row -1). The lookup reads
  # the chunks padding included (no filtering copy) and must never return a padding row.
  rng = np.random.default_rng(0)
  n = 2 * rowindex.FENCE + rowindex.FENCE // 2
  h = np.sort(rng.integers(0, 2**63, n, dtype=np.uint64))
  rows = rng.permutation(n).astype(np.int64)
  pairs = rowindex.to_pairs(h, rows)
  index = rowindex.RowIndex(
    lambda c: rowindex.pairs_view(pairs[c]), h[:: rowindex.FENCE], n, np.zeros(0, np.uint64), n
  )
  probe = np.concatenate([h[[0, 5, n - 1]], [rowindex.PAD, np.uint64(12345)]])
  assert index.candidates(probe) == [[rows[0]], [rows[5]], [rows[n - 1]], [], []]
  back_h, back_r = rowindex.from_pairs(pairs)
  np.testing.assert_array_equal(back_h, h)
  np.testing.assert_array_equal(back_r, rows)


def _no_record_reads(bank, monkeypatch):
  def boom(*_, **__):
    raise AssertionError("an id lookup read whole records")

  monkeypatch.setattr(bank, "_read_records", boom)


def test_id_lookups_read_the_id_array_not_the_records(tmp_path, monkeypatch):
  """contains / rows_of / delete read 64 B of id per candidate row, not its record."""
  bank = MemoryBank.create(str(tmp_path / "b"), LAYOUT)
  ids = [f"r{i}" for i in range(50)]
  bank.append(ids, *batch(50, 0))
  bank.finalize()
  bank = MemoryBank.open(str(tmp_path / "b"))  # cold: nothing memoized
  _no_record_reads(bank, monkeypatch)
  assert bank.contains(["r3", "nope", "r49"]).tolist() == [True, False, True]
  bank.delete(["r3"])
  assert bank.rows_of(["r3", "r4"]).tolist() == [-1, 4]
  assert bank.ids == [i for i in ids if i != "r3"]


def test_a_format3_bank_without_the_id_array_reads_ids_from_its_records(tmp_path):
  """Banks written before the id array: every lookup still answers, from the records."""
  from m3jax.memory import bankfiles

  url = str(tmp_path / "old")
  bank = MemoryBank.create(url, LAYOUT)
  bank.append(["a", "b"], *batch(2, 0))
  bank.finalize()
  manifest = read_manifest(url)
  del manifest["id_array"]
  bankfiles.write_manifest(bank._spec, bank._kv, manifest)
  old = MemoryBank.open(url)
  assert old.row_array_names == ("rows",)
  assert old.contains(["a", "c"]).tolist() == [True, False]
  old.append(["c"], *batch(1, 1))  # appends keep the old layout (no id array written)
  assert old.ids == ["a", "b", "c"]
  np.testing.assert_array_equal(old.read(["c"]).keys, MemoryBank.open(url).read(["c"]).keys)
