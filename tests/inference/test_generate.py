"""Cached generation with memory refresh == a naive decoder recomputing the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.inference.generate import ChunkQuery, Generator, chunk_query_tokens
from m3jax.inference.sampling import SamplingConfig, sample
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.transformer import Transformer
from tests.inference.fakes import FakeBank, tiny_model


def _query_by_rule(ctx, p_len, c, L):
  """Chunk c's retrieval query, written from the rule in generate.py's docstring and not
  from its code: the prompt tokens inside chunk c if it has any, else the L context tokens
  of chunk c-1 (prompt and generated alike)."""
  own_prompt = [ctx[i] for i in range(c * L, (c + 1) * L) if i < p_len]
  if own_prompt:
    return own_prompt
  assert len(ctx) > c * L - 1, "chunk c-1 must be complete before chunk c needs memory"
  return [ctx[i] for i in range((c - 1) * L, c * L)]


def _naive_greedy(cfg, params, prompt, max_new, bank):
  """Full forward every step; chunk c's memory by the documented rule (no cache).

  The context is right-padded to a fixed length (causality makes the padding invisible
  to the last real position) so the forward compiles once."""
  L = cfg.memory.chunk_len
  t_max = -(-(len(prompt) + max_new) // L) * L
  forward = jax.jit(lambda p, t, m: Transformer(cfg).apply({"params": p}, t, m))
  ctx, p_len, used = list(prompt), len(prompt), {}
  for _ in range(max_new):
    mem = None
    if bank is not None:
      ids = np.full((t_max // L, bank.R), -1)
      for c in range(-(-len(ctx) // L)):
        ids[c] = used[c] = bank.ids_for(_query_by_rule(ctx, p_len, c, L))
      m = bank.memory_for_ids(ids)  # [L, C, 1, …] -> one row with C chunks
      mem = MemoryKV(
        jnp.swapaxes(m.keys_LxBxCxRxKxMxD, 1, 2),
        jnp.swapaxes(m.values_LxBxCxRxKxMxD, 1, 2),
        jnp.swapaxes(m.mask_BxCxRxM, 0, 1),
      )
    tokens = np.zeros((1, t_max), np.int32)
    tokens[0, : len(ctx)] = ctx
    logits = forward(params, jnp.asarray(tokens), mem)
    ctx.append(int(jnp.argmax(logits[0, len(ctx) - 1])))
  return ctx[p_len:], used


@pytest.fixture(scope="module")
def model():
  return tiny_model()


def _prompts(cfg, lengths, seed=0):
  rng = np.random.default_rng(seed)
  return [[cfg.bos_id] + list(rng.integers(5, cfg.vocab_size, n - 1)) for n in lengths]


@pytest.mark.integration
def test_cached_memory_generation_matches_full_forward(model):
  cfg, params = model
  L = cfg.memory.chunk_len  # 16 in the tiny config
  prompts = _prompts(cfg, [5, 16, 23, 40])  # partial, exact and multi-chunk prompts
  max_new = 2 * L + 7  # crosses two or three boundaries per row
  bank = FakeBank(cfg)
  res = Generator(cfg, params, memory_fn=bank, stop_at_eos=False).generate(prompts, max_new)
  assert res.num_swaps >= 3  # rows swap at different steps
  for r, p in enumerate(prompts):
    want, used = _naive_greedy(cfg, params, p, max_new, bank)
    np.testing.assert_array_equal(res.tokens[r], want, err_msg=f"row {r}")
    assert sorted(res.memory_ids[r]) == sorted(used)
    for c in used:
      np.testing.assert_array_equal(res.memory_ids[r][c], used[c])


@pytest.mark.integration
def test_no_memory_generation_matches_full_forward_and_memory_matters(model):
  cfg, params = model
  prompts = _prompts(cfg, [3, 20], seed=1)
  res = Generator(cfg, params, stop_at_eos=False).generate(prompts, 12)
  for r, p in enumerate(prompts):
    np.testing.assert_array_equal(res.tokens[r], _naive_greedy(cfg, params, p, 12, None)[0])
  with_mem = Generator(cfg, params, memory_fn=FakeBank(cfg), stop_at_eos=False).generate(
    prompts, 12
  )
  assert any(not np.array_equal(a, b) for a, b in zip(res.tokens, with_mem.tokens))


@pytest.mark.integration
def test_first_decoded_chunk_inherits_last_prompt_chunk(model):
  cfg, params = model
  L = cfg.memory.chunk_len
  bank = FakeBank(cfg)
  res = Generator(cfg, params, memory_fn=bank, stop_at_eos=False).generate(
    _prompts(cfg, [L, L + 3]), L - 4
  )  # no boundary crossed after the prompt
  assert res.num_swaps == 0
  assert len(bank.calls) == 1  # one batched call for all prompt chunks
  assert [(q.row, q.chunk) for q in bank.calls[0]] == [(0, 0), (1, 0), (1, 1)]


@pytest.mark.integration
def test_eos_stops_rows(model):
  cfg, params = model
  prompts = _prompts(cfg, [4, 9], seed=2)
  ref = Generator(cfg, params, stop_at_eos=False).generate(prompts, 6)
  eos_cfg = cfg.__class__(**{**cfg.__dict__, "eos_id": int(ref.tokens[0][2])})
  res = Generator(eos_cfg, params).generate(prompts, 6)
  np.testing.assert_array_equal(res.tokens[0], ref.tokens[0][:2])


def test_sampling_topk_stays_in_topk_and_greedy_is_argmax():
  logits = jax.random.normal(jax.random.key(0), (64, 50))
  top = np.asarray(jax.lax.top_k(logits, 3)[1])
  got = np.asarray(sample(logits, jax.random.key(1), SamplingConfig(temperature=1.0, top_k=3)))
  assert all(g in t for g, t in zip(got, top))
  np.testing.assert_array_equal(sample(logits, None, SamplingConfig()), np.argmax(logits, -1))
  with pytest.raises(ValueError, match="temperature"):
    SamplingConfig(temperature=-1.0)


@pytest.mark.integration
def test_sampled_generation_runs_with_memory(model):
  cfg, params = model
  res = Generator(
    cfg,
    params,
    memory_fn=FakeBank(cfg),
    stop_at_eos=False,
    sampling=SamplingConfig(temperature=0.8, top_k=5),
  ).generate(_prompts(cfg, [6, 30]), 20, rng=jax.random.key(3))
  assert [len(t) for t in res.tokens] == [20, 20]


def test_bad_inputs(model):
  cfg, params = model
  gen = Generator(cfg, params)
  with pytest.raises(ValueError, match="at least one prompt"):
    gen.generate([], 4)
  with pytest.raises(ValueError, match="max_new_tokens"):
    gen.generate([[cfg.bos_id, 7]], 0)
  assert chunk_query_tokens(np.arange(40), 20, 1, 16).tolist() == list(range(16, 20))
  assert chunk_query_tokens(np.arange(40), 20, 2, 16).tolist() == list(range(16, 32))
  assert isinstance(ChunkQuery(0, 0, np.arange(3)).tokens, np.ndarray)
