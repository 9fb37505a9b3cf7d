"""Token cross-entropy with a loss mask, plus the optional z-loss (PaLM)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cross_entropy(logits_BxTxV, targets_BxT, loss_mask_BxT, z_loss: float = 0.0):
  """Mean over unmasked tokens of -log p(target) (+ z_loss · logsumexp²).

  Returns (loss, aux) with aux = {"ce": ..., "tokens": number of counted tokens}.
  Computed in float32 whatever the activation dtype.
  """
  logits = logits_BxTxV.astype(jnp.float32)
  lse_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll_BxT = lse_BxT - target_logit
  mask = loss_mask_BxT.astype(jnp.float32)
  tokens = jnp.sum(mask)
  denom = jnp.maximum(tokens, 1.0)
  ce = jnp.sum(nll_BxT * mask) / denom
  loss = ce
  if z_loss:
    loss = loss + z_loss * jnp.sum(jnp.square(lse_BxT) * mask) / denom
  return loss, {"ce": ce, "tokens": tokens}
