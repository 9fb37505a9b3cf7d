"""Distractor memories (m3jax.data.distractors): a share of the chunks with a reference
read another one, drawn uniformly; training only, resumable."""

import numpy as np
import pytest

from m3jax.data import distractors


def test_redraw_replaces_the_rate_of_chunks_with_a_reference_by_another():
  rng = np.random.default_rng(0)
  idx = rng.integers(-1, 50, size=(400, 8))  # -1: a chunk without a reference
  before = idx.copy()
  assert np.array_equal(distractors.redraw(idx, 0.0, rng, 50), idx)
  got = distractors.redraw(idx, 0.3, np.random.default_rng(1), 50)
  has = idx >= 0
  assert np.array_equal(got[~has], idx[~has])  # no reference stays none
  changed = got[has] != idx[has]
  # Binomial(n, 0.3): 4 standard deviations either side.
  n = has.sum()
  assert abs(changed.sum() - 0.3 * n) < 4 * np.sqrt(n * 0.3 * 0.7)
  assert got.min() >= -1 and got.max() < 50
  assert np.array_equal(idx, before)  # the caller's indices are not modified


def test_redraw_draws_every_other_reference_and_never_its_own():
  idx = np.zeros((1, 20_000), np.int64)
  got = distractors.redraw(idx, 1.0, np.random.default_rng(2), 5)
  counts = np.bincount(got[0], minlength=5)
  assert counts[0] == 0  # never the chunk's own reference
  # Uniform over the 4 others: each 5,000 ± 4 standard deviations.
  assert np.all(np.abs(counts[1:] - 5_000) < 4 * np.sqrt(20_000 * 0.25 * 0.75))
  assert np.array_equal(distractors.redraw(idx, 1.0, np.random.default_rng(2), 1), idx)
  with pytest.raises(ValueError, match="memory_distractor_rate"):
    distractors.redraw(idx, 1.5, np.random.default_rng(2), 5)


def test_pipeline_distractors_in_training_only_and_resumable(tiny_data, tiny_model_cfg):
  """Through make_train_iterator on the tiny world: at rate 1 every chunk that read a
  reference reads another reference of the knowledge base; a restored iterator builds
  the same rows; held-out batches are never touched."""
  from m3jax.data import kb
  from m3jax.data.pipeline import make_train_iterator
  from m3jax.data.prepare import load_vocab
  from tests.data.conftest import assert_resumable_and_training_only, tiny_data_cfg

  base_cfg, paths = tiny_data

  def make(rate, split="train"):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_distractor_rate=rate)
    return make_train_iterator(cfg, tiny_model_cfg, split=split, batch_size=4, with_references=True)

  ref_len = tiny_model_cfg.memory.ref_len
  refs = kb.kb_references(paths, load_vocab(base_cfg, paths), ref_len)
  bank = {tuple(r.tokens) for r in refs}
  plain, batch = next(make(0.0)), next(make(1.0))
  np.testing.assert_array_equal(plain["targets"], batch["targets"])  # the same rows
  has = plain["ref_lengths"] > 0
  assert has.any() and (batch["ref_lengths"][has] > 0).all()
  assert (batch["ref_lengths"][~has] == 0).all()
  for b, c in zip(*np.nonzero(has)):
    own = plain["ref_tokens"][b, c, : plain["ref_lengths"][b, c]]
    drawn = batch["ref_tokens"][b, c, : batch["ref_lengths"][b, c]]
    assert tuple(drawn.tolist()) in bank  # a reference of the knowledge base
    assert not np.array_equal(drawn, own)  # not the chunk's own
  assert_resumable_and_training_only(make)


def test_config_rejects_a_rate_outside_the_unit_interval():
  from m3jax.data.config import data_config_from
  from tests.data.conftest import tiny_data_cfg

  with pytest.raises(ValueError, match="memory_distractor_rate"):
    data_config_from(tiny_data_cfg("/tmp/unused", memory_distractor_rate=-0.1))
