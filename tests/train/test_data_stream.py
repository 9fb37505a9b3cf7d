"""One data stream across stages and checkpoints: stage 2 continues where stage 1 stopped."""

import numpy as np
import pytest

from m3jax.data.pipeline import TrainIterator
from m3jax.train.data_source import make_iterator
from m3jax.train.loop import train
from m3jax.train.config import train_config_from
from tests.train.conftest import tiny_config


class Crash(RuntimeError):
  pass


def _recording(log):
  """make_iterator, recording (stage, inputs) of every batch the loop draws."""

  def factory(config, stage, **kw):
    it = make_iterator(config, stage, **kw)

    class Recorded:
      def __iter__(self):
        return self

      def __next__(self):
        batch = next(it)
        log.append((stage.name, batch["inputs"].copy()))
        return batch

      state, restore = it.state, it.restore

    return Recorded()

  return factory


def _stream(config, n):
  """The first n batches of one uninterrupted iterator (stage 2's kind)."""
  stage = train_config_from(config.train).stages[1]
  it = make_iterator(
    config,
    stage,
    batch_size=int(config.train.batch_size),
    seq_len=int(config.train.fallback_seq_len),
  )
  return [next(it)["inputs"] for _ in range(n)]


def _config():
  config = tiny_config(shallow=True, checkpoint_every=2)
  config.train.stages.warmup["steps"] = 3
  config.train.stages.continual["steps"] = 4
  return config


@pytest.mark.integration
def test_stage_two_and_resumes_continue_the_stream(tmp_path):
  """Stage 2's first batch is the stream's 4th (not stage 1's first), also after crashes
  right after the hand-off (before any stage-2 checkpoint) and mid stage 2.

  (One test: each ``train`` call costs compile time on 2 CPU cores.)
  """
  config = _config()
  stream = _stream(config, 7)
  log = []

  def crash_at(stage_name, step):
    def hook(name, s):
      if (name, s) == (stage_name, step):
        raise Crash()

    return hook

  for where in (("continual", 1), ("continual", 3)):
    with pytest.raises(Crash):
      train(config, str(tmp_path), data_factory=_recording(log), hooks=[crash_at(*where)])
  train(config, str(tmp_path), data_factory=_recording(log))
  first = [x for n, x in log if n == "warmup"]
  assert len(first) == 3
  for got, w in zip(first, stream):
    np.testing.assert_array_equal(got, w)
  # Stage 2 drew: step 1 (crash), steps 1..3 (crash at 3, last checkpoint 2), steps 3..4.
  second = [x for n, x in log if n == "continual"]
  assert not np.array_equal(second[0], first[0])
  want = [stream[3], stream[3], stream[4], stream[5], stream[5], stream[6]]
  assert len(second) == len(want)
  for got, w in zip(second, want):
    np.testing.assert_array_equal(got, w)


def test_train_iterator_state_moves_between_with_and_without_references():
  """The pipeline iterator's position is the same stream with or without references."""
  stream = np.arange(1000, dtype=np.int32) % 97
  refs = np.zeros((1000 // 20, 2), np.int32)
  plain = TrainIterator(stream, 20, 4, seed=3, bos_id=1)
  full = TrainIterator(
    stream,
    20,
    4,
    seed=3,
    bos_id=1,
    ref_index_SxC=refs,
    ref_tokens_NxL=np.ones((1, 8), np.int32),
    ref_lengths_N=np.array([8]),
  )
  straight = TrainIterator(stream, 20, 4, seed=3, bos_id=1)
  want = [next(straight)["targets"] for _ in range(17)]  # crosses an epoch (12 steps)
  for _ in range(14):
    next(plain)
  full.restore(plain.state())
  for w in want[14:]:
    np.testing.assert_array_equal(next(full)["targets"], w)
