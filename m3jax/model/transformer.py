"""The Memory³ decoder: a plain LLaMA stack whose memory layers also read MemoryKV.

The network knows nothing about retrieval. It takes an optional ``MemoryKV`` and an
optional explicit ``Cache`` and returns logits (and the new cache): gemma-style, with
no state hidden in Flax collections.

Layers run unrolled (a Python loop over ``layer_{i}`` submodules: the reference) or,
with ``cfg.scan_layers``, as scans over stacked parameters (m3jax.model.stack); every
pass (forward, decode, encode, sink) goes through ``_run_layers``, so both layouts
share one body per pass. ``cfg.remat_policy`` wraps each layer of the forward and the
encoding in ``jax.checkpoint``.

Position layout (DESIGN.md §2): ``<ref>`` sink at RoPE position 0, memories in the
parallel interval 1..ref_len, the context (starting with ``<s>``) at ref_len+1, …
"""

from __future__ import annotations

import functools

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from m3jax import axes
from m3jax.model.joint_attention import (
  Causal,
  impl_for_cache,
  impl_for_short_causal,
  joint_attention,
)
from m3jax.model.memory_kv import MemoryKV
from m3jax.model import layers, stack
from m3jax.model.config import ModelConfig


@flax.struct.dataclass
class Cache:
  """KV cache: slot 0 the ``<ref>`` sink, slots 1..N the resident memories of the current
  chunk (N = R·M; memory layers only, loaded by ``load_memory``), then context token i in
  slot 1 + N + i. Decoding with resident memories is plain attention over the cache: no
  extra kernels per token, the memory is written once per chunk.
  """

  k_LxBxSxKxD: jax.Array
  v_LxBxSxKxD: jax.Array
  end_index_B: jax.Array  # context tokens written so far, per row
  mem_mask_BxN: jax.Array  # which resident memory slots hold a real token
  # Smeared keys only (cfg.smeared_keys): each layer's raw keys of each row's last W =
  # cfg.smear_width written tokens (oldest first), which the next tokens' keys mix in.
  # None otherwise.
  k_last_LxBxWxKxD: jax.Array | None = None

  @property
  def memory_slots(self) -> int:
    return self.mem_mask_BxN.shape[1]

  @property
  def max_len(self) -> int:
    return self.k_LxBxSxKxD.shape[2] - 1 - self.memory_slots


