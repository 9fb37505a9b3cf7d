"""The explicit-memory pytree the network reads (and nothing else about memory)."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class MemoryKV:
  """Sparse memory key/values per 64-token query chunk, all memory layers at once.

  keys_LxBxCxRxKxMxD: keys already RoPE-rotated at their reference positions 1..128.
  values_LxBxCxRxKxMxD: values of the same selected tokens.
  mask_BxCxRxM: True where the slot holds a real token (short references, missing
    references and padding chunks are False).

  Chunk c of the memory serves query tokens ``c*chunk_len … (c+1)*chunk_len - 1`` of the
  call it is passed to; with C == 1 it serves every query of the call (decoding).
  """

  keys_LxBxCxRxKxMxD: jax.Array
  values_LxBxCxRxKxMxD: jax.Array
  mask_BxCxRxM: jax.Array

  @property
  def num_chunks(self) -> int:
    return self.mask_BxCxRxM.shape[1]

  def layer(self, index: int):
    """(keys_BxCxRxKxMxD, values_BxCxRxKxMxD, mask_BxCxRxM) of memory layer ``index``."""
    return self.keys_LxBxCxRxKxMxD[index], self.values_LxBxCxRxKxMxD[index], self.mask_BxCxRxM

  def chunk(self, c) -> "MemoryKV":
    """The memory of chunk ``c`` alone (C == 1), e.g. to decode inside that chunk."""
    take = lambda x, axis: jax.lax.dynamic_slice_in_dim(x, c, 1, axis)
    return MemoryKV(
      take(self.keys_LxBxCxRxKxMxD, 2),
      take(self.values_LxBxCxRxKxMxD, 2),
      take(self.mask_BxCxRxM, 1),
    )

  def arrange(self, index_BxC) -> "MemoryKV":
    """Per-query memories [L, n, 1, …] gathered into a batch [L, B, C, …] (jit-friendly).

    ``index_BxC[b, c]`` = 1 + the query whose memory serves chunk c of row b; 0 = no
    memory (an all-invalid slot). ``self`` holds one chunk per query (C == 1), as every
    memory source returns it.
    """
    return _arrange(self, index_BxC)

  @classmethod
  def zeros(
    cls,
    num_memory_layers: int,
    batch: int,
    chunks: int,
    refs: int,
    kv_heads: int,
    tokens: int,
    head_dim: int,
    dtype=jnp.float32,
  ) -> "MemoryKV":
    """An all-invalid memory of the given shape (attends exactly like no memory)."""
    shape = (num_memory_layers, batch, chunks, refs, kv_heads, tokens, head_dim)
    return cls(
      jnp.zeros(shape, dtype),
      jnp.zeros(shape, dtype),
      jnp.zeros((batch, chunks, refs, tokens), bool),
    )


@jax.jit
def _arrange(mem_n: MemoryKV, index_BxC) -> MemoryKV:
  def take(x, chunk_axis):
    x = jnp.squeeze(x, chunk_axis)  # the query axis sits just before it
    x = jnp.concatenate(
      [jnp.zeros_like(jnp.take(x, jnp.array([0]), chunk_axis - 1)), x], chunk_axis - 1
    )
    return jnp.take(x, index_BxC, chunk_axis - 1)

  return MemoryKV(
    take(mem_n.keys_LxBxCxRxKxMxD, 2),
    take(mem_n.values_LxBxCxRxKxMxD, 2),
    take(mem_n.mask_BxCxRxM, 1),
  )
