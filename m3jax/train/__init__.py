"""Training: stages, optimizer, sharded steps, the loop and checkpoints."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "StageSpec": "m3jax.train.stages",
    "stages_from": "m3jax.train.stages",
    "make_optimizer": "m3jax.train.optimizer",
    "create_train_state": "m3jax.train.state",
    "make_train_step": "m3jax.train.step",
    "train": "m3jax.train.loop",
    "Checkpointer": "m3jax.train.checkpoint",
    "restore_params": "m3jax.train.checkpoint",
  },
)
