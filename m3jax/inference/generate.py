"""Batched generation with explicit memory: chunked prefill, then KV-cache decoding with
a memory refresh every ``chunk_len`` tokens (paper §3.1, SPEC §1.6).

Which memory serves which token (the rule, per row, counted from the row's context start
where ``<s>`` is index 0; L = chunk_len, P = the row's prompt length incl. ``<s>``):

* chunk c covers context indices [c·L, (c+1)·L); the row has ceil(P/L) prompt chunks;
* a prompt chunk c retrieves with its own prompt text (the last one may be partial);
* a later chunk c retrieves with the full text of chunk c-1 (the last L tokens, prompt
  and generated mixed); for c = ceil(P/L) this is the query of the last prompt chunk when
  P is a multiple of L, so the first decoded chunk simply **inherits** the last prompt
  chunk's memories (§7.5) and no retrieval happens;
* rows of different prompt lengths therefore change memory at different steps: the loop
  runs until the first row completes its query chunk, retrieves for the rows that did,
  and swaps only their slice of the resident memory.

Speed (DESIGN.md §5): the decode steps between two memory swaps run inside one jitted
``while_loop`` with the cache donated (no host sync per token); the current chunk's
memories are resident in the KV cache (``Transformer.load_memory``, written once per swap),
so a decode step costs what a memory-free one does; the retrieval for the next chunk runs on the host while the
device executes the last step of the current chunk (JAX async dispatch); the sampled
tokens are fetched once per swap, not once per token.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.inference.sampling import SamplingConfig, sample
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer
from m3jax.task import ChunkQuery, MemoryFn, chunk_query_tokens, gather_memory


@dataclasses.dataclass
class GenerationResult:
  """tokens: generated ids per row (up to and excluding eos). memory_ids: per row,
  {chunk index: retrieved ids [R]} for every chunk that got memory. Timings in seconds
  (``time_to_first_token`` includes retrieval for the prompt and the prefill)."""

  tokens: list
  memory_ids: list
  time_to_first_token: float
  decode_seconds: float
  num_decode_steps: int
  num_swaps: int


def _bucket(n: int, cap: int) -> int:
  """Pads retrieval batches to powers of two (bounded recompiles of the swap)."""
  b = 1
  while b < n:
    b *= 2
  return min(b, cap)


class Generator:
  """Holds the jitted prefill / decode / swap functions for one model config.

  ``memory_fn=None`` decodes without memory. Create one per (config, sampling) and reuse
  it: the jitted functions are cached on the instance.
  """

  def __init__(
    self,
    cfg: ModelConfig,
    params,
    *,
    memory_fn: MemoryFn | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    stop_at_eos: bool = True,
  ):
    self.cfg, self.params, self.memory_fn = cfg, params, memory_fn
    self.sampling, self.stop_at_eos = sampling, stop_at_eos
    self.model = Transformer(cfg)
    self._prefill = jax.jit(self._prefill_impl, static_argnames=("max_len",))
    self._decode = jax.jit(self._decode_impl, donate_argnames=("cache", "out_BxN"))
    self._swap = jax.jit(self._swap_impl, donate_argnames=("cache", "memory"))

  # ----------------------------------------------------------------------------- device
  def _prefill_impl(self, params, tokens_BxT, lengths_B, memory, decode_memory, rng, *, max_len):
    b = tokens_BxT.shape[0]
    cache = self.model.apply({"params": params}, b, max_len, method=Transformer.init_cache)
    logits, cache = self.model.apply(
      {"params": params}, tokens_BxT, cache, memory, lengths_B=lengths_B, method=Transformer.step
    )
    if decode_memory is not None:  # resident in the cache: decode steps read it for free
      cache = self.model.apply(
        {"params": params}, cache, decode_memory, method=Transformer.load_memory
      )
    last_BxV = jnp.take_along_axis(logits, (lengths_B - 1)[:, None, None], 1)[:, 0]
    first_B = sample(last_BxV, rng, self.sampling)
    return first_B, cache

  def _decode_impl(self, params, cache, token_B, done_B, rng, out_BxN, col, n_steps):
    """Feeds ``token_B`` and samples up to ``n_steps`` tokens into out columns col+1….

    The current chunk's memories are resident in the cache (``Transformer.load_memory``),
    so a decode step is plain attention over [sink, memories, context]: no per-token
    memory kernels or transfers.

    Stops early when every row is done. Returns the number of steps taken."""
    eos, pad = self.cfg.eos_id, self.cfg.pad_id

    def cond(carry):
      i, _, _, done, _, _ = carry
      return (i < n_steps) & ~jnp.all(done)

    def body(carry):
      i, cache, token, done, rng, out = carry
      rng, sub = jax.random.split(rng)
      logits, cache = self.model.apply(
        {"params": params}, token[:, None], cache, method=Transformer.step
      )
      nxt = jnp.where(done, pad, sample(logits[:, 0], sub, self.sampling))
      if self.stop_at_eos:
        done = done | (nxt == eos)
      out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], col + 1 + i, 1)
      return i + 1, cache, nxt, done, rng, out

    i, cache, token, done, rng, out = jax.lax.while_loop(
      cond, body, (jnp.int32(0), cache, token_B, done_B, rng, out_BxN)
    )
    return cache, token, done, rng, out, i

  def _swap_impl(self, params, cache, memory, new, rows_n):
    """Replaces rows ``rows_n`` (duplicates allowed, same data) of the current memory and
    reloads it into the cache; earlier tokens' K/V are untouched."""
    memory = jax.tree.map(
      lambda old, x: (
        old.at[:, rows_n].set(x.astype(old.dtype)) if old.ndim == 7 else old.at[rows_n].set(x)
      ),
      memory,
      new,
    )
    cache = self.model.apply({"params": params}, cache, memory, method=Transformer.load_memory)
    return cache, memory

  def _with(self, memory_fn) -> "Generator":
    """A shallow copy with another memory source that shares the compiled functions."""
    other = object.__new__(Generator)
    other.__dict__.update(self.__dict__)
    other.memory_fn = memory_fn
    return other

  # ----------------------------------------------------------------------------- host
  def _retrieve(self, queries: list[ChunkQuery], cap: int):
    """Calls memory_fn on a batch padded to a bucket size; returns (memory, ids)."""
    n = len(queries)
    padded = queries + [queries[-1]] * (_bucket(n, cap) - n)
    mem, ids = self.memory_fn(padded)
    ids = np.asarray(ids)
    if mem.mask_BxCxRxM.shape[:2] != (len(padded), 1):
      raise ValueError(
        f"memory_fn must return a MemoryKV of batch {len(padded)} and one "
        f"chunk, got mask shape {mem.mask_BxCxRxM.shape}"
      )
    return mem, ids, len(padded)

  def generate(
    self,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    rng=None,
    memory_fn: MemoryFn | None | str = "default",
  ) -> GenerationResult:
    """Generates up to ``max_new_tokens`` per prompt (prompts start with ``<s>``; it is
    prepended when missing). ``memory_fn`` overrides the instance's source for this call
    (the compiled functions are shared, so one Generator serves every condition)."""
    if not isinstance(memory_fn, str):
      return self._with(memory_fn).generate(prompts, max_new_tokens, rng=rng)
    cfg, L = self.cfg, self.cfg.memory.chunk_len
    if not prompts:
      raise ValueError("generate() needs at least one prompt")
    if max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompts = [np.asarray(p, np.int32) for p in prompts]
    prompts = [
      p if p.size and p[0] == cfg.bos_id else np.concatenate([[cfg.bos_id], p]).astype(np.int32)
      for p in prompts
    ]
    rng = jax.random.key(0) if rng is None else rng
    b = len(prompts)
    lengths = np.array([len(p) for p in prompts], np.int32)
    t_pad = -(-int(lengths.max()) // L) * L
    tokens = np.full((b, t_pad), cfg.pad_id, np.int32)
    for i, p in enumerate(prompts):
      tokens[i, : len(p)] = p
    max_len = t_pad + max_new_tokens
    memory_ids = [dict() for _ in range(b)]

    t0 = time.perf_counter()
    prefill_mem = decode_mem = None
    if self.memory_fn is not None:
      prefill_mem, decode_mem = self._prompt_memories(prompts, lengths, t_pad, memory_ids)
    rng, sub = jax.random.split(rng)
    first_B, cache = self._prefill(
      self.params,
      jnp.asarray(tokens),
      jnp.asarray(lengths),
      prefill_mem,
      decode_mem,
      sub,
      max_len=max_len,
    )
    first_B.block_until_ready()
    ttft = time.perf_counter() - t0
    del prefill_mem

    t1 = time.perf_counter()
    out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first_B)
    eos_first = (first_B == cfg.eos_id) if self.stop_at_eos else jnp.zeros((b,), bool)
    token, done = first_B, eos_first
    n_gen, swaps = 1, 0
    loaded = lengths // L  # chunk whose memory is resident, per row
    done_host = np.asarray(done)
    out_host = None
    while n_gen < max_new_tokens and not done_host.all():
      rem = max_new_tokens - n_gen
      pos = lengths + n_gen - 1  # context index of the token fed next
      if self.memory_fn is None:
        n = rem
      else:
        steps = np.where(done_host, np.iinfo(np.int32).max, (loaded + 1) * L - pos)
        n = int(min(steps.min(), rem))
      run = n if (self.memory_fn is None or n == rem) else n - 1
      if run > 0:
        cache, token, done, rng, out, taken = self._decode(
          self.params, cache, token, done, rng, out, n_gen - 1, run
        )
        taken = int(taken)
        n_gen += taken
        if taken < run:  # every row hit eos
          break
      if n == rem:
        continue
      # The query chunks of the rows at a boundary are complete: dispatch the last step
      # with the old memory (async), retrieve on the host meanwhile, then swap rows.
      out_host, done_host = np.asarray(out), np.asarray(done)
      pos = lengths + n_gen - 1
      rows = [r for r in range(b) if not done_host[r] and pos[r] == (loaded[r] + 1) * L - 1]
      cache, token, done, rng, out, _ = self._decode(
        self.params, cache, token, done, rng, out, n_gen - 1, 1
      )
      n_gen += 1
      queries = []
      for r in rows:
        ctx = np.concatenate([prompts[r], out_host[r, : n_gen - 1]])
        queries.append(
          ChunkQuery(
            r, int(loaded[r]) + 1, chunk_query_tokens(ctx, int(lengths[r]), int(loaded[r]) + 1, L)
          )
        )
      done_host = np.asarray(done)
      if not queries:  # the rows at the boundary just finished
        continue
      mem, ids, m = self._retrieve(queries, b)
      rows_m = np.array(rows + [rows[-1]] * (m - len(rows)), np.int32)
      cache, decode_mem = self._swap(self.params, cache, decode_mem, mem, jnp.asarray(rows_m))
      for q, i in zip(queries, ids):
        memory_ids[q.row][q.chunk] = np.asarray(i)
      loaded[rows] += 1
      swaps += 1
      done_host = np.asarray(done)
    out_host = np.asarray(out)
    decode_s = time.perf_counter() - t1
    gen = []
    for r in range(b):
      row = out_host[r]
      stop = np.nonzero(row == cfg.eos_id)[0] if self.stop_at_eos else []
      gen.append(row[: stop[0]] if len(stop) else row[:n_gen])
    return GenerationResult(gen, memory_ids, ttft, decode_s, n_gen - 1, swaps)

  def _prompt_memories(self, prompts, lengths, t_pad, memory_ids):
    """Retrieves every prompt chunk once; returns (prefill MemoryKV [L,B,C,…], the
    decode memory = each row's last prompt chunk's, [L,B,1,…])."""
    L = self.cfg.memory.chunk_len
    b, c = len(prompts), t_pad // L
    plan = [
      [
        ChunkQuery(r, ch, chunk_query_tokens(p, int(lengths[r]), ch, L))
        for ch in range(-(-int(lengths[r]) // L))
      ]
      for r, p in enumerate(prompts)
    ]
    got = gather_memory(self.memory_fn, [row + [None] * (c - len(row)) for row in plan])
    for q, i in zip(got.queries, got.ids):
      memory_ids[q.row][q.chunk] = np.asarray(i)
    for r in range(b):
      if lengths[r] % L == 0:  # the first decoded chunk inherits (same query)
        memory_ids[r][int(lengths[r]) // L] = memory_ids[r][int(lengths[r]) // L - 1]
    last = got.index_BxC[np.arange(b), -(-lengths // L) - 1]
    return got.memory, got.per_query.arrange(jnp.asarray(last[:, None]))


def generate(
  cfg: ModelConfig,
  params,
  prompts,
  max_new_tokens: int,
  *,
  memory_fn: MemoryFn | None = None,
  sampling: SamplingConfig = SamplingConfig(),
  rng=None,
) -> GenerationResult:
  """One-shot convenience wrapper (compiles each call; reuse a Generator in loops)."""
  return Generator(cfg, params, memory_fn=memory_fn, sampling=sampling).generate(
    prompts, max_new_tokens, rng=rng
  )
