"""Next-token choice from logits: greedy, temperature, top-k (pure, jit-friendly).

Kept separate from the decode loop so that the loop stays one traced function and the
sampling rule is a static choice (``SamplingConfig`` is hashable and passed as static).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature == 0 means greedy (argmax); top_k == 0 means the whole vocabulary."""

  temperature: float = 0.0
  top_k: int = 0

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"sampling temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"sampling top_k must be >= 0, got {self.top_k}")

  @property
  def greedy(self) -> bool:
    return self.temperature == 0.0


def sample(logits_BxV, rng, config: SamplingConfig):
  """Returns int32 token ids [B] drawn from float logits [B, V]."""
  if config.greedy:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  logits = logits_BxV.astype(jnp.float32) / config.temperature
  if config.top_k and config.top_k < logits.shape[-1]:
    kth_B = jax.lax.top_k(logits, config.top_k)[0][:, -1:]
    logits = jnp.where(logits < kth_B, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
