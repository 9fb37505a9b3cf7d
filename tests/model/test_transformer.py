"""Transformer invariants: memory-free equivalence, causality, cached decoding."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.memory.encode import encode_references, to_memory_kv
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import MemoryConfig, ModelConfig
from m3jax.model import layers, stack
from m3jax.model.transformer import Transformer

CFG = ModelConfig(
  vocab_size=97,
  num_layers=3,
  num_heads=4,
  num_kv_heads=2,
  head_dim=8,
  embed_dim=32,
  mlp_dim=64,
  memory=MemoryConfig(
    memory_layers=(0, 1), tokens_per_head=3, refs_per_chunk=2, chunk_len=4, ref_len=6
  ),
)


@functools.cache
def _params():
  tokens = jnp.zeros((1, 8), jnp.int32)
  # Larger init than default so attention is far from uniform and bugs show up.
  cfg = CFG.__class__(**{**CFG.__dict__, "init_std": 0.3})
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.key(0), tokens)["params"])
  return params, cfg


def _memory(params, cfg, batch, chunks, seed=1, mask_prob=0.3):
  """Real encoded references arranged per chunk, some slots masked."""
  rng = np.random.default_rng(seed)
  n_refs = 5
  refs = jnp.asarray(rng.integers(5, cfg.vocab_size, (n_refs, cfg.memory.ref_len)), jnp.int32)
  lengths = jnp.asarray([6, 2, 5, 6, 1], jnp.int32)
  enc = encode_references(params, cfg, refs, lengths)
  ids = rng.integers(0, n_refs, (batch, chunks, cfg.memory.refs_per_chunk))
  present = rng.random(ids.shape) > mask_prob
  return to_memory_kv(enc, jnp.asarray(ids), jnp.asarray(present))


def _forward(params, cfg, tokens, memory=None):
  return Transformer(cfg).apply({"params": params}, tokens, memory)


@pytest.mark.integration
def test_no_memory_and_fully_masked_memory_are_bitwise_plain():
  params, cfg = _params()
  tokens = jax.random.randint(jax.random.key(2), (2, 10), 5, cfg.vocab_size)
  plain = _forward(params, cfg, tokens)
  mem = _memory(params, cfg, 2, 3)
  masked = MemoryKV(
    mem.keys_LxBxCxRxKxMxD, mem.values_LxBxCxRxKxMxD, jnp.zeros_like(mem.mask_BxCxRxM)
  )
  np.testing.assert_array_equal(
    np.asarray(plain), np.asarray(_forward(params, cfg, tokens, masked))
  )
  with_mem = _forward(params, cfg, tokens, mem)
  assert not np.allclose(np.asarray(plain), np.asarray(with_mem), atol=1e-4), (
    "valid memories must change the output"
  )


@pytest.mark.integration
def test_memory_only_reaches_its_chunk():
  params, cfg = _params()
  tokens = jax.random.randint(jax.random.key(3), (1, 12), 5, cfg.vocab_size)
  mem = _memory(params, cfg, 1, 3, mask_prob=0.0)
  base = _forward(params, cfg, tokens, mem)
  # Remove chunk 2's memories: only tokens 8..11 may change.
  mask = mem.mask_BxCxRxM.at[:, 2].set(False)
  changed = _forward(
    params, cfg, tokens, MemoryKV(mem.keys_LxBxCxRxKxMxD, mem.values_LxBxCxRxKxMxD, mask)
  )
  np.testing.assert_array_equal(np.asarray(base[:, :8]), np.asarray(changed[:, :8]))
  assert not np.allclose(np.asarray(base[:, 8:]), np.asarray(changed[:, 8:]))


@pytest.mark.integration
def test_causality_with_memory_attached():
  params, cfg = _params()
  t = 11
  tokens = jax.random.randint(jax.random.key(4), (1, t), 5, cfg.vocab_size)
  mem = _memory(params, cfg, 1, 3, mask_prob=0.0)

  def logits_from_delta(delta_TxE):
    # Add a differentiable perturbation to the context embeddings (not the 1-token sink).
    def interceptor(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (
        isinstance(context.module, layers.Embed)
        and context.method_name == "__call__"
        and out.shape[1] == t
      ):
        out = out + delta_TxE[None]
      return out

    with nn.intercept_methods(interceptor):
      return Transformer(cfg).apply({"params": params}, tokens, mem)[0]

  delta = jnp.zeros((t, cfg.embed_dim))
  jac = jax.jacrev(lambda dl: logits_from_delta(dl).sum(-1))(delta)  # [T_out, T_in, E]
  jac = np.abs(np.asarray(jac)).sum(-1)
  for t_out in range(t):
    assert np.all(jac[t_out, t_out + 1 :] == 0), f"position {t_out} sees the future"
    assert jac[t_out, t_out] > 0


@pytest.mark.integration
@pytest.mark.parametrize("resident", [False, True])
def test_prefill_and_decode_with_memory_swaps_equal_full_forward(resident):
  """Decode steps take the chunk's memory explicitly, or read it resident in the cache
  (loaded once per chunk with load_memory); both equal the full forward."""
  params, cfg = _params()
  b, t, prompt = 2, 13, 5  # prompt ends mid-chunk; decode crosses two chunk boundaries
  tokens = jax.random.randint(jax.random.key(5), (b, t), 5, cfg.vocab_size)
  chunks = -(-t // cfg.memory.chunk_len)
  mem = _memory(params, cfg, b, chunks, mask_prob=0.2)
  full = _forward(params, cfg, tokens, mem)

  model = Transformer(cfg)
  cache = model.apply({"params": params}, b, 16, method=Transformer.init_cache)
  prefill_chunks = -(-prompt // cfg.memory.chunk_len)
  pre_mem = MemoryKV(
    mem.keys_LxBxCxRxKxMxD[:, :, :prefill_chunks],
    mem.values_LxBxCxRxKxMxD[:, :, :prefill_chunks],
    mem.mask_BxCxRxM[:, :prefill_chunks],
  )
  logits, cache = model.apply(
    {"params": params}, tokens[:, :prompt], cache, pre_mem, method=Transformer.step
  )
  outs = [logits]
  step = jax.jit(
    lambda p, tok, c, m: model.apply({"params": p}, tok, c, m, method=Transformer.step)
  )
  load = jax.jit(lambda p, c, m: model.apply({"params": p}, c, m, method=Transformer.load_memory))
  loaded = None
  for i in range(prompt, t):
    chunk = i // cfg.memory.chunk_len
    if resident:
      if chunk != loaded:  # a memory swap at the chunk boundary
        cache, loaded = load(params, cache, mem.chunk(chunk)), chunk
      logits, cache = step(params, tokens[:, i : i + 1], cache, None)
    else:
      logits, cache = step(params, tokens[:, i : i + 1], cache, mem.chunk(chunk))
    outs.append(logits)
  cached = jnp.concatenate(outs, axis=1)
  # Same float32 math in a different association order (cache buffers, padding): 1e-5.
  np.testing.assert_allclose(np.asarray(cached), np.asarray(full), rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_prefill_of_ragged_prompts_and_per_row_decode():
  params, cfg = _params()
  tokens = jax.random.randint(jax.random.key(6), (2, 9), 5, cfg.vocab_size)
  lengths = jnp.array([6, 3])
  model = Transformer(cfg)
  cache = model.apply({"params": params}, 2, 12, method=Transformer.init_cache)
  padded = jnp.where(jnp.arange(6)[None] < lengths[:, None], tokens[:, :6], 0)
  _, cache = model.apply(
    {"params": params}, padded, cache, lengths_B=lengths, method=Transformer.step
  )
  np.testing.assert_array_equal(np.asarray(cache.end_index_B), [6, 3])
  # Row 1 continues with its own token 3; its logits must equal its full forward at 3.
  nxt = jnp.stack([tokens[0, 6], tokens[1, 3]])[:, None]
  logits, cache = model.apply({"params": params}, nxt, cache, method=Transformer.step)
  full0 = _forward(params, cfg, tokens[:1, :7])
  full1 = _forward(params, cfg, tokens[1:, :4])
  np.testing.assert_allclose(
    np.asarray(logits[0, 0]), np.asarray(full0[0, 6]), rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    np.asarray(logits[1, 0]), np.asarray(full1[0, 3]), rtol=1e-5, atol=1e-5
  )


@pytest.mark.integration
def test_sink_is_constant_and_matches_reference_encoding():
  """The <ref> sink's K/V equals slot 0 of every reference encoding run by ``encode``.

  ``encode`` runs ``[<ref>, r_1 … r_N]`` causally from position 0, so its slot 0 sees only
  itself; its K/V are read here from each block's ``qkv`` output (RoPE at position 0 applied
  explicitly) for two different references, and must equal ``sink_kv`` and the cache slot 0.
  """
  params, cfg = _params()
  model = Transformer(cfg)
  sink_k, sink_v = model.apply({"params": params}, method=Transformer.sink_kv)
  assert sink_k.shape == (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
  refs = jnp.asarray(
    np.random.default_rng(3).integers(5, cfg.vocab_size, (2, cfg.memory.ref_len)), jnp.int32
  )
  seen = []

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if isinstance(context.module, layers.Block) and context.method_name == "qkv":
      seen.append(out)
    return out

  with nn.intercept_methods(record):
    model.apply({"params": params}, refs, method=Transformer.encode)
  depth = cfg.memory.encode_depth
  assert len(seen) == depth
  pos0 = jnp.zeros((2, 1), jnp.int32)
  for layer, (_, k, v) in enumerate(seen):
    k0 = layers.apply_rope(k[:, :1], pos0, cfg.rope_base)[:, 0]
    for row in range(2):  # the same for both references: a function of the params only
      np.testing.assert_allclose(
        np.asarray(k0[row]), np.asarray(sink_k[layer]), rtol=1e-6, atol=1e-6
      )
      np.testing.assert_allclose(
        np.asarray(v[row, 0]), np.asarray(sink_v[layer]), rtol=1e-6, atol=1e-6
      )
  cache = model.apply({"params": params}, 1, 4, method=Transformer.init_cache)
  np.testing.assert_array_equal(np.asarray(cache.k_LxBxSxKxD[:, 0, 0]), np.asarray(sink_k))


def _plain_attention(q_BxTxHxD, k_BxSxKxD, v_BxSxKxD, mask_TxS):
  """Textbook softmax attention with grouped KV heads; no memory, no chunking."""
  group = q_BxTxHxD.shape[2] // k_BxSxKxD.shape[2]
  k = jnp.repeat(k_BxSxKxD, group, axis=2)
  v = jnp.repeat(v_BxSxKxD, group, axis=2)
  logits = jnp.einsum("bthd,bshd->bhts", q_BxTxHxD, k) / np.sqrt(q_BxTxHxD.shape[-1])
  logits = jnp.where(mask_TxS[None, None], logits, -jnp.inf)
  return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.integration
def test_memory_positions_match_an_explicit_sequence():
  """``[<ref>, r_1..r_n, <s>, x_1, …]`` at positions ``[0, 1..n, ref_len+1, …]`` run as ONE
  plain causal sequence equals the model reading r as its memory (DESIGN.md §2).

  One reference of n = ref_len tokens, all kept (tokens_per_head = ref_len), serves every
  chunk. In a memory layer the context sees the sink, the n memory tokens and its causal
  past; in a plain layer only the sink and its past. The reference tokens themselves
  attend causally among ``[<ref>, r]``, as ``encode`` runs them.
  """
  n, t = 6, 8
  cfg = ModelConfig(
    vocab_size=97,
    num_layers=3,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    embed_dim=32,
    mlp_dim=64,
    init_std=0.3,
    memory=MemoryConfig(
      memory_layers=(0, 2), tokens_per_head=n, refs_per_chunk=1, chunk_len=4, ref_len=n
    ),
  )
  params = nn.meta.unbox(
    Transformer(cfg).init(jax.random.key(5), jnp.zeros((1, t), jnp.int32))["params"]
  )
  rng = np.random.default_rng(11)
  ref = jnp.asarray(rng.integers(5, cfg.vocab_size, (1, n)), jnp.int32)
  ctx = jnp.asarray(
    np.concatenate([[cfg.bos_id], rng.integers(5, cfg.vocab_size, t - 1)])[None], jnp.int32
  )
  chunks = t // cfg.memory.chunk_len
  enc = encode_references(params, cfg, ref, jnp.asarray([n], jnp.int32))
  memory = to_memory_kv(enc, jnp.zeros((1, chunks, 1), jnp.int32), jnp.ones((1, chunks, 1), bool))
  got = _forward(params, cfg, ctx, memory)

  seq = jnp.concatenate([jnp.asarray([[cfg.ref_id]], jnp.int32), ref, ctx], axis=1)
  pos = jnp.asarray(np.concatenate([np.arange(n + 1), cfg.memory.ref_len + 1 + np.arange(t)])[None])
  causal = np.tril(np.ones((1 + n + t, 1 + n + t), bool))
  blind = causal.copy()
  blind[1 + n :, 1 : 1 + n] = False  # plain layers: the context does not see r

  def hand_forward(model):
    x = model.embed(seq)
    for i, block in enumerate(model.blocks):
      q, k, v = block.qkv(x)
      q = layers.apply_rope(q, pos, cfg.rope_base)
      k = layers.apply_rope(k, pos, cfg.rope_base)
      mask = causal if cfg.is_memory_layer(i) else blind
      x = block.finish(x, _plain_attention(q, k, v, jnp.asarray(mask)))
    return model._logits(x)[:, 1 + n :]

  want = Transformer(cfg).apply({"params": params}, method=hand_forward)
  # float32; the model splits the softmax into memory and context parts (reassociation).
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-5, atol=2e-5)
  without = _forward(params, cfg, ctx)
  assert np.abs(np.asarray(without) - np.asarray(want)).max() > 1e-2, "memory must matter here"


def test_flat_attention_impl_gives_the_same_model():
  params, cfg = _params()
  flat_cfg = cfg.__class__(**{**cfg.__dict__, "attention_impl": "flat"})
  tokens = jax.random.randint(jax.random.key(7), (2, 10), 5, cfg.vocab_size)
  mem = _memory(params, cfg, 2, 3)
  np.testing.assert_allclose(
    np.asarray(_forward(params, flat_cfg, tokens, mem)),
    np.asarray(_forward(params, cfg, tokens, mem)),
    rtol=1e-5,
    atol=1e-5,
  )


@pytest.mark.parametrize("scan", [False, True])
def test_exit_logits_are_the_model_cut_after_its_last_memory_layer(scan):
  """``return_exit_logits`` reads the final norm and head after the last memory layer:
  the same as a separately built model of just those layers (layers 0-1 of 3 here),
  run on the same params; the full logits are unchanged. Scanned params give the same."""
  params, cfg = _params()
  tokens = jax.random.randint(jax.random.key(4), (2, 8), 5, cfg.vocab_size)
  mem = _memory(params, cfg, 2, 2)
  cut_cfg = dataclasses.replace(cfg, num_layers=max(cfg.memory.memory_layers) + 1)
  cut_params = {k: v for k, v in params.items() if k != "layer_2"}
  want = _forward(cut_params, cut_cfg, tokens, mem)
  run_cfg = dataclasses.replace(cfg, scan_layers=scan)
  run_params = stack.scan_params(params, run_cfg) if scan else params
  logits, exit_logits = Transformer(run_cfg).apply(
    {"params": run_params}, tokens, mem, return_exit_logits=True
  )
  # float32; a scan reassociates nothing, but stacking may change XLA's fusion order.
  np.testing.assert_allclose(np.asarray(exit_logits), np.asarray(want), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    np.asarray(logits), np.asarray(_forward(params, cfg, tokens, mem)), rtol=1e-5, atol=1e-5
  )
  assert np.abs(np.asarray(exit_logits) - np.asarray(logits)).max() > 1e-2
