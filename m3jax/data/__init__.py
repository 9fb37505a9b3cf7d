"""Data: the knowledge world, corpora, vocabulary, pre-retrieval and the batch pipeline."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "DataConfig": "m3jax.data.config",
    "data_config_from": "m3jax.data.config",
    "DataPaths": "m3jax.data.prepare",
    "prepare_data": "m3jax.data.prepare",
    "make_train_iterator": "m3jax.data.pipeline",
    "prepare_for_training": "m3jax.data.pipeline",
  },
)
