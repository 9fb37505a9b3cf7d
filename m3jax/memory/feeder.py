"""Host-side glue: query chunk texts -> a fixed-shape ``MemoryKV`` (never inside jit).

embed the chunk texts -> retrieve R reference ids per chunk (after the optional
anti-copy filter, ``keep=anti_copy_filter(...)``) -> one batched bank read (LRU-cached) -> dequantize (jitted, on the
device) -> pad to R with a mask. ``prefetch(next)`` starts the next batch on a background
thread so retrieval and bank I/O overlap with the model's compute; ``get()`` collects it.
The retrieved ids are returned too, so a RAG baseline can use the very same references.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.memory.overlap import EVAL_THRESHOLD, anti_copy_keep
from m3jax.model.memory_kv import MemoryKV


def anti_copy_filter(ref_tokens: Callable[[str], Sequence[int]], threshold: float = EVAL_THRESHOLD):
  """The evaluation anti-copy filter (paper §4.4, App. C) as the feeder's ``keep``.

  Returns ``keep(question_tokens, ref_id) -> bool``: False when the reference holds more
  than ``threshold`` of the question (``overlap(reference, question)``, normalized by the
  question; m3jax.memory.overlap.anti_copy_keep). QA, RAG and the demo all use this one.
  """
  return lambda question_tokens, ref_id: bool(
    anti_copy_keep(question_tokens, [ref_tokens(ref_id)], threshold)[0]
  )


class MemoryFeeder:
  """Builds ``MemoryKV [L, B, C, R, K, M, D]`` + ids ``[B, C, R]`` for batches of chunks."""

  def __init__(
    self,
    embedder,
    retriever,
    bank,
    refs_per_chunk: int,
    *,
    keep: Callable[[Sequence[int], str], bool] | None = None,
    oversample: int = 4,
    dtype=jnp.float32,
  ):
    self.embedder, self.retriever, self.bank = embedder, retriever, bank
    self.refs_per_chunk = refs_per_chunk
    self.keep = keep
    self.oversample = oversample if keep is not None else 0
    self.dtype = dtype
    self._dequant = jax.jit(bank.dequantize)
    self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending = None

  def retrieve(self, chunk_texts: Sequence[str], query_tokens=None) -> np.ndarray:
    """-> ids object [Q, R] (None = no reference), best first, filtered."""
    r = self.refs_per_chunk
    if not len(chunk_texts):
      return np.full((0, r), None, object)
    embed = getattr(self.embedder, "embed_sparse", self.embedder.embed)
    got, _ = self.retriever.search(embed(list(chunk_texts)), r + self.oversample)
    out = np.full((len(chunk_texts), r), None, object)
    seen = list(dict.fromkeys(i for row in got for i in row if i is not None))
    live = set(i for i, ok in zip(seen, self.bank.contains(seen)) if ok) if seen else set()
    for q, row in enumerate(got):
      picked = []
      for ref_id in row:
        if ref_id is None or ref_id not in live:
          continue
        if (
          self.keep is not None
          and query_tokens is not None
          and not self.keep(query_tokens[q], ref_id)
        ):
          continue
        picked.append(ref_id)
        if len(picked) == r:
          break
      out[q, : len(picked)] = picked
    return out

  def fetch(self, chunk_texts_BxC: Sequence[Sequence[str]], query_tokens_BxC=None):
    """-> (MemoryKV with arrays on the default device, ids object array [B, C, R])."""
    b, c = len(chunk_texts_BxC), len(chunk_texts_BxC[0])
    flat = [t for row in chunk_texts_BxC for t in row]
    flat_q = None if query_tokens_BxC is None else [t for row in query_tokens_BxC for t in row]
    ids = self.retrieve(flat, flat_q).reshape(b, c, self.refs_per_chunk)
    return self.assemble(ids), ids

  def assemble(self, ids_BxCxR: np.ndarray) -> MemoryKV:
    """Reads the bank rows of ``ids`` (None = masked slot) into a padded MemoryKV."""
    b, c, r = ids_BxCxR.shape
    lay = self.bank.layout
    flat = list(ids_BxCxR.reshape(-1))
    uniq = list(dict.fromkeys(i for i in flat if i is not None))
    rows = self.bank.read(uniq)
    where = {i: j + 1 for j, i in enumerate(uniq)}
    slot = np.array([where.get(i, 0) for i in flat], np.int64)

    def with_blank(x):  # row 0 = the blank memory used by empty slots
      return np.concatenate([np.zeros((1,) + x.shape[1:], x.dtype), x])[slot]

    k_stored, v_stored = with_blank(rows.keys), with_blank(rows.values)
    mask = with_blank(rows.mask).reshape(b, c, r, lay.tokens)
    k, v = self._dequant(jnp.asarray(k_stored), jnp.asarray(v_stored))
    shape = (b, c, r, lay.num_layers, lay.kv_heads, lay.tokens, lay.head_dim)
    to_l = lambda x: jnp.moveaxis(x.reshape(shape), 3, 0).astype(self.dtype)
    return MemoryKV(to_l(k), to_l(v), jnp.asarray(mask))

  # ------------------------------------------------------------------ async
  def prefetch(self, chunk_texts_BxC, query_tokens_BxC=None) -> None:
    """Starts fetching on the background thread (one batch in flight)."""
    if self._pending is not None:
      raise RuntimeError("prefetch called twice without get(); collect the first batch")
    self._pending = self._pool.submit(self.fetch, chunk_texts_BxC, query_tokens_BxC)

  def get(self):
    """The prefetched (MemoryKV, ids); re-raises any error from the background thread."""
    if self._pending is None:
      raise RuntimeError("get() without a prefetch()")
    pending, self._pending = self._pending, None
    return pending.result()

  def close(self) -> None:
    self._pool.shutdown(wait=True)
