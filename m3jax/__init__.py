"""m3jax: Memory³ (Language Modeling with Explicit Memory) in JAX/Flax.

The names a notebook needs, imported on first use (``import m3jax`` does not import JAX)::

  import m3jax
  from configs.memory3 import get_config
  cfg = m3jax.model_config_from(get_config("tiny").model)
  params = m3jax.Transformer(cfg).init(...)

Each sub-package (m3jax.model, .memory, .data, .train, .inference, .evaluate) exports its
own, longer list the same way.
"""

from m3jax.lazy_exports import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "ModelConfig": "m3jax.model.config",
    "model_config_from": "m3jax.model.config",
    "Transformer": "m3jax.model.transformer",
    "MemoryKV": "m3jax.model.memory_kv",
    "encode_references": "m3jax.memory.encode",
    "MemoryBank": "m3jax.memory.store",
    "build_bank": "m3jax.memory.build",
    "prepare_data": "m3jax.data.prepare",
    "make_train_iterator": "m3jax.data.pipeline",
    "restore_params": "m3jax.train.checkpoint",
    "Generator": "m3jax.inference.generate",
    "SamplingConfig": "m3jax.inference.sampling",
    "run_demo": "m3jax.demo",
  },
)
