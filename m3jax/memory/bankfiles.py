"""A memory bank's files: the kvstore, its checksummed zarr v3 arrays, and the manifest.

The on-disk format ``m3jax.memory.store.MemoryBank`` reads and writes: where a bank's
arrays live under its kvstore, how each array is created (crc32c on every chunk, chunks
stored even when equal to the fill value, so a missing chunk is damage, never zeros),
and the manifest (read with its required fields checked, written last and atomically).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorstore as ts

from m3jax.memory.damage import REBUILD
from m3jax.memory.layout import BankLayout, row_arrays

SPEC_VERSION = 3  # 3: one packed record per row (rows/); 2: one array per field
READ_SPEC_VERSIONS = (2, 3)
MANIFEST = "manifest.json"


def kvstore_spec(url) -> dict:
  if isinstance(url, dict):
    spec = dict(url)
  elif "://" in str(url):
    spec = ts.KvStore.Spec(str(url)).to_json()
  else:
    spec = {"driver": "file", "path": os.path.abspath(str(url))}
  path = spec.get("path", "")
  spec["path"] = path if not path or path.endswith("/") else path + "/"
  return spec


def subpath(spec: dict, name: str) -> dict:
  return {**spec, "path": spec["path"] + name + "/"}


def _zarr3(spec) -> dict:
  """The TensorStore spec of a bank array: a missing chunk is an error, never fill
  values, and a chunk equal to the fill value is still stored (so it is never missing)."""
  return {
    "driver": "zarr3",
    "kvstore": spec,
    "fill_missing_data_reads": False,
    "store_data_equal_to_fill_value": True,
  }


def open_array(spec, context):
  """An existing bank array."""
  return ts.open(_zarr3(spec), context=context).result()


def create_array(spec, row_shape, dtype, sharded, chunk_refs, shard_refs, context, shape0: int = 0):
  """A zarr3 array [shape0, *row_shape] with crc32c on every chunk (and shard index)."""
  row_shape = tuple(row_shape)
  if sharded:
    grid = [shard_refs, *row_shape]
    codecs = [
      {
        "name": "sharding_indexed",
        "configuration": {
          "chunk_shape": [1, *row_shape],
          "codecs": [{"name": "bytes"}, {"name": "crc32c"}],
          "index_codecs": [{"name": "bytes"}, {"name": "crc32c"}],
        },
      }
    ]
  else:
    grid = [chunk_refs, *row_shape]
    codecs = [{"name": "bytes"}, {"name": "crc32c"}]
  metadata = {
    "shape": [shape0, *row_shape],
    "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
    "codecs": codecs,
  }
  return ts.open(
    {**_zarr3(spec), "metadata": metadata},
    create=True,
    delete_existing=True,
    dtype=dtype,
    context=context,
  ).result()


def create_bank_arrays(
  spec: dict,
  layout: BankLayout,
  codebooks,
  packed_rows: bool,
  sharded: bool,
  chunk_refs: int,
  shard_refs: int,
  context,
) -> None:
  """Every array of a new, empty bank under ``spec``: the per-row arrays (``chunk_refs``
  rows per chunk, or one row per chunk in shards of ``shard_refs``), the id hashes, text
  spans and bytes, the deletion log, and the PQ codebooks (written here, before any row;
  ``codebooks`` is None for an unquantized layout)."""
  if layout.pq_subspaces and codebooks is None:
    raise ValueError("a quantized bank needs its codebooks at creation")
  for name, (row, dt) in row_arrays(layout, packed_rows).items():
    create_array(subpath(spec, name), row, dt, sharded, chunk_refs, shard_refs, context)
  for name, row, dt, chunk in (
    ("id_hash", (), ts.uint64, 4096),
    ("text_span", (2,), ts.int64, 4096),
    ("text_bytes", (), ts.uint8, 1 << 18),
    ("deleted", (), ts.int64, 4096),
  ):
    create_array(subpath(spec, name), row, dt, False, chunk, 0, context)
  if layout.pq_subspaces:
    cb = np.asarray(codebooks, np.float32)
    create_array(
      subpath(spec, "codebooks"),
      cb.shape[1:],
      ts.float32,
      False,
      cb.shape[0],
      0,
      context,
      shape0=cb.shape[0],
    ).write(cb).result()


REQUIRED = (
  "spec_version",
  "complete",
  "layout",
  "checkpoint_step",
  "count",
  "num_deleted",
  "text_bytes",
  "sorted_count",
  "rowindex_generation",
  "params_fingerprint",
  "tokenizer_fingerprint",
)


def read_manifest(url, context: ts.Context | None = None) -> dict:
  spec = kvstore_spec(url)
  kv = ts.KvStore.open(spec, context=context or ts.Context()).result()
  got = kv.read(MANIFEST).result()
  where = f"{url}/{MANIFEST}"
  if got.state != "value":
    raise ValueError(
      f"{url} is not a memory bank (no {MANIFEST}); build one with `python -m m3jax build-memory`"
    )
  try:
    manifest = json.loads(bytes(got.value).decode("utf-8"))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f"{where} is corrupt ({e}); {REBUILD}") from None
  if isinstance(manifest, dict) and manifest.get("spec_version") not in (
    None,
    *READ_SPEC_VERSIONS,
  ):
    raise ValueError(
      f"{where} has spec version {manifest['spec_version']}, this code "
      f"reads versions {READ_SPEC_VERSIONS}; {REBUILD} (or update m3jax)"
    )
  missing = [k for k in REQUIRED if not isinstance(manifest, dict) or k not in manifest]
  if missing:
    raise ValueError(f"{where} is corrupt (missing fields {missing}); {REBUILD}")
  return manifest


def write_manifest(spec: dict, kv, manifest: dict) -> None:
  data = json.dumps(manifest).encode("utf-8")
  if spec.get("driver") == "file":  # atomic on POSIX: readers see old or new, never half
    path = os.path.join(spec["path"], MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  else:  # one kvstore key write is atomic (memory, gcs, s3)
    kv.write(MANIFEST, data).result()
