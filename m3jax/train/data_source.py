"""The batch source of a stage: the data pipeline, or the synthetic generator.

``config.train.data_source``: "pipeline" (m3jax.data.pipeline.make_train_iterator: the
prepared corpus with pre-retrieved references; prepares it on first use) or
"synthetic" (m3jax.train.synthetic; no data needed). Either yields the training batch
contract (host-local rows) and has state()/restore().
"""

from __future__ import annotations

from m3jax.model.config import model_config_from
from m3jax.train.stages import StageSpec
from m3jax.train.synthetic import SyntheticIterator


def make_iterator(
  config,
  stage: StageSpec,
  *,
  batch_size: int,
  seq_len: int,
  process_index: int = 0,
  process_count: int = 1,
):
  """The iterator for ``stage``; ``batch_size`` is global, each process gets its slice."""
  source = config.train.data_source
  cfg = model_config_from(config.model)
  if source == "synthetic":
    return SyntheticIterator(
      batch_size=batch_size // process_count,
      seq_len=seq_len,
      vocab_size=cfg.vocab_size,
      chunk_len=cfg.memory.chunk_len,
      ref_len=cfg.memory.ref_len,
      bos_id=cfg.bos_id,
      with_refs=stage.use_memory,
      seed=int(config.seed),
      process_index=process_index,
    )
  if source == "pipeline":
    if "data" not in config:
      raise ValueError(
        "config.train.data_source='pipeline' needs a config.data section "
        "(configs/sections/data.py); or use --config.train.data_source=synthetic"
      )
    from m3jax.data import pipeline  # lazy: the data stack is not needed for synthetic runs

    return pipeline.make_train_iterator(
      config.data,
      cfg,
      split="train",
      batch_size=batch_size,
      seq_len=seq_len,
      with_references=stage.use_memory,
      process_index=process_index,
      process_count=process_count,
      memory_window=stage.memory_window,
    )
  raise ValueError(f"config.train.data_source={source!r}: choose 'pipeline' or 'synthetic'")
