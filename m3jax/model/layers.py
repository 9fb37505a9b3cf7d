"""Building blocks: RMSNorm, RoPE, SwiGLU MLP, GQA projections. No biases anywhere."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from m3jax import axes
from m3jax.model.config import ModelConfig


def _weight(module: Embed | MLP | AttentionProjections, name: str, *dims: tuple[int, str]):
  """A normal(``cfg.init_std``) weight of ``module.cfg``; dims: (size, logical axis) pairs."""
  shape, logical = zip(*dims)
  init = nn.with_logical_partitioning(nn.initializers.normal(module.cfg.init_std), logical)
  return module.param(name, init, shape, module.cfg.param_dtype)


class RMSNorm(nn.Module):
  eps: float = 1e-6
  param_dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x_XxE):
    scale = self.param(
      "scale",
      nn.with_logical_partitioning(nn.initializers.ones, (axes.EMBED,)),
      (x_XxE.shape[-1],),
      self.param_dtype,
    )
    x32 = x_XxE.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * scale).astype(x_XxE.dtype)


def apply_rope(x_BxTxNxD, positions_BxT, base: float):
  """Rotary embedding (rotate-half form) at integer positions."""
  d = x_BxTxNxD.shape[-1]
  inv_freq = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  angle_BxTxF = positions_BxT.astype(jnp.float32)[..., None] * inv_freq
  sin, cos = jnp.sin(angle_BxTxF)[:, :, None], jnp.cos(angle_BxTxF)[:, :, None]
  x1, x2 = jnp.split(x_BxTxNxD.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxD.dtype)


class Embed(nn.Module):
  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    self.table = _weight(self, "embedding", (c.vocab_size, axes.VOCAB), (c.embed_dim, axes.EMBED))

  def __call__(self, tokens_BxT):
    return jnp.take(self.table, tokens_BxT, axis=0).astype(self.cfg.dtype)

  def attend(self, x_BxTxE):
    return jnp.einsum("bte,ve->btv", x_BxTxE, self.table.astype(self.cfg.dtype))


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxE):
    c = self.cfg
    e, f = (c.embed_dim, axes.EMBED), (c.mlp_dim, axes.MLP)
    gate = _weight(self, "gate", e, f)
    up = _weight(self, "up", e, f)
    down = _weight(self, "down", f, e)
    x = x_BxTxE.astype(c.dtype)
    h_BxTxF = nn.silu(x @ gate.astype(c.dtype)) * (x @ up.astype(c.dtype))
    h_BxTxF = nn.with_logical_constraint(h_BxTxF, (axes.BATCH, axes.LENGTH, axes.MLP))
    return h_BxTxF @ down.astype(c.dtype)


def key_history(k_BxTxKxD, w: int, k_before_BxWxKxD=None, has_before_B=None):
  """[the raw keys of the ``w`` tokens before position 0, oldest first; the T raw keys]:
  ``[B, w + T, K, D]`` in ``k_BxTxKxD``'s dtype, what smeared keys read. Where a row has
  no earlier tokens (``k_before_BxWxKxD`` None, or ``has_before_B`` False for that row:
  decoding from an empty cache), its position-0 key stands in for each of them, in
  training and in decoding alike."""
  first_BxWxKxD = k_BxTxKxD[:, :1].repeat(w, axis=1)
  if k_before_BxWxKxD is None:
    before_BxWxKxD = first_BxWxKxD
  else:
    before_BxWxKxD = k_before_BxWxKxD.astype(k_BxTxKxD.dtype)
    if has_before_B is not None:
      before_BxWxKxD = jnp.where(has_before_B[:, None, None, None], before_BxWxKxD, first_BxWxKxD)
  return jnp.concatenate([before_BxWxKxD, k_BxTxKxD], axis=1)


class AttentionProjections(nn.Module):
  """GQA projections; the attention itself is the pure function in m3jax.model.joint_attention."""

  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    e, d = (c.embed_dim, axes.EMBED), (c.head_dim, axes.HEAD_DIM)
    h, k = (c.num_heads, axes.HEADS), (c.num_kv_heads, axes.KV_HEADS)
    self.wq = _weight(self, "q", e, h, d)
    self.wk = _weight(self, "k", e, k, d)
    self.wv = _weight(self, "v", e, k, d)
    self.wo = _weight(self, "o", h, d, e)
    if c.smeared_keys:  # sigmoid(0) = 1/2: each key starts as the mean of two tokens'
      self.smear = self.param(
        "smear",
        nn.with_logical_partitioning(nn.initializers.zeros, (axes.KV_HEADS,)),
        (c.num_kv_heads,),
        c.param_dtype,
      )
    if c.smeared_keys and c.smear_width > 1:  # softmax(0): earlier tokens start equal
      self.smear_taps = self.param(
        "smear_taps",
        nn.with_logical_partitioning(nn.initializers.zeros, (axes.KV_HEADS, None)),
        (c.num_kv_heads, c.smear_width),
        c.param_dtype,
      )

  def qkv(self, h_BxTxE, *, smear: bool = False):
    """GQA projections of normed inputs; ``smear``: keys smeared within the sequence
    (``smear_keys``; a no-op unless ``cfg.smeared_keys``)."""
    dt = self.cfg.dtype
    q = jnp.einsum("bte,ehd->bthd", h_BxTxE, self.wq.astype(dt))
    k = jnp.einsum("bte,ekd->btkd", h_BxTxE, self.wk.astype(dt))
    v = jnp.einsum("bte,ekd->btkd", h_BxTxE, self.wv.astype(dt))
    q = nn.with_logical_constraint(q, (axes.BATCH, axes.LENGTH, axes.HEADS, axes.HEAD_DIM))
    k = nn.with_logical_constraint(k, (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.HEAD_DIM))
    v = nn.with_logical_constraint(v, (axes.BATCH, axes.LENGTH, axes.KV_HEADS, axes.HEAD_DIM))
    if smear and self.cfg.smeared_keys:
      k = self.smear_keys(key_history(k, self.cfg.smear_width))
    return q, k, v

  def smear_keys(self, ext_BxWTxKxD):
    """Smeared keys (``cfg.smeared_keys``) of the last T positions of ``ext_BxWTxKxD``
    (``key_history``: the W = ``cfg.smear_width`` raw keys before position 0, then the T
    raw keys): position t mixes in the raw keys of the W tokens before it, per KV head:
    s·k_t + (1 - s)·Σ_j π_j·k_{t-j}, s = sigmoid(smear), π = softmax(smear_taps) (π = 1
    when W = 1)."""
    w = self.cfg.smear_width
    t = ext_BxWTxKxD.shape[1] - w
    back = lambda j: ext_BxWTxKxD[:, w - j : w - j + t]  # k_{t-j} at position t
    k_BxTxKxD = back(0)
    if w == 1:
      prev_BxTxKxD = back(1)
    else:
      pi_KxW = jax.nn.softmax(self.smear_taps.astype(jnp.float32), axis=-1)
      pi_KxW = pi_KxW.astype(k_BxTxKxD.dtype)
      prev_BxTxKxD = sum(pi_KxW[:, j - 1][:, None] * back(j) for j in range(1, w + 1))
    a_K = jax.nn.sigmoid(self.smear.astype(jnp.float32)).astype(k_BxTxKxD.dtype)[:, None]
    return a_K * k_BxTxKxD + (1 - a_K) * prev_BxTxKxD

  def out(self, o_BxTxHxD):
    return jnp.einsum("bthd,hde->bte", o_BxTxHxD, self.wo.astype(self.cfg.dtype))


class Block(nn.Module):
  """Pre-norm residual block; the parent wires the attention between ``qkv`` and ``finish``."""

  cfg: ModelConfig

  def setup(self):
    c = self.cfg
    self.attn_norm = RMSNorm(c.norm_eps, c.param_dtype)
    self.attn = AttentionProjections(c)
    self.mlp_norm = RMSNorm(c.norm_eps, c.param_dtype)
    self.mlp = MLP(c)

  def qkv(self, x_BxTxE):
    """(q, k, v) before RoPE, keys smeared within the sequence (``cfg.smeared_keys``)."""
    return self.attn.qkv(self.attn_norm(x_BxTxE), smear=True)

  def init_all(self, x_BxTxE):
    """Touches every parameter (no attention): how stacked layers are initialized."""
    q, _, _ = self.qkv(x_BxTxE)
    return self.finish(x_BxTxE, q)

  def finish(self, x_BxTxE, o_BxTxHxD, *, run_mlp: bool = True):
    x = x_BxTxE + self.attn.out(o_BxTxHxD)
    if run_mlp:
      x = x + self.mlp(self.mlp_norm(x))
    return nn.with_logical_constraint(x, (axes.BATCH, axes.LENGTH, axes.EMBED))
