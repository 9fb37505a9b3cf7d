"""Training-time retrieval, done once ahead of training and cached beside the data.

Paper §3.6: each ``chunk_len``-token chunk of a training sequence retrieves ONE reference,
with its own text (``train_query="own"``) or, as a strictly causal ablation, with the
``chunk_len`` tokens before it (``"previous"``). Retrieval is exact top-k cosine (numpy dot
products of L2-normalized embeddings, sparse when the embedder offers ``embed_sparse``).
The leakage filter (Eq. 6) then skips any candidate
whose overlap with the whole sequence exceeds ``train_overlap_threshold`` and takes the next
best; a chunk whose candidates all leak gets no reference (index -1, length 0 downstream).

Exact Eq. 6 is only computed when a cheap bound cannot decide: the bag-of-tokens
intersection Σ_v min(count_t(v), count_r(v)) / |r| is an upper bound of the LCS ratio, so a
candidate under the threshold by the bound passes without the DP.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from tqdm import tqdm

from m3jax.memory import overlap as overlap_lib
from m3jax.data import sparse_embedder
from m3jax.data.config import DataConfig, data_config_from
from m3jax.data.kb import kb_references, reference_arrays
from m3jax.data.prepare import DataPaths, exclusive, load_vocab, sources_key

NO_REF = -1
# Reference rows are the pieces of ``kb.kb_references`` (lines longer than ref_len split,
# 2026-12-03), not the lines: a cache keyed without this would index the wrong rows.
REFERENCE_ROWS = "split-v1"


def chunk_ranges(num_seqs: int, seq_len: int, chunk_len: int, query: str) -> np.ndarray:
  """Stream ranges [start, end) of each chunk's retrieval query -> int64 [S, C, 2].

  Row s packs stream tokens [s·T, (s+1)·T) as targets, so input position p of row s is
  stream token s·T + p − 1 (p ≥ 1; p = 0 is ``<s>``). Chunk c's own text is its input
  positions; "previous" is the ``chunk_len`` stream tokens just before them.
  """
  c = np.arange(seq_len // chunk_len)
  a = np.arange(num_seqs)[:, None] * seq_len + c[None, :] * chunk_len - 1
  row_start = np.arange(num_seqs)[:, None] * seq_len
  if query == "own":
    start, end = np.maximum(a, row_start), a + chunk_len
  elif query == "previous":
    start, end = np.maximum(a - chunk_len, 0), np.maximum(a, 0)
  else:
    raise ValueError(f"unknown train_query {query!r}; use 'own' or 'previous'")
  return np.stack([start, end], -1)


def filter_leaks(
  seq_tokens: np.ndarray,
  candidates_CxK: np.ndarray,
  ref_tokens_NxL,
  ref_lengths_N,
  threshold: float,
  span_factor: int = 2,
) -> np.ndarray:
  """First candidate per chunk whose Eq. 6 overlap with the sequence is <= threshold."""
  counts = np.bincount(seq_tokens, minlength=int(ref_tokens_NxL.max(initial=0)) + 1)
  chosen = np.full(candidates_CxK.shape[0], NO_REF, np.int32)
  open_c = list(range(candidates_CxK.shape[0]))
  for rank in range(candidates_CxK.shape[1]):
    need_exact = []
    for c in open_c:
      ref = candidates_CxK[c, rank]
      if ref == NO_REF:
        continue
      r = ref_tokens_NxL[ref, : ref_lengths_N[ref]]
      if not len(r):
        continue
      uniq, cnt = np.unique(r, return_counts=True)
      seen = counts[np.minimum(uniq, len(counts) - 1)] * (uniq < len(counts))
      if np.minimum(cnt, seen).sum() / len(r) <= threshold:
        chosen[c] = ref
      else:
        need_exact.append(c)
    if need_exact:
      refs = [
        ref_tokens_NxL[candidates_CxK[c, rank], : ref_lengths_N[candidates_CxK[c, rank]]]
        for c in need_exact
      ]
      scores = overlap_lib.overlap_many(seq_tokens, refs, span_factor)
      for c, s in zip(need_exact, scores):
        if s <= threshold:
          chosen[c] = candidates_CxK[c, rank]
    open_c = [c for c in open_c if chosen[c] == NO_REF]
    if not open_c:
      break
  return chosen


def pretrieval_key(cfg: DataConfig, split: str, seq_len: int, chunk_len: int, ref_len: int) -> str:
  blob = json.dumps(
    [
      sources_key(cfg),
      REFERENCE_ROWS,
      split,
      seq_len,
      chunk_len,
      ref_len,
      cfg.train_query,
      cfg.train_overlap_threshold,
      cfg.max_span_factor,
      cfg.retrieval_candidates,
    ]
  )
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrieve(
  data_cfg, paths: DataPaths, split: str, seq_len: int, chunk_len: int, ref_len: int
) -> np.ndarray:
  """Chunk -> reference index (a row of ``kb.reference_arrays(kb.kb_references(...))``)
  for every packed sequence -> int32 [S, C] (-1 = none).

  Cached in ``pretrieval-<key>.npz`` keyed by every input that changes the result.
  """
  cfg = data_config_from(data_cfg)
  if seq_len % chunk_len:
    raise ValueError(f"seq_len={seq_len} must be a multiple of chunk_len={chunk_len}")
  path = paths.pretrieval(pretrieval_key(cfg, split, seq_len, chunk_len, ref_len))
  if not os.path.exists(path):
    with exclusive(paths.data_dir):  # built once when runs share the data directory
      if not os.path.exists(path):
        _build(cfg, paths, split, seq_len, chunk_len, ref_len, path)
  return np.load(path)["ref_index"]


def _build(
  cfg: DataConfig,
  paths: DataPaths,
  split: str,
  seq_len: int,
  chunk_len: int,
  ref_len: int,
  path: str,
) -> None:
  """Pre-retrieval of every packed sequence of ``split``, written to ``path``."""
  stream = np.load(paths.tokens(split))
  num_seqs = len(stream) // seq_len
  ranges = chunk_ranges(num_seqs, seq_len, chunk_len, cfg.train_query).reshape(-1, 2)
  vocab = load_vocab(cfg, paths)
  queries = [vocab.decode(stream[a:b]) for a, b in tqdm(ranges, desc="decode", leave=False)]
  embedder = sparse_embedder.load(cfg.embedder, paths.embedder)
  refs = kb_references(paths, vocab, ref_len)
  ref_tokens, ref_lengths = reference_arrays(refs, ref_len)
  ref_emb = sparse_embedder.embed_references(embedder, [r.text for r in refs])
  cands, _ = sparse_embedder.top_k(embedder, queries, ref_emb, cfg.retrieval_candidates)
  num_chunks = seq_len // chunk_len
  cands = cands.reshape(num_seqs, num_chunks, -1)
  ref_index = np.full((num_seqs, num_chunks), NO_REF, np.int32)
  for s in tqdm(range(num_seqs), desc=f"leakage filter ({split})", leave=False):
    ref_index[s] = filter_leaks(
      stream[s * seq_len : (s + 1) * seq_len],
      cands[s],
      ref_tokens,
      ref_lengths,
      cfg.train_overlap_threshold,
      cfg.max_span_factor,
    )
  tmp = path + ".tmp.npz"
  np.savez(tmp, ref_index=ref_index)
  os.replace(tmp, path)
