"""The explicit-memory bank: TensorStore zarr v3 arrays + a manifest written last.

Layout under one kvstore (local dir, ``memory://``, ``gs://`` … any TensorStore URL or
kvstore spec dict); every array carries a crc32c checksum per chunk:

  rows/             [N, B] uint8: per row one record keys | values | mask | token_idx |
                    id (``rowrecord``): keys, values [L_mem, K, M, D] bfloat16 or uint8
                    codes [L_mem, K, M, S] (PQ), mask [M] bool, token_idx [L_mem, K, M]
                    int32, id [64] uint8 (UTF-8, zero padded); a cold read of n memories
                    reads n chunks. Format-2 banks (still read and appended) keep these
                    as five arrays keys/, values/, mask/, token_idx/, ids/ instead.
  id_hash/          [N] uint64
  text_span/        [N, 2] int64 into text_bytes/ [T] uint8 (the reference texts)
  deleted/          [D] int64: the rows deleted, in order (tombstones, an edit log)
  rowindex/g<G>/    the sorted id-hash run of rows [0, S) (``rowindex``, ``idrun``)
  codebooks/        [2, L_mem, S, 256, W] float32 (PQ only; written before any row)
  manifest.json     spec version, layout, quantization, checkpoint step, fingerprints of
                    the model config, the weights and the tokenizer, committed counts
                    (rows, deletions, text bytes, sorted run), complete

Every edit writes the arrays first and the manifest last (local files: temp file +
rename), so data beyond the manifest's counts is garbage the next edit overwrites: a
crash never duplicates, skips or half-commits a reference or a deletion. Appends and
deletions cost O(batch). A missing, truncated or corrupt chunk of a committed row is an
error naming the array and the rows (zarr would otherwise read fill values).
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Sequence

import numpy as np
import tensorstore as ts

from m3jax.memory import bankfiles, idrun, quantize, rowindex, rowrecord
from m3jax.memory.damage import (
  REBUILD,
  BankCorruptError,
  locate_damage,
  read_checked,
  short,
  verify_rows,
)
from m3jax.memory.manifest import new_manifest, stale_problems
from m3jax.memory.layout import (
  ROW_ARRAYS,
  BankLayout,
  BankRows,
  decode_ids,
  encode_ids,
  record_layout,
)
from m3jax.memory.lru import LRUCache

STALE_FLAG = "--allow-stale-bank (allow_stale=True to MemoryBank.open)"


class MemoryBank:
  """Append-only explicit-memory store. Create with :meth:`create`, reopen with :meth:`open`."""

  def __init__(self, url, spec: dict, manifest: dict, context: ts.Context, cache_size: int):
    self.url = url
    self.context = context
    self.cache = LRUCache(cache_size)
    self._row_memo = LRUCache(max(4 * cache_size, 4096))  # id -> live row (lookups)
    self._spec = spec
    self._kv = ts.KvStore.open(spec, context=context).result()
    self.manifest = manifest
    self.layout = BankLayout(**manifest["layout"])
    self.packed = manifest.get("spec_version") == 3
    # Format-3 banks also keep the id bytes in their own small array, so an id lookup
    # (contains, delete, rows_of) reads 64 B per row, not the whole record (450 KB at the
    # paper shape). Banks written before it ("id_array" absent) read ids from the records.
    self._id_array = self.packed and bool(manifest.get("id_array", False))
    self.record = record_layout(self.layout)
    names = ("id_hash", "text_span", "text_bytes", "deleted") + self.row_array_names
    self._arrays = {name: self._open_array(name) for name in names}
    self.codebooks = None
    if self.layout.pq_subspaces:
      self.codebooks = self._read("codebooks", self._open_array("codebooks"), slice(None))
    self._load_index()

  @property
  def row_array_names(self) -> tuple[str, ...]:
    """The stored per-row arrays: ``rows`` and ``ids`` (format 3) or one per field
    (format 2)."""
    if self.packed:
      return ("rows", "ids") if self._id_array else ("rows",)
    return ROW_ARRAYS + ("ids",)

  def _open_array(self, name):
    return bankfiles.open_array(bankfiles.subpath(self._spec, name), self.context)

  def _read(self, name, arr, index, rows=None):
    """``arr[index]`` as numpy; a damaged chunk -> BankCorruptError naming array and rows."""
    return read_checked(self.url, name, arr, index, rows)

  def _load_index(self):
    m = self.manifest
    self._deleted = set(
      self._read("deleted", self._arrays["deleted"], slice(0, m["num_deleted"])).tolist()
    )
    gen = m["rowindex_generation"]
    s = m["sorted_count"]
    run = idrun.open_run(self._open_array, gen, self.packed) if s else {}
    fences = (
      self._read("rowindex fences", run["fences"], slice(None)) if s else np.zeros((0,), np.uint64)
    )

    def read_chunk(chunks):
      try:
        return idrun.read_chunks(run, np.asarray(chunks, np.int64), s, self.packed)
      except ValueError as e:
        raise BankCorruptError(
          f"memory bank {self.url}: id index chunks {short(chunks)} cannot be read ({e}); {REBUILD}"
        ) from None

    tail = self._read("id_hash", self._arrays["id_hash"], slice(s, m["count"]))
    self._index = rowindex.RowIndex(read_chunk, fences, s, tail, s)

  # ------------------------------------------------------------------ create / open
  @classmethod
  def create(
    cls,
    url,
    layout: BankLayout,
    *,
    model_cfg=None,
    checkpoint_step: int = 0,
    params_fingerprint: str | None = None,
    tokenizer_fingerprint: str | None = None,
    codebooks=None,
    pq_rel_mse: float | None = None,
    sharded: bool = False,
    chunk_refs: int = 64,
    shard_refs: int = 4096,
    cache_size: int = 1024,
    context: ts.Context | None = None,
    packed_rows: bool = True,
  ) -> "MemoryBank":
    """A new, empty, incomplete bank. Refuses to overwrite an existing bank or to write
    into a non-empty local folder. ``packed_rows=False`` writes the format-2 layout (one
    array per field: 5x the chunk reads per cold read; tests, old readers)."""
    context = context or ts.Context()
    spec = bankfiles.kvstore_spec(url)
    kv = ts.KvStore.open(spec, context=context).result()
    if kv.read(bankfiles.MANIFEST).result().state == "value":
      raise ValueError(
        f"a memory bank already exists at {url}; open it (build-memory "
        "resumes it) or delete it first"
      )
    if spec.get("driver") == "file" and os.path.isdir(spec["path"]) and os.listdir(spec["path"]):
      raise ValueError(
        f"{url} is a non-empty folder that is not a memory bank; give "
        "build-memory an empty or new folder"
      )
    bankfiles.create_bank_arrays(
      spec, layout, codebooks, packed_rows, sharded, chunk_refs, shard_refs, context
    )
    manifest = new_manifest(
      layout,
      packed_rows=packed_rows,
      model_cfg=model_cfg,
      checkpoint_step=checkpoint_step,
      params_fingerprint=params_fingerprint,
      tokenizer_fingerprint=tokenizer_fingerprint,
      pq_rel_mse=pq_rel_mse,
    )
    bankfiles.write_manifest(spec, kv, manifest)
    return cls(url, spec, manifest, context, cache_size)

  @classmethod
  def open(
    cls,
    url,
    *,
    model_cfg=None,
    checkpoint_step: int | None = None,
    params_fingerprint: str | None = None,
    tokenizer_fingerprint: str | None = None,
    pq_subspaces: int | None = None,
    allow_stale: bool = False,
    require_complete: bool = False,
    cache_size: int = 1024,
    context: ts.Context | None = None,
  ) -> "MemoryBank":
    """Opens a bank, refusing one built for another model, weights or tokenizer unless
    ``allow_stale``. The weights are compared by fingerprint when given (the step alone
    cannot tell two stages apart), else by checkpoint step."""
    context = context or ts.Context()
    spec = bankfiles.kvstore_spec(url)
    manifest = bankfiles.read_manifest(url, context=context)
    problems = stale_problems(
      manifest,
      model_cfg=model_cfg,
      pq_subspaces=pq_subspaces,
      checkpoint_step=checkpoint_step,
      params_fingerprint=params_fingerprint,
      tokenizer_fingerprint=tokenizer_fingerprint,
    )
    if problems and not allow_stale:
      raise ValueError(
        f"memory bank {url} {'; and '.join(problems)}: the memories are stale; "
        f"rebuild the bank (build-memory), or pass {STALE_FLAG}"
      )
    if require_complete and not manifest["complete"]:
      raise ValueError(
        f"memory bank {url} is incomplete ({manifest['count']} references "
        "committed); resume it with build-memory"
      )
    return cls(url, spec, manifest, context, cache_size)

  @staticmethod
  def exists(url, context: ts.Context | None = None) -> bool:
    kv = ts.KvStore.open(bankfiles.kvstore_spec(url), context=context or ts.Context()).result()
    return kv.read(bankfiles.MANIFEST).result().state == "value"

  # ------------------------------------------------------------------ ids
  @property
  def complete(self) -> bool:
    return bool(self.manifest["complete"])

  @property
  def count(self) -> int:
    """Committed rows (deleted ones included)."""
    return int(self.manifest["count"])

  def rows_of(self, ids: Sequence[str]) -> np.ndarray:
    """int64 [n]: the live row of each id, -1 when absent or deleted (O(n) reads)."""
    ids = [str(i) for i in ids]
    memo = [self._row_memo.get(i) for i in ids]
    if all(m is not None for m in memo):
      return np.asarray(memo, np.int64)
    live = self._candidate_rows(ids, memo)
    flat = sorted({r for c in live for r in c})
    return self._match(ids, live, dict(zip(flat, self.row_ids(flat))))

  def _candidate_rows(self, ids: list[str], memo: list) -> list[list[int]]:
    """Live rows that may hold each id: its memoized row (``memo[j]``), else the id
    index's live candidates (hash matches; ``_match`` settles collisions)."""
    live: list[list[int]] = [[m] if m is not None else [] for m in memo]
    todo = [j for j, m in enumerate(memo) if m is None]
    if todo:
      cands = self._index.candidates(rowindex.hash_ids([ids[j] for j in todo]))
      for j, c in zip(todo, cands):
        live[j] = [r for r in c if r not in self._deleted]
    return live

  def _match(self, ids, live, stored: dict) -> np.ndarray:
    """The live row whose stored id equals each id (the newest), -1 if none; memoized."""
    out = np.full((len(ids),), -1, np.int64)
    for j, (i, c) in enumerate(zip(ids, live)):
      match = [r for r in c if stored[r] == i]
      if match:
        out[j] = max(match)
        self._row_memo.put(i, int(out[j]))
    return out

  def row_ids(self, rows_N) -> list[str]:
    rows = np.asarray(rows_N, np.int64)
    if not len(rows):
      return []
    if self.packed and not self._id_array:
      return decode_ids(self._read_records(rows, ("ids",))["ids"])
    return decode_ids(self._read("ids", self._arrays["ids"], rows, rows))

  def _read_records(self, rows_N: np.ndarray, names=rowrecord.FIELDS) -> dict:
    """Fields of the packed records of ``rows_N`` (format 3): one read."""
    got = self._read("rows", self._arrays["rows"], rows_N, rows_N)
    return rowrecord.unpack(got, self.record, names)

  @property
  def ids(self) -> list[str]:
    """Live (not deleted) reference ids in row order (reads every id: inspection, tests)."""
    live = [r for r in range(self.count) if r not in self._deleted]
    return self.row_ids(live)

  @property
  def deleted_rows(self) -> np.ndarray:
    """The rows deleted so far, in deletion order (the bank's edit log)."""
    return self._read("deleted", self._arrays["deleted"], slice(0, self.manifest["num_deleted"]))

  def contains(self, ids: Sequence[str]) -> np.ndarray:
    """bool [n]: which ids are live in the bank (one batched lookup)."""
    return self.rows_of(ids) >= 0

  def __contains__(self, ref_id) -> bool:
    return bool(self.rows_of([ref_id])[0] >= 0)

  def __len__(self) -> int:
    return self.count - len(self._deleted)

  # ------------------------------------------------------------------ texts
  def texts(self, ids: Sequence[str] | None = None, *, rows_N=None) -> list[str]:
    """The stored reference texts of ``ids`` (or of the rows ``rows_N``)."""
    rows = np.asarray(self._live_rows(ids) if rows_N is None else rows_N, np.int64)
    if not len(rows):
      return []
    span = self._read("text_span", self._arrays["text_span"], rows, rows)
    futs = [self._arrays["text_bytes"][int(a) : int(b)].read() for a, b in span]
    out = []
    for r, f in zip(rows, futs):
      try:
        out.append(bytes(np.asarray(f.result())).decode("utf-8"))
      except ValueError as e:
        raise BankCorruptError(
          f"memory bank {self.url}: array 'text_bytes' row {r} cannot be read ({e}); {REBUILD}"
        ) from None
    return out

  def _live_rows(self, ids):
    return self._require_live(ids, self.rows_of(ids))

  def _require_live(self, ids, rows_N: np.ndarray) -> np.ndarray:
    """``rows_N`` (from ``rows_of`` or ``_match``), or a KeyError naming the absent ids."""
    unknown = [i for i, r in zip(ids, rows_N) if r < 0]
    if unknown:
      raise KeyError(f"reference ids not in memory bank {self.url} (or deleted): {unknown[:5]}")
    return rows_N

  # ------------------------------------------------------------------ writes
  def quantize_rows(self, keys_NxLxKxMxD, values_NxLxKxMxD):
    """Float memories -> the stored form (bf16, or PQ codes with this bank's codebooks)."""
    if not self.layout.pq_subspaces:
      import ml_dtypes

      return (
        np.asarray(keys_NxLxKxMxD).astype(ml_dtypes.bfloat16),
        np.asarray(values_NxLxKxMxD).astype(ml_dtypes.bfloat16),
      )
    return quantize.encode_memories(keys_NxLxKxMxD, values_NxLxKxMxD, self.codebooks)

  def append(
    self,
    ids: Sequence[str],
    keys_NxLxKxMxD,
    values_NxLxKxMxD,
    mask_NxM,
    token_idx_NxLxKxM,
    texts: Sequence[str] | None = None,
  ) -> None:
    """Commits a batch of float (unquantized) memories and their texts: arrays first,
    manifest last. Every check runs before anything is written."""
    ids = [str(i) for i in ids]
    n, start = len(ids), self.count
    if n == 0:
      return
    id_bytes = encode_ids(ids)
    rows = self.rows_of(ids)
    dup = [i for i, r in zip(ids, rows) if r >= 0]
    if dup or len(set(ids)) != len(ids):
      raise ValueError(
        f"reference ids already in the bank (or repeated): "
        f"{dup[:5] or _repeated(ids)}; delete them first to replace them"
      )
    texts = [""] * n if texts is None else [str(t) for t in texts]
    if len(texts) != n:
      raise ValueError(f"{n} ids need {n} texts, got {len(texts)}")
    k, v = self.quantize_rows(keys_NxLxKxMxD, values_NxLxKxMxD)
    blob = [t.encode("utf-8") for t in texts]
    ends = self.manifest["text_bytes"] + np.cumsum([len(b) for b in blob])
    span = np.stack([ends - [len(b) for b in blob], ends], 1).astype(np.int64)
    data = {
      "keys": k,
      "values": v,
      "mask": np.asarray(mask_NxM, bool),
      "token_idx": np.asarray(token_idx_NxLxKxM, np.int32),
      "ids": id_bytes,
      "id_hash": rowindex.hash_ids(ids),
      "text_span": span,
    }
    for name in data:
      want = self._row_shape(name)
      if data[name].shape != (n,) + want:
        raise ValueError(
          f"{name} batch has shape {data[name].shape}, the bank expects "
          f"({n}, {', '.join(map(str, want))})"
        )
    if self.packed:
      fields = {name: data.pop(name) for name in rowrecord.FIELDS}
      data["rows"] = rowrecord.pack(fields, self.record)
      if self._id_array:
        data["ids"] = fields["ids"]
    futures = [self._write_at(name, start, data[name]) for name in data]
    text = np.frombuffer(b"".join(blob), np.uint8)
    if len(text):
      futures.append(self._write_at("text_bytes", self.manifest["text_bytes"], text))
    for f in futures:
      f.result()
    self.manifest = {**self.manifest, "count": start + n, "text_bytes": int(ends[-1])}
    self._index.add(data["id_hash"], start)
    self._maybe_merge()
    self._commit()

  insert = append

  def _row_shape(self, name: str) -> tuple[int, ...]:
    if name in rowrecord.FIELDS:
      return self.record.shapes[name]
    return tuple(self._arrays[name].shape[1:])

  def _write_at(self, name, start, data):
    arr = self._arrays[name]
    stop = start + len(data)
    if arr.shape[0] < stop:
      grow = max(stop, 2 * arr.shape[0]) if name == "text_bytes" else stop
      arr = arr.resize(
        exclusive_max=[grow] + [None] * (arr.rank - 1), resize_metadata_only=True
      ).result()
      self._arrays[name] = arr
    return arr[start:stop].write(data)

  def delete(self, ids: Sequence[str]) -> None:
    """Tombstones ``ids`` (O(batch)); unknown or repeated ids change nothing."""
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
      raise ValueError(f"delete got repeated ids {_repeated(ids)}; nothing was deleted")
    rows = self.rows_of(ids)
    missing = [i for i, r in zip(ids, rows) if r < 0]
    if missing:
      raise KeyError(f"cannot delete ids not in the bank: {missing[:5]}; nothing was deleted")
    if not ids:
      return
    nd = self.manifest["num_deleted"]
    self._write_at("deleted", nd, rows).result()
    self.manifest = {**self.manifest, "num_deleted": nd + len(ids)}
    self._deleted.update(rows.tolist())
    for i in ids:
      self.cache.pop(i)
      self._row_memo.pop(i)
    self._commit()

  def finalize(self) -> None:
    self._maybe_merge(force=True)
    self.manifest = {**self.manifest, "complete": True}
    self._commit()

  def _maybe_merge(self, force: bool = False):
    """Rewrites the sorted id run with the tail (a new generation, committed by the next
    manifest) when the tail outgrows max(4096, run/4): amortized O(1) per row."""
    m = self.manifest
    tail = m["count"] - m["sorted_count"]
    if not tail or (not force and tail < max(4096, m["sorted_count"] // 4)):
      return
    s, gen = m["sorted_count"], m["rowindex_generation"]
    old_h, old_r = idrun.read_whole(self._read, self._open_array, gen, s, self.packed)
    tail_h = self._read("id_hash", self._arrays["id_hash"], slice(s, m["count"]))
    h, r, fences = rowindex.merged_run(old_h, old_r, tail_h, s)
    new = gen + 1
    idrun.write(self._spec, self.context, new, h, r, fences, self.packed)
    self.manifest = {**m, "sorted_count": int(m["count"]), "rowindex_generation": new}
    self._pending_drop = gen if s else None
    self._load_index()

  def _commit(self):
    bankfiles.write_manifest(self._spec, self._kv, self.manifest)
    drop = getattr(self, "_pending_drop", None)
    if drop is not None:  # the old run is unreferenced once the manifest names the new one
      self._kv.delete_range(
        ts.KvStore.KeyRange(f"{idrun.run_dir(drop)}/", f"{idrun.run_dir(drop)}0")
      ).result()
      if self._spec.get("driver") == "file":
        shutil.rmtree(os.path.join(self._spec["path"], idrun.run_dir(drop)), ignore_errors=True)
      self._pending_drop = None

  # ------------------------------------------------------------------ reads
  def read(self, ids: Sequence[str]) -> BankRows:
    """Batched gather of rows (stored form) by reference id, through the LRU cache: one
    TensorStore read per array for all the rows not cached."""
    ids = [str(i) for i in ids]
    found = {}
    for i in ids:
      hit = self.cache.get(i)
      if hit is not None:
        found[i] = hit
    missing = list(dict.fromkeys(i for i in ids if i not in found))
    if missing:
      read_rows = self._gather_packed if self.packed else self._gather_split
      got = read_rows(missing)
      for j, i in enumerate(missing):
        found[i] = tuple(got[name][j] for name in ROW_ARRAYS)
        self.cache.put(i, found[i])
    if not ids:
      return BankRows(
        *[np.zeros((0,) + self.record.shapes[n], self.record.dtypes[n]) for n in ROW_ARRAYS]
      )
    if not self.cache.size and len(missing) == len(ids):  # no cache, no repeats: as read
      return BankRows(*[got[name] for name in ROW_ARRAYS])
    return BankRows(*[np.stack([found[i][f] for i in ids]) for f in range(4)])

  def _gather_split(self, ids: list[str]) -> dict:
    """Format 2: the id lookup (reads the ids array), then one read per field array."""
    rows = self._live_rows(ids)
    futures = {name: self._arrays[name][rows].read() for name in ROW_ARRAYS}
    got = {}
    for name, f in futures.items():
      try:
        got[name] = np.asarray(f.result())
      except ValueError:
        self._locate_damage(name, np.sort(rows))
    return got

  def _gather_packed(self, ids: list[str]) -> dict:
    """Format 3: one read of the records of every live candidate row of ``ids``; the id
    bytes in them resolve hash collisions, so the lookup costs no extra read."""
    live = self._candidate_rows(ids, [self._row_memo.get(i) for i in ids])
    flat = np.unique(np.asarray([r for c in live for r in c], np.int64))
    fields: dict = {"ids": []}
    if len(flat):
      try:
        records = np.asarray(self._arrays["rows"][flat].read().result())
      except ValueError:
        self._locate_damage("rows", flat)
      fields = rowrecord.unpack(records, self.record)
    stored = dict(zip(flat.tolist(), decode_ids(fields["ids"])))
    rows = self._require_live(ids, self._match(ids, live, stored))
    pick = np.searchsorted(flat, rows)
    return {name: fields[name][pick] for name in ROW_ARRAYS}

  def _locate_damage(self, name, rows):
    locate_damage(self.url, name, self._arrays[name], rows)

  def verify(self, batch: int = 4096) -> None:
    """Reads every committed row of every array (checksums); raises on the first damage."""
    for name in self.row_array_names + ("id_hash", "text_span"):
      verify_rows(self.url, name, self._arrays[name], self.count, batch)

  def get_or_encode(self, ids: Sequence[str], encode_fn: Callable) -> BankRows:
    """Cold start (paper §3.1): encodes ids missing from the bank, writes them back, reads.

    ``encode_fn(missing_ids) -> (keys, values, mask, token_idx)`` float numpy arrays, e.g.
    a closure over the reference tokens and a jitted ``encode_references``.
    """
    rows = self.rows_of(ids)
    missing = list(dict.fromkeys(i for i, r in zip(ids, rows) if r < 0))
    if missing:
      self.append(missing, *encode_fn(missing))
    return self.read(ids)

  def dequantize(self, keys, values):
    """Stored -> float32 (jittable math; runs on the device when given device arrays)."""
    import jax.numpy as jnp

    if not self.layout.pq_subspaces:
      return jnp.asarray(keys, jnp.float32), jnp.asarray(values, jnp.float32)
    cb = jnp.asarray(self.codebooks)
    l_axis = keys.ndim - 4  # [..., L, K, M, S]
    return (
      quantize.decode_memories(jnp.asarray(keys), cb[0], self.layout.head_dim, l_axis),
      quantize.decode_memories(jnp.asarray(values), cb[1], self.layout.head_dim, l_axis),
    )

  def read_arrays(self) -> dict:
    """Every committed row of every row array (tests, inspection)."""
    n = self.count
    if self.packed:
      return self._read_records(np.arange(n), ROW_ARRAYS)
    return {name: self._read(name, self._arrays[name], slice(0, n)) for name in ROW_ARRAYS}


def _repeated(ids) -> list[str]:
  seen, rep = set(), []
  for i in ids:
    if i in seen and i not in rep:
      rep.append(i)
    seen.add(i)
  return rep[:5]
