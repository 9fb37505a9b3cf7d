"""What a bank was built with: hashes of the model config, the weights and the tokenizer.

A bank's memories are the keys/values of the model's own memory layers run over each
reference's tokens. They are stale when the weights change (a later step, another stage
at the same step: ``warmup/12`` and ``continual/12``) or when the tokenizer changes (other
token ids, other memories), and mismatched when the model's shape, special ids or selection
differ (``model_fingerprint``). The manifest records all three and opening compares them
(``MemoryBank.open``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

# Probe text for tokenizers without an inspectable vocabulary: mixed scripts, digits,
# casing and punctuation, so two different vocabularies almost surely encode it apart.
_PROBE = (
  "The Quick brown fox, 1234 jumps over: the lazy dog! Zürich Ñandú 東京 "
  "naïve café -- x=y+1; <ref> ref_id #0 memory³ 0.125e-3"
)


def params_fingerprint(params: Any) -> str:
  """sha256 (16 hex) of every weight (path, dtype, shape, bytes), in sorted path order.

  The memories depend on the embedding and every layer up to the last memory layer; all
  weights are hashed, which also covers those (a stricter test, never a laxer one).
  """
  import jax

  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  h = hashlib.sha256()
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}\n".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:16]


def tokenizer_fingerprint(tok: Any) -> str:
  """sha256 (16 hex) of the tokenizer's vocabulary.

  SentencePiece models hash their serialized model (the whole vocabulary); other
  tokenizers hash their type, ``vocab_size`` and the ids of a fixed probe text.
  """
  h = hashlib.sha256(type(tok).__name__.encode())
  h.update(f"|{getattr(tok, 'vocab_size', None)}|".encode())
  sp = getattr(tok, "_sp", None)
  proto = None
  if sp is not None and hasattr(sp, "serialized_model_proto"):
    proto = sp.serialized_model_proto()
  elif isinstance(getattr(tok, "sp_model", None), (bytes, bytearray)):
    proto = tok.sp_model
  if proto is not None:
    h.update(bytes(proto))
  else:
    h.update(np.asarray(list(tok.encode(_PROBE)), np.int64).tobytes())
  return h.hexdigest()[:16]


def model_fingerprint(cfg) -> str:
  """Hash of everything that changes what a memory is (shape, ids, selection, RoPE)."""
  m = cfg.memory
  fields = dict(
    vocab=cfg.vocab_size,
    layers=cfg.num_layers,
    heads=cfg.num_heads,
    kv_heads=cfg.num_kv_heads,
    head_dim=cfg.head_dim,
    embed=cfg.embed_dim,
    mlp=cfg.mlp_dim,
    rope=cfg.rope_base,
    ref_id=cfg.ref_id,
    memory_layers=list(m.memory_layers),
    k=m.tokens_per_head,
    ref_len=m.ref_len,
    selection=m.selection,
  )
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
