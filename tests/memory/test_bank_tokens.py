"""bank.tokens_per_head: a bank keeping another number of tokens per head than training."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.data.references import load_references
from m3jax.memory.build import (
  BankConfig,
  build_bank,
  load_index,
  make_encoder,
  served_configs,
  serving_config,
)
from m3jax.memory.feeder import MemoryFeeder
from m3jax.memory.store import MemoryBank
from m3jax.model.transformer import Transformer
from tests.memory.helpers import WordTokenizer, write_kb


@pytest.fixture(scope="module")
def refs(tiny_cfg, tmp_path_factory):
  path = write_kb(tmp_path_factory.mktemp("kb") / "kb.jsonl", 12)
  return load_references(path, WordTokenizer(), ref_len=tiny_cfg.memory.ref_len)


def test_serving_config_replaces_only_k(tiny_cfg):
  k = tiny_cfg.memory.tokens_per_head
  assert serving_config(tiny_cfg, BankConfig()) is tiny_cfg  # 0: training's k
  assert serving_config(tiny_cfg, BankConfig(tokens_per_head=k)) is tiny_cfg
  served = serving_config(tiny_cfg, BankConfig(tokens_per_head=2 * k))
  assert served.memory.tokens_per_head == 2 * k
  assert dataclasses.replace(served, memory=tiny_cfg.memory) == tiny_cfg
  with pytest.raises(ValueError, match="'bank.tokens_per_head'.*ref_len"):
    serving_config(tiny_cfg, BankConfig(tokens_per_head=tiny_cfg.memory.ref_len + 1))
  with pytest.raises(ValueError, match="'bank.tokens_per_head'"):
    BankConfig(tokens_per_head=-1)


def test_served_configs_reads_model_and_bank_of_a_run_config():
  from configs.memory3 import get_config

  config = get_config("tiny")
  k = config.model.memory.tokens_per_head
  with config.unlocked():
    config.bank.tokens_per_head = 2 * k
  model_cfg, bank_cfg = served_configs(config)
  assert bank_cfg.tokens_per_head == 2 * k and model_cfg.memory.tokens_per_head == 2 * k
  assert model_cfg.num_layers == config.model.num_layers
  model_cfg, bank_cfg = served_configs(config, quantization="pq", tokens_per_head=0)
  assert bank_cfg.quantization == "pq" and model_cfg.memory.tokens_per_head == k
  assert config.bank.quantization != "pq"  # overrides never touch the config


def test_more_tokens_keep_the_same_top_tokens_and_add_the_next(tiny_cfg, tiny_params, refs):
  k = tiny_cfg.memory.tokens_per_head
  big = serving_config(tiny_cfg, BankConfig(tokens_per_head=2 * k))
  k_s, v_s, m_s, t_s = make_encoder(tiny_params, tiny_cfg, 8)(refs)
  k_b, v_b, m_b, t_b = make_encoder(tiny_params, big, 8)(refs)
  assert t_b.shape[-1] == 2 * k and t_s.shape[-1] == k
  lengths = np.asarray([len(r.tokens) for r in refs])
  assert (m_b.sum(-1) == np.minimum(lengths, 2 * k)).all()
  grew = 0
  for r in range(len(refs)):
    for layer in range(t_s.shape[1]):
      for head in range(t_s.shape[2]):
        small = t_s[r, layer, head][m_s[r]]
        large = list(t_b[r, layer, head][m_b[r]])
        assert set(small) <= set(large), (r, layer, head)  # top-k sets nest
        grew += len(large) - len(small)
        at = [large.index(i) for i in small]  # the shared tokens' memories are identical
        np.testing.assert_array_equal(k_b[r, layer, head, at], k_s[r, layer, head][m_s[r]])
        np.testing.assert_array_equal(v_b[r, layer, head, at], v_s[r, layer, head][m_s[r]])
  assert grew > 0


@pytest.mark.integration
def test_bank_at_another_k_is_built_read_and_refused_by_the_training_k(
  tiny_cfg, tiny_params, refs, tmp_path
):
  bank_cfg = BankConfig(encode_batch_size=8, embedding_dim=32, tokens_per_head=8)
  served = serving_config(tiny_cfg, bank_cfg)
  url = str(tmp_path / "bank")
  build_bank(tiny_params, served, refs, url, bank_cfg=bank_cfg, progress=False)
  with pytest.raises(ValueError, match="layout"):
    MemoryBank.open(url, model_cfg=tiny_cfg)  # trained k: the bank's memories do not fit
  bank = MemoryBank.open(url, model_cfg=served, require_complete=True)
  embedder, retriever = load_index(f"{url}/index")
  feeder = MemoryFeeder(embedder, retriever, bank, served.memory.refs_per_chunk)
  feeder.prefetch([["capital of land3 is town3", "Visitors of land7 eat dish7"]])
  mem, _ = feeder.get()
  feeder.close()
  ctx = jnp.asarray(
    np.random.default_rng(0).integers(8, 200, (1, 2 * served.memory.chunk_len)), jnp.int32
  )
  logits = jax.jit(lambda m: Transformer(served).apply({"params": tiny_params}, ctx, m))(mem)
  no_mem = jax.jit(lambda: Transformer(served).apply({"params": tiny_params}, ctx))()
  assert np.isfinite(np.asarray(logits)).all()
  assert np.abs(np.asarray(logits) - np.asarray(no_mem)).max() > 1e-3  # the memories are read
