"""m3jax.data.context_refs: in-context reference rows (the RAG condition's training signal).

A chosen row shows the references its first chunks read as text, in the RAG prompt's
format, then those chunks' own text; it reads no memory, and only its own text is scored.
Expected rows are written out by hand here, not rebuilt with the function under test."""

import numpy as np
import pytest

from m3jax.data import context_refs

HEADER, SEP, PAD, BOS, CHUNK = [50, 51], [52], 0, 3, 4


def _batch(b=3, c=4, n=5):
  """Rows of 16 tokens (4 chunks of 4); token ids encode (row, position) so every token
  is traceable; chunk c of row r reads reference [200+10r+c]*len, lengths 2 or 3."""
  targets = (1000 + 100 * np.arange(b)[:, None] + np.arange(c * CHUNK)[None]).astype(np.int32)
  refs = np.zeros((b, c, n), np.int32)
  lengths = np.zeros((b, c), np.int32)
  for r in range(b):
    for k in range(c):
      lengths[r, k] = 2 + (k % 2)
      refs[r, k, : lengths[r, k]] = 200 + 10 * r + k
  mask = np.ones(targets.shape, np.float32)
  mask[:, 5] = 3.0  # a swapped token's weight survives the move
  return dict(
    inputs=np.concatenate([np.full((b, 1), BOS, np.int32), targets[:, :-1]], 1),
    targets=targets,
    loss_mask=mask,
    ref_tokens=refs,
    ref_lengths=lengths,
  )


def _row(batch, r, max_refs):
  """context_row on row ``r`` of ``batch``."""
  return context_refs.context_row(
    batch["targets"][r], batch["loss_mask"][r], batch["ref_tokens"][r],
    batch["ref_lengths"][r], CHUNK, max_refs, HEADER, SEP, PAD,
  )  # fmt: skip


def test_a_row_shows_its_first_chunks_references_then_their_text():
  batch = _batch()
  # max_refs 2: header(2) + ref0(2) + ref1(3) + sep(1) = 8, + 2 chunks of text = 16 <= 16.
  targets, mask = _row(batch, 1, 2)
  expected = [50, 51, 210, 210, 211, 211, 211, 52] + list(range(1100, 1108))
  assert targets.tolist() == expected
  assert mask.tolist() == [0.0] * 8 + [1, 1, 1, 1, 1, 3, 1, 1]


def test_references_that_do_not_fit_with_their_text_are_not_shown_and_the_rest_is_padding():
  batch = _batch()
  # max_refs 4, but header + ref0 + ref1 + sep (8) + their 2 chunks (8) fill the 16-token
  # row, so ref2 is left out and only 2 chunks of text follow.
  targets, mask = _row(batch, 0, 4)
  assert targets[:8].tolist() == [50, 51, 200, 200, 201, 201, 201, 52]
  assert 202 not in targets.tolist()
  # max_refs 1: header + ref0 + sep = 5 tokens, one chunk of text (4), then padding.
  targets, mask = _row(batch, 0, 1)
  assert targets.tolist() == [50, 51, 200, 200, 52, 1000, 1001, 1002, 1003] + [PAD] * 7
  assert mask.tolist() == [0.0] * 5 + [1.0] * 4 + [0.0] * 7


def test_a_row_whose_first_chunk_reads_nothing_is_left_as_it_is():
  batch = _batch()
  batch["ref_lengths"][2, 0] = 0
  assert _row(batch, 2, 2) is None
  out = context_refs.ContextRefs(HEADER, SEP, 2, PAD).replace_rows(
    batch, 1.0, np.random.default_rng(0), BOS, CHUNK
  )
  np.testing.assert_array_equal(out["targets"][2], batch["targets"][2])
  np.testing.assert_array_equal(out["ref_lengths"][2], batch["ref_lengths"][2])
  assert (out["ref_lengths"][:2] == 0).all()  # the others read no memory


def test_rows_keep_the_batch_contract_and_are_a_function_of_the_rng():
  batch = _batch(b=64)
  rows = lambda seed: context_refs.ContextRefs(HEADER, SEP, 1, PAD).replace_rows(
    batch, 0.5, np.random.default_rng(seed), BOS, CHUNK
  )
  out = rows(0)
  for key in ("targets", "loss_mask", "ref_tokens", "ref_lengths", "inputs"):
    assert out[key].shape == batch[key].shape and out[key].dtype == batch[key].dtype
  np.testing.assert_array_equal(out["inputs"][:, 0], BOS)
  np.testing.assert_array_equal(out["inputs"][:, 1:], out["targets"][:, :-1])
  changed = (out["ref_lengths"] == 0).all(axis=1)
  assert 16 <= changed.sum() <= 48  # about half of 64
  assert (out["targets"][changed, : len(HEADER)] == HEADER).all()
  np.testing.assert_array_equal(out["targets"][~changed], batch["targets"][~changed])
  np.testing.assert_array_equal(rows(0)["targets"], out["targets"])
  assert not np.array_equal(rows(1)["targets"], out["targets"])
  assert (
    context_refs.ContextRefs(HEADER, SEP, 1, PAD).replace_rows(
      batch, 0.0, np.random.default_rng(0), BOS, CHUNK
    )
    is batch
  )


def test_bad_rates_and_reference_counts_are_errors():
  batch = _batch()
  with pytest.raises(ValueError, match="rate"):
    context_refs.ContextRefs(HEADER, SEP, 1, PAD).replace_rows(
      batch, 1.5, np.random.default_rng(0), BOS, CHUNK
    )
  with pytest.raises(ValueError, match="max_refs"):
    context_refs.ContextRefs(HEADER, SEP, 0, PAD).replace_rows(
      batch, 0.5, np.random.default_rng(0), BOS, CHUNK
    )


def test_pipeline_context_rows_in_training_only_and_resumable(tiny_data, tiny_model_cfg):
  """Through make_train_iterator on the tiny world: rate 1 shows every training row the
  RAG prompt's header and its first chunk's (swapped) reference, with no memory; a
  restored iterator builds the same rows; held-out batches are never touched."""
  from m3jax.data.pipeline import make_train_iterator
  from m3jax.data.prepare import load_vocab
  from m3jax.task import RAG_HEADER_REFERENCES
  from tests.data.conftest import assert_resumable_and_training_only, tiny_data_cfg

  base_cfg, paths = tiny_data

  def make(rate, split="train"):
    cfg = tiny_data_cfg(base_cfg.data_dir, context_ref_rate=rate)
    return make_train_iterator(cfg, tiny_model_cfg, split=split, batch_size=4, with_references=True)

  header = load_vocab(base_cfg, paths).encode(RAG_HEADER_REFERENCES)
  plain = next(make(0.0))
  it = make(1.0)
  batch = next(it)
  shown = plain["ref_lengths"][:, 0] > 0
  assert shown.any()
  assert (batch["ref_lengths"][shown] == 0).all()
  for row in np.flatnonzero(shown):
    ref = plain["ref_tokens"][row, 0, : plain["ref_lengths"][row, 0]]
    after = batch["targets"][row, len(header) : len(header) + len(ref)]
    assert batch["targets"][row, : len(header)].tolist() == header
    # the reference as the memory row would have read it (the same swap, same seed)
    np.testing.assert_array_equal(after, ref)
  assert_resumable_and_training_only(make)


def test_config_rejects_a_rate_outside_the_unit_interval():
  from m3jax.data.config import data_config_from
  from tests.data.conftest import tiny_data_cfg

  with pytest.raises(ValueError, match="context_ref_rate"):
    data_config_from(tiny_data_cfg("/tmp/unused", context_ref_rate=2.0))
