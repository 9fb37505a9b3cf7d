"""Warm start (paper §3.1): encode a whole knowledge base into a bank, resumably.

references -> fixed-shape batches -> jitted ``encode_references`` -> (PQ) -> append ->
manifest, then the retrieval index (embedder + ScaNN) saved beside the bank. A killed
build, rerun with the same references, resumes after the last committed batch and ends
bitwise identical to an uninterrupted one (fixed batch shapes, deterministic encoding).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.memory import quantize
from m3jax.memory.encode import encode_references
from m3jax.model.config import frozen_from, model_config_from, require_positive
from m3jax.memory.fingerprint import params_fingerprint, tokenizer_fingerprint
from m3jax.memory.bankfiles import kvstore_spec
from m3jax.memory.layout import BankLayout
from m3jax.memory.store import MemoryBank


@dataclasses.dataclass(frozen=True)
class BankConfig:
  """Frozen ``config.bank`` (see configs/sections/bank.py for what each field means)."""

  url: str = ""
  quantization: str = "none"
  pq_bytes_per_vector: int = 14
  pq_train_refs: int = 2048
  pq_iters: int = 20
  cache_size: int = 1024
  sharded: bool = False
  chunk_refs: int = 64
  shard_refs: int = 4096
  index_kind: str = "auto"
  brute_force_max: int = 20_000
  scann_reorder: int = 100
  scann_search_fraction: float = 0.1
  embedder: str = "sparse_tfidf"
  embedding_dim: int = 256
  encode_batch_size: int = 32
  storage_num_references: int = 112_000_000
  # Tokens kept per (memory layer, KV head) in the bank, and so read when serving it
  # (evaluation, decoding); 0: the model's memory.tokens_per_head, what training selects.
  # More than training's k keeps the same top tokens plus the next ones by the same score
  # (top-k sets nest), at proportionally more storage and memory attention.
  tokens_per_head: int = 0

  def __post_init__(self):
    if self.quantization not in ("none", "pq"):
      raise ValueError(
        f"invalid config field 'bank.quantization': {self.quantization!r} "
        "is not one of ('none', 'pq')"
      )
    require_positive(self, ("encode_batch_size", "pq_bytes_per_vector", "embedding_dim"), "bank.")
    require_positive(self, ("chunk_refs", "shard_refs"), "bank.")  # the store's layout
    if self.tokens_per_head < 0:
      raise ValueError(
        f"invalid config field 'bank.tokens_per_head': {self.tokens_per_head} < 0 "
        "(0 keeps the model's memory.tokens_per_head)"
      )

  @property
  def pq_subspaces(self) -> int:
    return self.pq_bytes_per_vector if self.quantization == "pq" else 0


def bank_config_from(cfg: Mapping[str, Any] | None) -> BankConfig:
  return frozen_from(BankConfig, dict(cfg or {}), "bank.")


def serving_config(model_cfg, bank_cfg: BankConfig):
  """The model config as its bank serves it: memories of ``bank.tokens_per_head`` tokens.

  Training selects ``memory.tokens_per_head`` tokens of each live-encoded reference; a
  bank may keep another number (the weights are the same: memory tokens keep their own
  reference positions, and a memory layer's softmax takes any number of them). Everything
  that builds, opens or reads a bank uses this config; training uses the model's own.
  """
  k = bank_cfg.tokens_per_head
  if not k or k == model_cfg.memory.tokens_per_head:
    return model_cfg
  if k > model_cfg.memory.ref_len:
    raise ValueError(
      f"invalid config field 'bank.tokens_per_head': {k} exceeds the reference length "
      f"memory.ref_len={model_cfg.memory.ref_len}; use at most that, or 0 for training's "
      f"{model_cfg.memory.tokens_per_head}"
    )
  memory = dataclasses.replace(model_cfg.memory, tokens_per_head=k)
  return dataclasses.replace(model_cfg, memory=memory)


def served_configs(config: Mapping[str, Any], **bank_overrides):
  """-> (model config as its bank serves it, BankConfig) of a whole run config.

  The one way entry points read ``config.model`` and ``config.bank`` together
  (``bank_overrides`` replace ``config.bank`` fields, e.g. a command-line quantization).
  """
  bank_cfg = bank_config_from({**dict(config.get("bank") or {}), **bank_overrides})
  return serving_config(model_config_from(config.model), bank_cfg), bank_cfg


def pad_references(refs: Sequence, ref_len: int, batch: int, pad_id: int = 0):
  """-> tokens int32 [batch, ref_len] (right-padded), lengths int32 [batch] (0 = filler)."""
  tokens = np.full((batch, ref_len), pad_id, np.int32)
  lengths = np.zeros((batch,), np.int32)
  for i, r in enumerate(refs):
    t = r.tokens
    if len(t) > ref_len:
      raise ValueError(f"reference {r.id!r} has {len(t)} tokens > ref_len={ref_len}")
    tokens[i, : len(t)] = t
    lengths[i] = len(t)
  return tokens, lengths


def make_encoder(params, model_cfg, batch_size: int) -> Callable:
  """refs -> (keys, values, mask, token_idx) float32 numpy, one fixed-shape jit per batch."""
  fn = jax.jit(lambda p, t, n: encode_references(p, model_cfg, t, n))

  def encode(refs):
    out = []
    for s in range(0, len(refs), batch_size):
      part = refs[s : s + batch_size]
      tokens, lengths = pad_references(part, model_cfg.memory.ref_len, batch_size, model_cfg.pad_id)
      enc = jax.device_get(fn(params, jnp.asarray(tokens), jnp.asarray(lengths)))
      n = len(part)
      out.append(
        (
          np.asarray(enc.keys_BxLxKxMxD[:n], np.float32),
          np.asarray(enc.values_BxLxKxMxD[:n], np.float32),
          np.asarray(enc.mask_BxM[:n]),
          np.asarray(enc.token_idx_BxLxKxM[:n]),
        )
      )
    return tuple(np.concatenate(parts) for parts in zip(*out))

  return encode


def valid_vectors(keys_NxLxKxMxD, values_NxLxKxMxD, mask_NxM) -> np.ndarray:
  """[2, L, P, D]: every kept (non-padding) K and V vector, per memory layer."""
  n, nl, kh, m, d = keys_NxLxKxMxD.shape
  sel = np.broadcast_to(mask_NxM[:, None, :], (n, kh, m))
  out = [np.stack([x[:, l][sel] for l in range(nl)]) for x in (keys_NxLxKxMxD, values_NxLxKxMxD)]
  return np.stack(out)


def train_pq(encoder, refs, bank_cfg: BankConfig, seed: int = 0):
  """Codebooks from a uniform sample of the knowledge base; -> (codebooks, relative MSE)."""
  rng = np.random.default_rng(seed)
  pick = np.sort(rng.choice(len(refs), min(len(refs), bank_cfg.pq_train_refs), replace=False))
  k, v, mask, _ = encoder([refs[i] for i in pick])
  vecs = valid_vectors(k, v, mask)
  cb = quantize.train_codebooks(
    vecs, bank_cfg.pq_bytes_per_vector, iters=bank_cfg.pq_iters, seed=seed
  )
  kc, vc = quantize.encode_memories(k, v, cb)
  d = k.shape[-1]
  kh = np.asarray(quantize.decode_memories(jnp.asarray(kc), jnp.asarray(cb[0]), d, 1))
  vh = np.asarray(quantize.decode_memories(jnp.asarray(vc), jnp.asarray(cb[1]), d, 1))
  err = quantize.relative_mse(valid_vectors(k, v, mask), valid_vectors(kh, vh, mask))
  return cb, err


def default_index_dir(bank_url) -> str | None:
  """Beside the bank (``<bank>/index``) when the bank is a local directory."""
  spec = kvstore_spec(bank_url)
  return os.path.join(spec["path"], "index") if spec.get("driver") == "file" else None


def build_bank(
  params,
  model_cfg,
  references: Sequence,
  bank_url,
  *,
  bank_cfg: BankConfig = BankConfig(),
  checkpoint_step: int = 0,
  tokenizer=None,
  allow_stale: bool = False,
  index_dir: str | None = None,
  build_index: bool = True,
  after_batch: Callable[[int, int], None] | None = None,
  progress: bool = True,
  context=None,
) -> MemoryBank:
  """Encodes ``references`` into the bank at ``bank_url`` (creating or resuming it).

  ``after_batch(batch_index, committed)`` runs after each committed batch (tests use it to
  kill a build). Returns the finalized bank; the index is saved to ``index_dir``
  (default: beside a local bank). The manifest records fingerprints of ``params`` and of
  ``tokenizer`` (when given); resuming a bank built with others is refused unless
  ``allow_stale``.
  """
  if not references:
    raise ValueError("no references to encode (empty knowledge base)")
  ids = [r.id for r in references]
  if len(set(ids)) != len(ids):
    raise ValueError("reference ids are not unique")
  long = [r.id for r in references if len(r.tokens) > model_cfg.memory.ref_len]
  if long:
    raise ValueError(
      f"references {long[:3]} have more than ref_len="
      f"{model_cfg.memory.ref_len} tokens; split them with "
      "m3jax.data.references (load_references / split_reference)"
    )
  encoder = make_encoder(params, model_cfg, bank_cfg.encode_batch_size)
  layout = BankLayout.from_model(model_cfg, bank_cfg.pq_subspaces)
  fps = {
    "params_fingerprint": params_fingerprint(params),
    "tokenizer_fingerprint": (tokenizer_fingerprint(tokenizer) if tokenizer is not None else None),
  }
  if MemoryBank.exists(bank_url, context):
    bank = MemoryBank.open(
      bank_url,
      model_cfg=model_cfg,
      checkpoint_step=checkpoint_step,
      pq_subspaces=bank_cfg.pq_subspaces,
      cache_size=bank_cfg.cache_size,
      allow_stale=allow_stale,
      context=context,
      **fps,
    )
    done = bank.row_ids(np.arange(bank.count))
    if done != ids[: len(done)]:
      raise ValueError(
        f"bank {bank_url} holds {len(done)} references that are not a prefix "
        "of this knowledge base's references; build into a new bank"
      )
  else:
    codebooks, err = (
      train_pq(encoder, references, bank_cfg) if bank_cfg.pq_subspaces else (None, None)
    )
    bank = MemoryBank.create(
      bank_url,
      layout,
      model_cfg=model_cfg,
      checkpoint_step=checkpoint_step,
      codebooks=codebooks,
      **fps,
      pq_rel_mse=err,
      sharded=bank_cfg.sharded,
      chunk_refs=bank_cfg.chunk_refs,
      shard_refs=bank_cfg.shard_refs,
      cache_size=bank_cfg.cache_size,
      context=context,
    )
  start, bs = bank.count, bank_cfg.encode_batch_size
  batches = range(start, len(references), bs)
  bar = None
  if progress:
    from tqdm import tqdm

    bar = tqdm(total=len(references), initial=start, unit="ref", desc="encode references")
  for b, s in enumerate(batches):
    part = references[s : s + bs]
    bank.append([r.id for r in part], *encoder(part), texts=[r.text for r in part])
    if bar is not None:
      bar.update(len(part))
    if after_batch is not None:
      after_batch(b, bank.count)
  if bar is not None:
    bar.close()
  if build_index:
    index_dir = index_dir or default_index_dir(bank_url)
    embedder, retriever = build_index_for(references, bank_cfg)
    if index_dir:
      save_index(index_dir, embedder, retriever, bank)
    bank.index = (embedder, retriever)
  bank.finalize()
  return bank


def build_index_for(references: Sequence, bank_cfg: BankConfig):
  """Fits the embedder on the reference texts and indexes them; -> (embedder, retriever).

  A sparse embedder is searched exactly by an inverted index up to ``brute_force_max``
  references; past it (with ``index_kind`` auto or scann) the bank switches to the dense
  SVD TF-IDF embedder and a ScaNN tree + AH + reorder index, as the design asks at scale.
  """
  from m3jax.memory.embedders import make_embedder
  from m3jax.memory.retriever import make_retriever, scann_available

  name = bank_cfg.embedder
  big = len(references) > bank_cfg.brute_force_max
  if (
    name == "sparse_tfidf"
    and big
    and bank_cfg.index_kind in ("auto", "scann")
    and scann_available()
  ):
    name = "tfidf"
  kwargs = {"dim": bank_cfg.embedding_dim} if name == "tfidf" else {}
  embedder = make_embedder(name, **kwargs)
  texts = [r.text for r in references]
  embedder.fit(texts)
  ids = [r.id for r in references]
  if hasattr(embedder, "embed_sparse"):  # sparse vectors: exact inverted-index search
    return embedder, make_retriever("sparse", ids, embedder.embed_sparse(texts))
  kind = bank_cfg.index_kind
  if kind == "auto":
    kind = "scann" if scann_available() else "numpy"
  extra = (
    {
      "brute_force_max": bank_cfg.brute_force_max,
      "reorder": bank_cfg.scann_reorder,
      "search_fraction": bank_cfg.scann_search_fraction,
    }
    if kind == "scann"
    else {}
  )
  return embedder, make_retriever(kind, ids, embedder.embed(texts), **extra)


def embedder_name(embedder) -> str:
  from m3jax.memory.embedders import SparseTfidfEmbedder, TfidfEmbedder

  if isinstance(embedder, SparseTfidfEmbedder):
    return "sparse_tfidf"
  if isinstance(embedder, TfidfEmbedder):
    return "tfidf"
  return "minilm"


INDEX_META = "index.json"


def save_index(index_dir: str, embedder, retriever, bank=None) -> None:
  """Writes a new generation ``<index_dir>/g<n>/`` then ``index.json`` naming it (atomic
  rename), then drops the old generation. ``index.json`` records how many bank rows and
  deletions the index covers: :func:`load_index` replays the bank's later edits."""
  import shutil

  os.makedirs(index_dir, exist_ok=True)
  meta_path = os.path.join(index_dir, INDEX_META)
  old = None
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f).get("generation")
  gen = (old or 0) + 1
  gdir = os.path.join(index_dir, f"g{gen}")
  shutil.rmtree(gdir, ignore_errors=True)
  os.makedirs(gdir)
  name = embedder_name(embedder)
  efile = "embedder.json" if name == "minilm" else "embedder.npz"
  embedder.save(os.path.join(gdir, efile))
  retriever.save(gdir)
  meta = {
    "embedder": name,
    "embedder_file": efile,
    "generation": gen,
    "bank_rows": bank.count if bank is not None else None,
    "bank_deletions": bank.manifest["num_deleted"] if bank is not None else None,
  }
  tmp = meta_path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(meta, f)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, meta_path)
  if old is not None:
    shutil.rmtree(os.path.join(index_dir, f"g{old}"), ignore_errors=True)


