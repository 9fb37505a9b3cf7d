"""Memory attribution: which references an answer's tokens attend to (per memory layer).

Exact per-reference attention mass: the memory layers' queries and keys are captured
from one forward (flax ``capture_intermediates`` on ``Block.qkv``), and the joint softmax
of Eq. 4 ([<ref> sink] ∪ memories of the query's chunk ∪ causal context) is recomputed
with the probabilities kept per reference. Summed over references it equals the model's
own ``return_memory_mass`` (tested), so the split is faithful, not a proxy.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.model.memory_kv import MemoryKV
from m3jax.model import layers
from m3jax.model.config import ModelConfig
from m3jax.model.transformer import Transformer


@functools.partial(jax.jit, static_argnums=0)
def reference_mass(cfg: ModelConfig, params, tokens_BxT, memory: MemoryKV):
  """-> (per-reference mass [Lm, B, T, H, R], total memory mass [Lm, B, T, H]).

  Jitted once per shape (eagerly, each of its few hundred small ops compiled on its own
  took seconds per example)."""
  per_token, total = memory_token_mass(cfg, params, tokens_BxT, memory)
  return per_token.sum(-1), total


def memory_token_mass(cfg: ModelConfig, params, tokens_BxT, memory: MemoryKV):
  """-> (mass per memory slot [Lm, B, T, H, R, M], total memory mass [Lm, B, T, H]): the
  joint softmax's probability on each memory token, per query head."""
  model = Transformer(cfg)
  is_qkv = lambda mdl, name: name == "qkv" and isinstance(mdl, layers.Block)
  (_, total), state = model.apply(
    {"params": params},
    tokens_BxT,
    memory,
    return_memory_mass=True,
    capture_intermediates=is_qkv,
    mutable=["intermediates"],
  )
  sink_k, _ = model.apply({"params": params}, method=Transformer.sink_kv)
  b, t = tokens_BxT.shape
  L = cfg.memory.chunk_len
  pos = jnp.broadcast_to(cfg.memory.context_offset + jnp.arange(t), (b, t))
  chunk_T = jnp.minimum(jnp.arange(t) // L, memory.num_chunks - 1)
  causal = jnp.arange(t + 1)[None, :] - 1 <= jnp.arange(t)[:, None]  # [T, S]
  out = []
  for li, layer in enumerate(cfg.memory.memory_layers):
    # [-1]: the context call (sink_kv calls qkv first, on the <ref> token alone).
    q, k, _ = state["intermediates"][f"layer_{layer}"]["qkv"][-1]
    q = layers.apply_rope(q, pos, cfg.rope_base)
    k = layers.apply_rope(k, pos, cfg.rope_base)
    k = jnp.concatenate([jnp.broadcast_to(sink_k[layer], (b, 1) + k.shape[2:]), k], 1)
    kv, d = k.shape[2], q.shape[-1]
    g = q.shape[2] // kv
    q = (q * d**-0.5).reshape(b, t, kv, g, d).astype(jnp.float32)
    ctx = jnp.einsum("btkgd,bskd->btkgs", q, k.astype(jnp.float32))
    ctx = jnp.where(causal[None, :, None, None], ctx, -jnp.inf)
    mk, _, mmask = memory.layer(li)
    mk_T = mk[:, chunk_T].astype(jnp.float32)  # [B, T, R, K, M, D]
    mem = jnp.einsum("btkgd,btrkmd->btkgrm", q, mk_T)
    mem = jnp.where(mmask[:, chunk_T][:, :, None, None], mem, -jnp.inf)
    r, m = mem.shape[-2:]
    joint = jax.nn.softmax(jnp.concatenate([ctx, mem.reshape(b, t, kv, g, r * m)], -1), -1)
    out.append(joint[..., ctx.shape[-1] :].reshape(b, t, kv * g, r, m))
  return jnp.stack(out), total


def attribute(
  cfg: ModelConfig, params, prompt: np.ndarray, answer: np.ndarray, memory: MemoryKV, ids: Sequence
) -> dict:
  """For one (prompt, answer): mass per memory layer and the references ranked by the
  mass the answer tokens give them (mean over heads, answer tokens and layers)."""
  seq = np.concatenate([prompt, answer]).astype(np.int32)
  # Padded to whole chunks, so examples with as many chunks share one compile; attention
  # is causal, so the padding changes nothing at the positions read below.
  L = cfg.memory.chunk_len
  padded = np.full(-(-len(seq) // L) * L, cfg.pad_id, np.int32)
  padded[: len(seq)] = seq
  per_ref, total = reference_mass(cfg, params, jnp.asarray(padded[None]), memory)
  sl = slice(len(prompt) - 1, len(seq) - 1)  # positions that predict the answer
  by_ref = np.asarray(per_ref[:, 0, sl].mean(axis=(1, 2)))  # [Lm, R]
  score = by_ref.mean(0)
  ranked = sorted(
    ((str(ids[j]), float(score[j])) for j in range(len(ids)) if ids[j] is not None),
    key=lambda x: -x[1],
  )
  return {
    "mass_by_layer": np.asarray(total[:, 0, sl].mean(axis=(1, 2))).tolist(),
    "references": ranked,
  }
