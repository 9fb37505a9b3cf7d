"""Product quantization of memory key/value vectors, trained in JAX (paper §3.3, App. B).

Each D-dim vector is cut into S sub-spaces (S = bytes per vector); each sub-space has
256 centroids, so a vector becomes S uint8 codes. Codebooks are per K/V and per memory
layer (shared across heads and tokens): ``codebooks_2xLxSx256xW`` float32.

Uneven split: when S does not divide D (the paper's 14 bytes per 80-dim vector), the
sub-spaces get ``ceil(D/S)`` or ``floor(D/S)`` dims (80/14 -> ten of 6 and four of 5),
contiguous in order. Internally every sub-space is zero-padded to the widest width W so
training, encoding and decoding stay single vectorized ops; the padded columns are zero
in both data and centroids, so they add nothing to any distance and are dropped on
decode. We chose this over padding D up to a multiple of S (which would waste code
resolution on constant columns) and over OPQ (a rotation; a possible extension).

``decode`` is pure and jittable so dequantization can run on the device.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

NUM_CENTROIDS = 256


@dataclasses.dataclass(frozen=True)
class SubspaceLayout:
  """Static mapping between a D-dim vector and S zero-padded sub-spaces of width W."""

  dim: int
  num_subspaces: int

  def __post_init__(self):
    if not 1 <= self.num_subspaces <= self.dim:
      raise ValueError(
        f"pq bytes per vector must be in 1..{self.dim} (head_dim), got {self.num_subspaces}"
      )

  @property
  def widths(self) -> list[int]:
    base, extra = divmod(self.dim, self.num_subspaces)
    return [base + 1] * extra + [base] * (self.num_subspaces - extra)

  @property
  def width(self) -> int:
    return max(self.widths)

  @property
  def pad_index_SxW(self) -> np.ndarray:
    """Index into ``[x, 0]`` (D+1 columns) for each padded sub-space column."""
    out = np.full((self.num_subspaces, self.width), self.dim, np.int32)
    start = 0
    for s, w in enumerate(self.widths):
      out[s, :w] = np.arange(start, start + w)
      start += w
    return out

  @property
  def unpad_index_D(self) -> np.ndarray:
    """Flat index into [S*W] of each original dimension."""
    pad = self.pad_index_SxW.reshape(-1)
    return np.array([int(np.nonzero(pad == d)[0][0]) for d in range(self.dim)], np.int32)


def split(x_NxD, layout: SubspaceLayout):
  """[..., D] -> [..., S, W] with zero padding."""
  x = jnp.concatenate([x_NxD, jnp.zeros(x_NxD.shape[:-1] + (1,), x_NxD.dtype)], -1)
  return x[..., jnp.asarray(layout.pad_index_SxW)]


def merge(x_SxW, layout: SubspaceLayout):
  """[..., S, W] -> [..., D]."""
  flat = x_SxW.reshape(x_SxW.shape[:-2] + (-1,))
  return flat[..., jnp.asarray(layout.unpad_index_D)]


def _assign(x_PxSxW, cb_SxCxW):
  d = jnp.sum(cb_SxCxW**2, -1)[None] - 2 * jnp.einsum("psw,scw->psc", x_PxSxW, cb_SxCxW)
  return jnp.argmin(d, axis=-1)


@functools.partial(jax.jit, static_argnames=("iters",))
def kmeans(x_PxSxW, init_SxCxW, iters: int = 20):
  """Lloyd's k-means in every sub-space at once. Empty clusters keep their centroid."""

  def update(args):  # one sub-space: one-hot matmul (fast on CPU and accelerators)
    x_PxW, cb_CxW = args
    d_PxC = jnp.sum(cb_CxW**2, -1)[None] - 2 * x_PxW @ cb_CxW.T
    # Nearest centroid as a min-equality mask: XLA's argmin is slow on CPU, and an
    # exact tie (duplicate centroids) just gives both the same mean, harmlessly.
    onehot_PxC = (d_PxC <= d_PxC.min(-1, keepdims=True)).astype(x_PxW.dtype)
    counts_C = onehot_PxC.sum(0)
    new = (onehot_PxC.T @ x_PxW) / jnp.maximum(counts_C, 1)[:, None]
    return jnp.where(counts_C[:, None] > 0, new, cb_CxW)

  def body(_, cb):
    return jax.lax.map(update, (jnp.swapaxes(x_PxSxW, 0, 1), cb))

  return jax.lax.fori_loop(0, iters, body, init_SxCxW)