def load_index(index_dir: str, bank: MemoryBank | None = None):
  """-> (embedder, retriever) saved by :func:`save_index`; with ``bank``, the bank's edits
  after the save (rows appended, rows deleted: the bank is the edit log) are replayed, so
  retrieval after a restart equals retrieval before it. Nothing here unpickles."""
  from m3jax.memory import embedders
  from m3jax.memory.retriever import load_retriever

  path = os.path.join(index_dir, INDEX_META)
  if not os.path.exists(path):
    legacy = os.path.exists(os.path.join(index_dir, "embedder.pkl"))
    raise ValueError(
      f"{index_dir} holds no retrieval index (no {INDEX_META}"
      f"{'; an old pickled index is never loaded' if legacy else ''}); "
      "rebuild it with `python -m m3jax build-memory`"
    )
  with open(path) as f:
    meta = json.load(f)
  if "generation" not in meta:
    raise ValueError(
      f"{path} is an old index format (pickled embedder, never loaded); "
      "rebuild the index with `python -m m3jax build-memory`"
    )
  gdir = os.path.join(index_dir, f"g{meta['generation']}")
  embedder = embedders.EMBEDDERS[meta["embedder"]].load(os.path.join(gdir, meta["embedder_file"]))
  retriever = load_retriever(gdir)
  if bank is not None and meta.get("bank_rows") is not None:
    replay_edits(bank, embedder, retriever, meta["bank_rows"], meta["bank_deletions"])
  return embedder, retriever


def replay_edits(
  bank: MemoryBank, embedder, retriever, rows_covered: int, deletions_covered: int
) -> None:
  """Brings an index saved at (rows_covered, deletions_covered) up to the bank's state."""
  deleted = bank.deleted_rows
  old_del = [int(r) for r in deleted[deletions_covered:] if r < rows_covered]
  if old_del:
    retriever.delete(bank.row_ids(old_del))
  dead = set(deleted.tolist())
  new = [r for r in range(rows_covered, bank.count) if r not in dead]
  if new:
    ids, texts = bank.row_ids(new), bank.texts(rows_N=new)
    embed = getattr(embedder, "embed_sparse", embedder.embed)
    retriever.insert(ids, embed(texts))
