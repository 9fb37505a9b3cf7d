"""The Memory³ network: config, layers, attention block and transformer."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "MemoryConfig": "m3jax.model.config",
    "ModelConfig": "m3jax.model.config",
    "model_config_from": "m3jax.model.config",
    "Cache": "m3jax.model.transformer",
    "Transformer": "m3jax.model.transformer",
  },
)