def train_codebooks(vectors_2xLxPxD, num_subspaces: int, *, iters: int = 20, seed: int = 0):
  """k-means codebooks per (K/V, layer): -> float32 [2, L, S, 256, W].

  vectors_2xLxPxD: training vectors (valid ones only), e.g. all kept tokens and heads of
  a uniform sample of references (as the paper samples the knowledge base).
  """
  v = np.asarray(vectors_2xLxPxD, np.float32)
  two, nl, p, d = v.shape
  layout = SubspaceLayout(d, num_subspaces)
  rng = np.random.default_rng(seed)
  out = np.zeros((two, nl, num_subspaces, NUM_CENTROIDS, layout.width), np.float32)
  for kv in range(two):
    for l in range(nl):
      x = split(jnp.asarray(v[kv, l]), layout)
      pick = rng.choice(p, NUM_CENTROIDS, replace=p < NUM_CENTROIDS)
      out[kv, l] = np.asarray(kmeans(x, jnp.transpose(x[pick], (1, 0, 2)), iters=iters))
  return out


@jax.jit
def encode(x_XxD, codebooks_SxCxW):
  """Nearest centroid per sub-space: [..., D] -> uint8 [..., S]."""
  s, c, w = codebooks_SxCxW.shape
  layout = SubspaceLayout(x_XxD.shape[-1], s)
  lead = x_XxD.shape[:-1]
  x = split(x_XxD.astype(jnp.float32).reshape(-1, x_XxD.shape[-1]), layout)
  return _assign(x, codebooks_SxCxW).astype(jnp.uint8).reshape(lead + (s,))


@functools.partial(jax.jit, static_argnames=("dim",))
def decode(codes_XxS, codebooks_SxCxW, dim: int):
  """uint8 [..., S] -> float32 [..., D]; pure and jittable."""
  s = codebooks_SxCxW.shape[0]
  layout = SubspaceLayout(dim, s)
  sub = jnp.arange(s)
  parts_XxSxW = codebooks_SxCxW[sub, codes_XxS.astype(jnp.int32)]
  return merge(parts_XxSxW, layout)


def encode_memories(keys_NxLxKxMxD, values_NxLxKxMxD, codebooks_2xLxSxCxW):
  """Quantizes a batch of memories: -> (key codes, value codes), uint8 [N, L, K, M, S]."""
  out = []
  for kv, x in enumerate((keys_NxLxKxMxD, values_NxLxKxMxD)):
    x = jnp.asarray(x, jnp.float32)
    layers = [encode(x[:, l], jnp.asarray(codebooks_2xLxSxCxW[kv, l])) for l in range(x.shape[1])]
    out.append(np.asarray(jnp.stack(layers, 1)))
  return out[0], out[1]


def decode_memories(codes_XxLxKxMxS, codebooks_LxSxCxW, dim: int, l_axis: int = 0):
  """Decodes codes whose memory-layer axis is ``l_axis`` with that layer's codebook."""
  codes = jnp.moveaxis(codes_XxLxKxMxS, l_axis, 0)
  out = jax.vmap(lambda c, cb: decode(c, cb, dim=dim))(codes, codebooks_LxSxCxW)
  return jnp.moveaxis(out, 0, l_axis)


def relative_mse(x, x_hat, mask=None) -> float:
  """Σ‖x − x̂‖² / Σ‖x‖² over the (masked) vectors."""
  x, x_hat = np.asarray(x, np.float64), np.asarray(x_hat, np.float64)
  err, ref = ((x - x_hat) ** 2).sum(-1), (x**2).sum(-1)
  if mask is not None:
    err, ref = err[mask], ref[mask]
  return float(err.sum() / max(ref.sum(), 1e-30))