@flax.struct.dataclass
class EncodedLayers:
  """Per memory layer, everything token selection needs (reference slot 0 excluded).

  k_LxBxNxKxD: keys rotated at reference positions 1..N (what gets stored).
  v_LxBxNxKxD: values.
  q_raw_LxBxNxHxD, k_raw_LxBxNxKxD: projections without RoPE (keys smeared when
  ``cfg.smeared_keys``, as attention sees them), for selection scores.
  """

  k_LxBxNxKxD: jax.Array
  v_LxBxNxKxD: jax.Array
  q_raw_LxBxNxHxD: jax.Array
  k_raw_LxBxNxKxD: jax.Array


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    self.embed = layers.Embed(c)
    if c.scan_layers:
      self.stacks = [
        self.param(stack.stack_name(a, b), stack.stacked_init(c, b - a))
        for a, b, _ in stack.layer_runs(c)
      ]
    else:
      self.blocks = [layers.Block(c, name=f"layer_{i}") for i in range(c.num_layers)]
    self.final_norm = layers.RMSNorm(c.norm_eps, c.param_dtype)
    if c.memory.reference_keys:  # zeros: uniform pooling, gate 0 (the paper's keys)
      lk, kd = (c.memory.num_memory_layers, c.num_kv_heads), (axes.KV_HEADS, axes.HEAD_DIM)
      self.ref_pool = self.param(
        "ref_pool",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, *kd)),
        (*lk, c.head_dim),
        c.param_dtype,
      )
      self.ref_gate = self.param(
        "ref_gate",
        nn.with_logical_partitioning(nn.initializers.zeros, (None, axes.KV_HEADS)),
        lk,
        c.param_dtype,
      )
    if not c.tie_embeddings:
      self.lm_head = self.param(
        "lm_head",
        nn.with_logical_partitioning(nn.initializers.normal(c.init_std), (axes.EMBED, axes.VOCAB)),
        (c.embed_dim, c.vocab_size),
        c.param_dtype,
      )

  # ----------------------------------------------------------------------------- helpers
  def _logits(self, x_BxTxE):
    x = self.final_norm(x_BxTxE)
    if self.cfg.tie_embeddings:
      logits = self.embed.attend(x)
    else:
      logits = x @ self.lm_head.astype(self.cfg.dtype)
    return nn.with_logical_constraint(
      logits.astype(jnp.float32), (axes.BATCH, axes.LENGTH, axes.VOCAB)
    )

  def _memory_slice(self, memory: MemoryKV | None, start: int, stop: int):
    """(keys, values) of memory layers start..stop-1 (a run of memory layers), or None."""
    if memory is None:
      return None
    j = self.cfg.memory.memory_layers.index(start)
    return (
      memory.keys_LxBxCxRxKxMxD[j : j + stop - start],
      memory.values_LxBxCxRxKxMxD[j : j + stop - start],
    )

  def _block(self, layer: int):
    """The Block of one layer (in a stack: bound to its slice of the stacked params)."""
    if not self.cfg.scan_layers:
      return self.blocks[layer]
    for r, (a, b, _) in enumerate(stack.layer_runs(self.cfg)):
      if a <= layer < b:
        return stack.bind_block(
          self.cfg, jax.tree_util.tree_map(lambda w, row=layer - a: w[row], self.stacks[r])
        )
    raise IndexError(layer)

  def _run_layers(self, body, carry, layer_xs, *, stop: int | None = None, remat: bool = False):
    """Runs ``body(block, carry, xs_i, is_memory=…) -> (carry, y_i)`` over layers [0, stop).

    ``layer_xs(start, stop, is_memory)`` gives a run's per-layer inputs stacked on a
    leading axis. Unrolled: a Python loop over the ``layer_{i}`` Blocks; scanned: one
    ``lax.scan`` per run. With ``remat``, each layer sits under ``jax.checkpoint`` with
    ``cfg.remat_policy``. Returns (carry, [ys of each run, stacked over its layers]).
    """
    c = self.cfg
    stop = c.num_layers if stop is None else stop
    use_ckpt, policy = stack.remat_policy(c.remat_policy) if remat else (False, None)
    outs = []
    for r, (a, b, is_mem) in enumerate(stack.layer_runs(c)):
      b = min(b, stop)
      if a >= b:
        break
      xs = layer_xs(a, b, is_mem)
      fn = functools.partial(body, is_memory=is_mem)
      if c.scan_layers:
        params = jax.tree_util.tree_map(lambda w, n=b - a: w[:n], self.stacks[r])

        def scan_body(carry, p_and_x, fn=fn):
          return fn(stack.bind_block(c, p_and_x[0]), carry, p_and_x[1])

        if use_ckpt:
          scan_body = jax.checkpoint(scan_body, policy=policy, prevent_cse=False)
        carry, ys = jax.lax.scan(scan_body, carry, (params, xs))
      else:
        layer_fn = nn.remat(fn, policy=policy) if use_ckpt else fn
        ys = []
        for i in range(a, b):
          carry, y = layer_fn(
            self.blocks[i], carry, jax.tree_util.tree_map(lambda v, j=i - a: v[j], xs)
          )
          ys.append(y)
        ys = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *ys)
      outs.append(ys)
    return carry, outs

  def sink_kv(self):
    """Per-layer K/V of the ``<ref>`` sink: [L, K, D] each, a function of the params only.

    ``<ref>`` at position 0 attends only to itself, in every layer, so its keys and
    values never depend on any input; it is never stored in a memory bank.
    """
    c = self.cfg
    x = self.embed(jnp.full((1, 1), c.ref_id, jnp.int32))
    pos = jnp.zeros((1, 1), jnp.int32)

    def body(block, x, _, *, is_memory):
      del is_memory
      q, k, v = block.qkv(x)
      q, k = layers.apply_rope(q, pos, c.rope_base), layers.apply_rope(k, pos, c.rope_base)
      o = joint_attention(q, k, v, jnp.ones((1, 1, 1), bool))
      return block.finish(x, o), (k[0, 0], v[0, 0])

    _, outs = self._run_layers(body, x, lambda a, b, m: None)
    ks, vs = zip(*outs)
    return jnp.concatenate(ks), jnp.concatenate(vs)

  # ----------------------------------------------------------------------------- forward
  def __call__(
    self,
    tokens_BxT,
    memory: MemoryKV | None = None,
    *,
    return_memory_mass: bool = False,
    return_exit_logits: bool = False,
  ):
    """Full forward of a context that starts at context index 0 (training / scoring).

    Returns logits_BxTxV, and with ``return_memory_mass`` also the attention mass on
    memories per memory layer, [Lm, B, T, H] (that needs the dense softmax: a probe,
    never the train step). ``return_exit_logits`` returns (logits, exit_logits_BxTxV):
    the same final norm and output head read after the last memory layer
    (``train.memory_exit_loss``); not with ``return_memory_mass``.
    """
    c = self.cfg
    if return_exit_logits and (return_memory_mass or not c.memory.memory_layers):
      raise ValueError("return_exit_logits needs memory layers and no return_memory_mass")
    b, t = tokens_BxT.shape
    sink_k, sink_v = self.sink_kv()
    pos_BxT = jnp.broadcast_to(c.memory.context_offset + jnp.arange(t), (b, t))
    # Slot 0 is the sink (visible to all); slot s >= 1 is context token s - 1.
    mask = Causal(offset=1)
    mem_mask = None if memory is None else memory.mask_BxCxRxM
    x = nn.with_logical_constraint(self.embed(tokens_BxT), (axes.BATCH, axes.LENGTH, axes.EMBED))

    def layer_xs(start, stop, is_memory):
      mem = self._memory_slice(memory, start, stop) if is_memory else None
      return sink_k[start:stop], sink_v[start:stop], mem

    def body(block, x, xs, *, is_memory):
      sk, sv, mem_kv = xs
      q, k, v = block.qkv(x)
      q = layers.apply_rope(q, pos_BxT, c.rope_base)
      k = layers.apply_rope(k, pos_BxT, c.rope_base)
      k = jnp.concatenate([jnp.broadcast_to(sk, (b, 1) + k.shape[2:]).astype(k.dtype), k], 1)
      v = jnp.concatenate([jnp.broadcast_to(sv, (b, 1) + v.shape[2:]).astype(v.dtype), v], 1)
      mem = None if mem_kv is None else (*mem_kv, mem_mask)
      mass = None
      if return_memory_mass and mem is not None:  # the mass needs the dense softmax
        o, mass = joint_attention(
          q, k, v, mask, mem, chunk_len=c.memory.chunk_len, return_memory_mass=True
        )
      else:
        o = joint_attention(q, k, v, mask, mem, chunk_len=c.memory.chunk_len, impl=c.attention_impl)
      x = block.finish(x, o)
      if return_exit_logits:  # every memory layer's output; the last one is read
        return x, (x if is_memory else None)
      return x, mass

    x, outs = self._run_layers(body, x, layer_xs, remat=True)
    logits = self._logits(x)
    if return_exit_logits:
      last_run = [y for y in outs if y is not None][-1]  # [layers of the run, B, T, E]
      return logits, self._logits(last_run[-1])
    if return_memory_mass:
      masses = [m for m in outs if m is not None]
      mass = jnp.concatenate(masses) if masses else jnp.zeros((0, b, t, c.num_heads))
      return logits, mass
    return logits

  # ----------------------------------------------------------------------------- decoding
  def init_cache(self, batch: int, max_len: int) -> Cache:
    """An empty cache for ``max_len`` context tokens: sink in slot 0, no memory loaded."""
    c = self.cfg
    n = (c.memory.refs_per_chunk * c.memory.tokens_per_head) if c.memory.memory_layers else 0
    sink_k, sink_v = self.sink_kv()
    shape = (c.num_layers, batch, 1 + n + max_len, c.num_kv_heads, c.head_dim)
    k = jnp.zeros(shape, c.dtype).at[:, :, 0].set(sink_k[:, None].astype(c.dtype))
    v = jnp.zeros(shape, c.dtype).at[:, :, 0].set(sink_v[:, None].astype(c.dtype))
    k_last = None
    if c.smeared_keys:
      shape = (c.num_layers, batch, c.smear_width, c.num_kv_heads, c.head_dim)
      k_last = jnp.zeros(shape, c.dtype)
    return Cache(k, v, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch, n), bool), k_last)

  def load_memory(self, cache: Cache, memory: MemoryKV) -> Cache:
    """Makes ``memory`` (C == 1) the resident memory that later ``step`` calls read.

    Earlier context K/V are untouched: only queries after the swap see the new memories.
    """
    c = self.cfg
    lm, b, chunks, r, kv, m, d = memory.keys_LxBxCxRxKxMxD.shape
    if chunks != 1 or r * m != cache.memory_slots:
      raise ValueError(
        f"load_memory takes one chunk of {cache.memory_slots} slots, got {chunks} chunks of {r}x{m}"
      )
    flat = lambda x: x[:, :, 0].transpose(0, 1, 2, 4, 3, 5).reshape(lm, b, r * m, kv, d)
    layers_L = jnp.asarray(c.memory.memory_layers)
    put = lambda buf, x: buf.at[layers_L, :, 1 : 1 + r * m].set(flat(x).astype(buf.dtype))
    return cache.replace(
      k_LxBxSxKxD=put(cache.k_LxBxSxKxD, memory.keys_LxBxCxRxKxMxD),
      v_LxBxSxKxD=put(cache.v_LxBxSxKxD, memory.values_LxBxCxRxKxMxD),
      mem_mask_BxN=memory.mask_BxCxRxM[:, 0].reshape(b, r * m),
    )

  def step(self, tokens_BxT, cache: Cache, memory: MemoryKV | None = None, *, lengths_B=None):
    """Prefill (T > 1) or decode (T == 1) from each row's ``end_index``.

    ``memory`` chunk c serves tokens c*chunk_len… of this call (C == 1: all of them), so
    a prefill starts at a chunk boundary and a decode step passes the current chunk's
    memory. Without ``memory``, memory layers read the cache's resident memory (see
    ``load_memory``; none loaded = no memory). ``lengths_B`` marks right-padded prompts:
    only that many tokens count as written. Returns (logits_BxTxV, new cache).
    """
    c = self.cfg
    b, t = tokens_BxT.shape
    n = cache.memory_slots
    start_B = cache.end_index_B
    idx_BxT = start_B[:, None] + jnp.arange(t)[None]
    pos_BxT = c.memory.context_offset + idx_BxT
    s = cache.k_LxBxSxKxD.shape[2]
    # Sink and memory slots get key index -1 (visible to every query), context s-1-n.
    key_idx_S = jnp.concatenate([jnp.full((1 + n,), -1), jnp.arange(s - 1 - n)])
    is_mem_S = (jnp.arange(s) >= 1) & (jnp.arange(s) < 1 + n)
    mask_BxTxS = key_idx_S[None, None, :] <= idx_BxT[:, :, None]
    plain_BxTxS = mask_BxTxS & ~is_mem_S
    mem_pad_BxS = jnp.concatenate(
      [jnp.ones((b, 1), bool), cache.mem_mask_BxN, jnp.ones((b, s - 1 - n), bool)], axis=1
    )
    resident_BxTxS = mask_BxTxS & mem_pad_BxS[:, None, :]
    # Scatter the new K/V into the full [L, B, S, K, D] buffers (carried through the
    # layers): with the cache donated, XLA updates them in place.
    rows_Bx1 = jnp.arange(b)[:, None]
    slot_BxT = idx_BxT + 1 + n
    mem_mask = None if memory is None else memory.mask_BxCxRxM
    impl = impl_for_cache(c.attention_impl) if t > 1 else "dense"
    written_B = jnp.full((b,), t, jnp.int32) if lengths_B is None else lengths_B
    smeared = cache.k_last_LxBxWxKxD is not None

    def layer_xs(start, stop, is_memory):
      mem = self._memory_slice(memory, start, stop) if is_memory else None
      last = cache.k_last_LxBxWxKxD[start:stop] if smeared else None
      return jnp.arange(start, stop), mem, last

    def body(block, carry, xs, *, is_memory):
      x, k_cache, v_cache = carry
      i, mem_kv, k_last_BxWxKxD = xs
      new_last = None
      if smeared:
        q, k_raw, v = block.attn.qkv(block.attn_norm(x))
        w = k_last_BxWxKxD.shape[1]
        ext_BxWTxKxD = layers.key_history(k_raw, w, k_last_BxWxKxD, has_before_B=start_B > 0)
        k = block.attn.smear_keys(ext_BxWTxKxD)
        # The last W keys written sit at written_B … written_B + W - 1 of the history.
        at_BxW = written_B[:, None] + jnp.arange(w)[None]
        new_last = ext_BxWTxKxD[jnp.arange(b)[:, None], at_BxW]
      else:
        q, k, v = block.qkv(x)
      q = layers.apply_rope(q, pos_BxT, c.rope_base)
      k = layers.apply_rope(k, pos_BxT, c.rope_base)
      k_cache = k_cache.at[i, rows_Bx1, slot_BxT].set(k.astype(k_cache.dtype), mode="drop")
      v_cache = v_cache.at[i, rows_Bx1, slot_BxT].set(v.astype(v_cache.dtype), mode="drop")
      reads_resident = memory is None and is_memory
      o = joint_attention(
        q,
        k_cache[i],
        v_cache[i],
        resident_BxTxS if reads_resident else plain_BxTxS,
        None if mem_kv is None else (*mem_kv, mem_mask),
        chunk_len=c.memory.chunk_len,
        impl=impl,
      )
      return (block.finish(x, o), k_cache, v_cache), new_last

    carry = (self.embed(tokens_BxT), cache.k_LxBxSxKxD, cache.v_LxBxSxKxD)
    (x, k_cache, v_cache), lasts = self._run_layers(body, carry, layer_xs)
    k_last = None
    if cache.k_last_LxBxWxKxD is not None:
      k_last = jnp.concatenate(lasts).astype(cache.k_last_LxBxWxKxD.dtype)
    new_cache = Cache(k_cache, v_cache, start_B + written_B, cache.mem_mask_BxN, k_last)
    return self._logits(x), new_cache

  # ----------------------------------------------------------------------------- encoding
  def reference_keys(self, k_raw_LxBxNxKxD, valid_BxN):
    """[L, B, K, D]: each reference's pooled key per memory layer and KV head
    (``model.memory.reference_keys``), g·Σ_t a_t·k_t, a = softmax_t(k_t·w / √D) over the
    reference's valid tokens; added to every memory key it keeps (at RoPE position 0)."""
    d = self.cfg.head_dim
    k = k_raw_LxBxNxKxD.astype(jnp.float32)
    w_LxKxD = self.ref_pool.astype(jnp.float32)
    logits_LxBxNxK = jnp.einsum("lbnkd,lkd->lbnk", k, w_LxKxD) * d**-0.5
    logits_LxBxNxK = jnp.where(valid_BxN[None, :, :, None], logits_LxBxNxK, -jnp.inf)
    a_LxBxNxK = jax.nn.softmax(logits_LxBxNxK, axis=2)
    a_LxBxNxK = jnp.where(valid_BxN[None, :, :, None], a_LxBxNxK, 0.0)  # empty: all 0
    pooled_LxBxKxD = jnp.einsum("lbnk,lbnkd->lbkd", a_LxBxNxK, k)
    gate_LxK = self.ref_gate.astype(jnp.float32)
    return (gate_LxK[:, None, :, None] * pooled_LxBxKxD).astype(k_raw_LxBxNxKxD.dtype)

  def encode(self, ref_tokens_BxN):
    """Runs ``[<ref>, r_1 … r_N]`` through the memory layers only (causal, positions 0..N).

    Right padding needs no mask here: causal attention keeps real tokens blind to it,
    and selection (m3jax.memory.sparsify) excludes it. Of the deepest memory layer only
    the projections run: nothing reads its attention or MLP.
    """
    c = self.cfg
    b, n = ref_tokens_BxN.shape
    tokens = jnp.concatenate([jnp.full((b, 1), c.ref_id, ref_tokens_BxN.dtype), ref_tokens_BxN], 1)
    pos = jnp.broadcast_to(jnp.arange(n + 1), (b, n + 1))
    depth = c.memory.encode_depth
    impl = impl_for_short_causal(c.attention_impl, n + 1)

    def projections(block, x):
      q_raw, k_raw, v = block.qkv(x)
      q = layers.apply_rope(q_raw, pos, c.rope_base)
      k = layers.apply_rope(k_raw, pos, c.rope_base)
      return q, k, v, (k[:, 1:], v[:, 1:], q_raw[:, 1:], k_raw[:, 1:])

    def body(block, x, _, *, is_memory):
      q, k, v, kept = projections(block, x)
      o = joint_attention(q, k, v, Causal(offset=0), impl=impl)
      return block.finish(x, o), kept if is_memory else None

    x, outs = self._run_layers(
      body, self.embed(tokens), lambda a, b, m: None, stop=depth - 1, remat=True
    )
    *_, last = projections(self._block(depth - 1), x)
    parts = [o for o in outs if o is not None] + [jax.tree_util.tree_map(lambda a: a[None], last)]
    return EncodedLayers(*[jnp.concatenate(p) for p in zip(*parts)])
