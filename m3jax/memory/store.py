"""The explicit-memory bank: TensorStore zarr v3 arrays + a manifest written last.

Layout under one kvstore (local dir, ``memory://``, ``gs://`` … any TensorStore URL or
kvstore spec dict):

  keys/, values/    [N, L_mem, K, M, D] bfloat16, or uint8 codes [N, L_mem, K, M, S] (PQ)
  mask/             [N, M] bool          token_idx/  [N, L_mem, K, M] int32
  codebooks/        [2, L_mem, S, 256, W] float32 (PQ only; written before any row)
  manifest.json     spec version, layout, dtype, quantization, checkpoint step, model
                    fingerprint, committed row count and row ids, tombstones, complete

Rows are append-only. An append writes the arrays first and the manifest last (local
files: temp file + rename), so rows beyond the manifest's count are garbage a resumed
build overwrites: a crash never duplicates, skips or half-commits a reference, and a bank
is ``complete`` only after :meth:`MemoryBank.finalize`. Deletion is a tombstone in the
manifest (the row stays; its id is never returned). Reads are one batched gather per
array behind an LRU cache of rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable, Sequence

import numpy as np
import tensorstore as ts

from m3jax.memory import quantize
from m3jax.memory.lru import LRUCache

SPEC_VERSION = 1
MANIFEST = "manifest.json"
STALE_FLAG = "allow_stale=True to MemoryBank.open"


@dataclasses.dataclass(frozen=True)
class BankLayout:
  """Per-reference memory shape; ``pq_subspaces == 0`` means unquantized bfloat16."""
  num_layers: int
  kv_heads: int
  tokens: int
  head_dim: int
  pq_subspaces: int = 0

  @classmethod
  def from_model(cls, cfg, pq_subspaces: int = 0) -> "BankLayout":
    return cls(cfg.memory.num_memory_layers, cfg.num_kv_heads, cfg.memory.tokens_per_head,
               cfg.head_dim, pq_subspaces)

  @property
  def row_shape(self) -> tuple[int, ...]:
    last = self.pq_subspaces or self.head_dim
    return (self.num_layers, self.kv_heads, self.tokens, last)


def model_fingerprint(cfg) -> str:
  """Hash of everything that changes what a memory is (shape, ids, selection, RoPE)."""
  m = cfg.memory
  fields = dict(vocab=cfg.vocab_size, layers=cfg.num_layers, heads=cfg.num_heads,
                kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, embed=cfg.embed_dim,
                mlp=cfg.mlp_dim, rope=cfg.rope_base, ref_id=cfg.ref_id,
                memory_layers=list(m.memory_layers), k=m.tokens_per_head, ref_len=m.ref_len,
                selection=m.selection)
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclasses.dataclass
class BankRows:
  """Rows as stored: keys/values bf16 [n, L, K, M, D] or uint8 codes [n, L, K, M, S]."""
  keys: np.ndarray
  values: np.ndarray
  mask: np.ndarray
  token_idx: np.ndarray


def _kvstore_spec(url) -> dict:
  if isinstance(url, dict):
    spec = dict(url)
  elif "://" in str(url):
    spec = ts.KvStore.Spec(str(url)).to_json()
  else:
    spec = {"driver": "file", "path": os.path.abspath(str(url))}
  path = spec.get("path", "")
  spec["path"] = path if not path or path.endswith("/") else path + "/"
  return spec


def _sub(spec: dict, name: str) -> dict:
  return {**spec, "path": spec["path"] + name + "/"}


class MemoryBank:
  """Append-only explicit-memory store. Create with :meth:`create`, reopen with :meth:`open`."""

  def __init__(self, url, spec: dict, manifest: dict, context: ts.Context, cache_size: int):
    self.url = url
    self.context = context
    self.cache = LRUCache(cache_size)
    self._spec = spec
    self._kv = ts.KvStore.open(spec, context=context).result()
    self.manifest = manifest
    self.layout = BankLayout(**manifest["layout"])
    self._arrays = {name: ts.open({"driver": "zarr3", "kvstore": _sub(spec, name)},
                                  context=context).result()
                    for name in ("keys", "values", "mask", "token_idx")}
    self.codebooks = None
    if self.layout.pq_subspaces:
      cb = ts.open({"driver": "zarr3", "kvstore": _sub(spec, "codebooks")},
                   context=context).result()
      self.codebooks = np.asarray(cb.read().result())
    self._reindex()

  # ------------------------------------------------------------------ create / open
  @classmethod
  def create(cls, url, layout: BankLayout, *, model_cfg=None, checkpoint_step: int = 0,
             codebooks=None, pq_rel_mse: float | None = None, sharded: bool = False,
             chunk_refs: int = 64, shard_refs: int = 4096, cache_size: int = 1024,
             context: ts.Context | None = None) -> "MemoryBank":
    """A new, empty, incomplete bank. Refuses to overwrite an existing manifest."""
    context = context or ts.Context()
    spec = _kvstore_spec(url)
    kv = ts.KvStore.open(spec, context=context).result()
    if kv.read(MANIFEST).result().state == "value":
      raise ValueError(f"a memory bank already exists at {url}; open it (build-memory "
                       "resumes it) or delete it first")
    if layout.pq_subspaces and codebooks is None:
      raise ValueError("a quantized bank needs its codebooks at creation")
    n = layout.row_shape
    dtype = ts.uint8 if layout.pq_subspaces else ts.bfloat16
    shapes = {"keys": (n, dtype), "values": (n, dtype), "mask": ((layout.tokens,), ts.bool),
              "token_idx": (n[:-1], ts.int32)}
    for name, (row, dt) in shapes.items():
      _create_array(_sub(spec, name), row, dt, sharded, chunk_refs, shard_refs, context)
    if layout.pq_subspaces:
      cb = np.asarray(codebooks, np.float32)
      arr = ts.open({"driver": "zarr3", "kvstore": _sub(spec, "codebooks")}, create=True,
                    dtype=ts.float32, shape=cb.shape, context=context).result()
      arr.write(cb).result()
    manifest = {
        "spec_version": SPEC_VERSION, "complete": False,
        "layout": dataclasses.asdict(layout),
        "dtype": "uint8" if layout.pq_subspaces else "bfloat16",
        "quantization": ({"kind": "pq", "bytes_per_vector": layout.pq_subspaces,
                          "relative_mse": pq_rel_mse} if layout.pq_subspaces
                         else {"kind": "none"}),
        "checkpoint_step": int(checkpoint_step),
        "model_fingerprint": model_fingerprint(model_cfg) if model_cfg is not None else None,
        "count": 0, "ids": [], "deleted": [],
    }
    _write_manifest(spec, kv, manifest)
    return cls(url, spec, manifest, context, cache_size)

  @classmethod
  def open(cls, url, *, model_cfg=None, checkpoint_step: int | None = None,
           pq_subspaces: int | None = None, allow_stale: bool = False,
           require_complete: bool = False, cache_size: int = 1024,
           context: ts.Context | None = None) -> "MemoryBank":
    """Opens a bank, refusing one built for another model/checkpoint unless ``allow_stale``."""
    context = context or ts.Context()
    spec = _kvstore_spec(url)
    manifest = read_manifest(url, context=context)
    if model_cfg is not None:
      want = BankLayout.from_model(model_cfg, manifest["layout"]["pq_subspaces"]
                                   if pq_subspaces is None else pq_subspaces)
      have = BankLayout(**manifest["layout"])
      if want != have and not allow_stale:
        raise ValueError(f"memory bank {url} has layout {have} but the model config needs "
                         f"{want}; rebuild the bank, or pass {STALE_FLAG}")
      fp = model_fingerprint(model_cfg)
      if manifest["model_fingerprint"] not in (None, fp) and not allow_stale:
        raise ValueError(f"memory bank {url} was built for model fingerprint "
                         f"{manifest['model_fingerprint']} but the model config has {fp}; "
                         f"rebuild the bank, or pass {STALE_FLAG}")
    if (checkpoint_step is not None and manifest["checkpoint_step"] != checkpoint_step
        and not allow_stale):
      raise ValueError(f"memory bank {url} was encoded at checkpoint step "
                       f"{manifest['checkpoint_step']} but the model is at step "
                       f"{checkpoint_step}: the memories are stale; rebuild the bank "
                       f"(build-memory), or pass {STALE_FLAG}")
    if require_complete and not manifest["complete"]:
      raise ValueError(f"memory bank {url} is incomplete ({manifest['count']} references "
                       "committed); resume it with build-memory")
    return cls(url, spec, manifest, context, cache_size)

  @staticmethod
  def exists(url, context: ts.Context | None = None) -> bool:
    kv = ts.KvStore.open(_kvstore_spec(url), context=context or ts.Context()).result()
    return kv.read(MANIFEST).result().state == "value"

  # ------------------------------------------------------------------ ids
  def _reindex(self):
    deleted = set(self.manifest["deleted"])
    self._row_of = {i: r for r, i in enumerate(self.manifest["ids"]) if i not in deleted}

  @property
  def complete(self) -> bool:
    return bool(self.manifest["complete"])

  @property
  def count(self) -> int:
    """Committed rows (deleted ones included)."""
    return int(self.manifest["count"])

  @property
  def ids(self) -> list[str]:
    """Live (not deleted) reference ids in row order."""
    return [i for r, i in enumerate(self.manifest["ids"]) if self._row_of.get(i) == r]

  def __contains__(self, ref_id) -> bool:
    return ref_id in self._row_of

  def __len__(self) -> int:
    return len(self._row_of)

  # ------------------------------------------------------------------ writes
  def quantize_rows(self, keys, values):
    """Float memories -> the stored form (bf16, or PQ codes with this bank's codebooks)."""
    if not self.layout.pq_subspaces:
      import ml_dtypes
      return (np.asarray(keys).astype(ml_dtypes.bfloat16),
              np.asarray(values).astype(ml_dtypes.bfloat16))
    return quantize.encode_memories(keys, values, self.codebooks)

  def append(self, ids: Sequence[str], keys, values, mask, token_idx) -> None:
    """Commits a batch of float (unquantized) memories: arrays first, manifest last."""
    ids = [str(i) for i in ids]
    dup = [i for i in ids if i in self._row_of]
    if dup or len(set(ids)) != len(ids):
      raise ValueError(f"reference ids already in the bank (or repeated): {dup[:5]}; "
                       "delete them first to replace them")
    n, start = len(ids), self.count
    if n == 0:
      return
    k, v = self.quantize_rows(keys, values)
    data = {"keys": k, "values": v, "mask": np.asarray(mask, bool),
            "token_idx": np.asarray(token_idx, np.int32)}
    futures = []
    for name, arr in self._arrays.items():
      if data[name].shape != (n,) + tuple(arr.shape[1:]):
        raise ValueError(f"{name} batch has shape {data[name].shape}, the bank expects "
                         f"({n}, {', '.join(map(str, arr.shape[1:]))})")
      arr = arr.resize(exclusive_max=[start + n] + [None] * (arr.rank - 1),
                       resize_metadata_only=True).result()
      self._arrays[name] = arr
      futures.append(arr[start:start + n].write(data[name]))
    for f in futures:
      f.result()
    deleted = set(self.manifest["deleted"])
    self.manifest = {**self.manifest, "count": start + n, "ids": self.manifest["ids"] + ids,
                     "deleted": [d for d in self.manifest["deleted"] if d not in set(ids)]}
    if deleted & set(ids):
      self._reindex()
    else:
      self._row_of.update({i: start + j for j, i in enumerate(ids)})
    self._commit()

  insert = append

  def delete(self, ids: Sequence[str]) -> None:
    missing = [i for i in ids if i not in self._row_of]
    if missing:
      raise KeyError(f"cannot delete ids not in the bank: {missing[:5]}")
    self.manifest = {**self.manifest, "deleted": self.manifest["deleted"] + list(ids)}
    for i in ids:
      self.cache.pop(i)
    self._reindex()
    self._commit()

  def finalize(self) -> None:
    self.manifest = {**self.manifest, "complete": True}
    self._commit()

  def _commit(self):
    _write_manifest(self._spec, self._kv, self.manifest)

  # ------------------------------------------------------------------ reads
  def read(self, ids: Sequence[str]) -> BankRows:
    """Batched gather of rows (stored form) by reference id, through the LRU cache."""
    unknown = [i for i in ids if i not in self._row_of]
    if unknown:
      raise KeyError(f"reference ids not in memory bank {self.url} (or deleted): "
                     f"{unknown[:5]}")
    found = {}
    for i in ids:
      hit = self.cache.get(i)
      if hit is not None:
        found[i] = hit
    missing = sorted({i for i in ids if i not in found}, key=self._row_of.get)
    if missing:
      rows = np.array([self._row_of[i] for i in missing], np.int64)
      futures = {name: arr[rows].read() for name, arr in self._arrays.items()}
      got = {name: f.result() for name, f in futures.items()}
      for j, i in enumerate(missing):
        found[i] = tuple(got[name][j] for name in ("keys", "values", "mask", "token_idx"))
        self.cache.put(i, found[i])
    if not ids:
      shapes = [(0,) + tuple(a.shape[1:]) for a in self._arrays.values()]
      return BankRows(*[np.zeros(s, a.dtype.numpy_dtype)
                        for s, a in zip(shapes, self._arrays.values())])
    return BankRows(*[np.stack([found[i][f] for i in ids]) for f in range(4)])

  def get_or_encode(self, ids: Sequence[str], encode_fn: Callable) -> BankRows:
    """Cold start (paper §3.1): encodes ids missing from the bank, writes them back, reads.

    ``encode_fn(missing_ids) -> (keys, values, mask, token_idx)`` float numpy arrays, e.g.
    a closure over the reference tokens and a jitted ``encode_references``.
    """
    missing = list(dict.fromkeys(i for i in ids if i not in self._row_of))
    if missing:
      self.append(missing, *encode_fn(missing))
    return self.read(ids)

  def dequantize(self, keys, values):
    """Stored -> float32 (jittable math; runs on the device when given device arrays)."""
    import jax.numpy as jnp
    if not self.layout.pq_subspaces:
      return jnp.asarray(keys, jnp.float32), jnp.asarray(values, jnp.float32)
    cb = jnp.asarray(self.codebooks)
    l_axis = keys.ndim - 4   # [..., L, K, M, S]
    return (quantize.decode_memories(jnp.asarray(keys), cb[0], self.layout.head_dim, l_axis),
            quantize.decode_memories(jnp.asarray(values), cb[1], self.layout.head_dim, l_axis))

  def read_arrays(self) -> dict:
    """Every committed row of every array (tests, inspection)."""
    n = self.count
    return {name: np.asarray(arr[:n].read().result()) for name, arr in self._arrays.items()}


def _create_array(spec, row_shape, dtype, sharded, chunk_refs, shard_refs, context):
  if sharded:
    grid = [shard_refs, *row_shape]
    codecs = [{"name": "sharding_indexed", "configuration": {
        "chunk_shape": [1, *row_shape], "codecs": [{"name": "bytes"}],
        "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}]}}]
  else:
    grid = [chunk_refs, *row_shape]
    codecs = [{"name": "bytes"}]
  metadata = {"shape": [0, *row_shape],
              "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
              "codecs": codecs}
  ts.open({"driver": "zarr3", "kvstore": spec, "metadata": metadata}, create=True,
          delete_existing=True, dtype=dtype, context=context).result()


_REQUIRED = ("spec_version", "complete", "layout", "checkpoint_step", "count", "ids", "deleted")


def read_manifest(url, context: ts.Context | None = None) -> dict:
  spec = _kvstore_spec(url)
  kv = ts.KvStore.open(spec, context=context or ts.Context()).result()
  got = kv.read(MANIFEST).result()
  where = f"{url}/{MANIFEST}"
  if got.state != "value":
    raise ValueError(f"{url} is not a memory bank (no {MANIFEST}); build one with "
                     "`python -m m3jax build-memory`")
  try:
    manifest = json.loads(bytes(got.value).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{where} is corrupt ({e}); rebuild the bank with build-memory") from None
  missing = [k for k in _REQUIRED if not isinstance(manifest, dict) or k not in manifest]
  if missing:
    raise ValueError(f"{where} is corrupt (missing fields {missing}); rebuild the bank")
  if manifest["spec_version"] != SPEC_VERSION:
    raise ValueError(f"{where} has spec version {manifest['spec_version']}, this code "
                     f"reads version {SPEC_VERSION}; rebuild the bank")
  if len(manifest["ids"]) != manifest["count"]:
    raise ValueError(f"{where} is corrupt: count={manifest['count']} but "
                     f"{len(manifest['ids'])} ids; rebuild the bank")
  return manifest


def _write_manifest(spec: dict, kv, manifest: dict) -> None:
  data = json.dumps(manifest).encode("utf-8")
  if spec.get("driver") == "file":   # atomic on POSIX: readers see old or new, never half
    path = os.path.join(spec["path"], MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  else:                              # one kvstore key write is atomic (memory, gcs, s3)
    kv.write(MANIFEST, data).result()
