"""experiments/probe_training_signal.py: the memory-only tokens are the scored targets the
swap changed; the control memories; the means over swapped and over all tokens, on
hand-built arrays."""

import numpy as np
import pytest

from experiments import probe_training_signal as probe


def test_swapped_mask_is_changed_and_scored_targets_only():
  plain = np.array([[5, 6, 7, 8], [9, 9, 9, 9]])
  swapped = np.array([[5, 60, 7, 80], [9, 9, 90, 9]])
  loss_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])  # position (0, 3) is padding
  got = probe.swapped_mask(swapped, plain, loss_mask)
  np.testing.assert_array_equal(got, [[0, 1, 0, 0], [0, 0, 1, 0]])
  with pytest.raises(ValueError, match="same stream position"):
    probe.swapped_mask(swapped[:1], plain, loss_mask)


def test_first_occurrences_drop_a_value_already_in_the_row():
  targets = np.array([[7, 8, 7, 9, 8], [5, 5, 6, 6, 6]])
  mask = np.array([[1, 0, 1, 1, 1], [0, 1, 1, 1, 0]], bool)
  got = probe.first_occurrences(targets, mask)
  # row 0: 7 first at 0 (kept), 7 again at 2 (dropped), 9 new, 8 seen at 1 (dropped)
  # row 1: 5 seen at 0 (dropped though position 0 was not masked), 6 new, 6 again
  np.testing.assert_array_equal(got, [[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]])


def test_memory_variants_own_other_row_and_none():
  refs = np.arange(3 * 2 * 4).reshape(3, 2, 4)
  lens = np.array([[4, 3], [2, 1], [4, 4]])
  own_r, own_l = probe.memory_variant(refs, lens, "own")
  assert own_r is refs and own_l is lens
  other_r, other_l = probe.memory_variant(refs, lens, "other_row")
  np.testing.assert_array_equal(other_r[0], refs[2])  # row 0 reads row 2's references
  np.testing.assert_array_equal(other_l[1], lens[0])
  none_r, none_l = probe.memory_variant(refs, lens, "none")
  assert (none_l == 0).all() and none_r is refs  # same tokens, every slot masked
  with pytest.raises(ValueError, match="memory kind"):
    probe.memory_variant(refs, lens, "gold")


def test_summarize_means_over_swapped_and_scored_tokens():
  swapped = np.array([[[True, False, False], [False, False, True]]])  # [N=1, B=2, T=3]
  scored = np.array([[[True, True, False], [True, True, True]]])
  own = np.array([[[1.0, 2.0, 99.0], [3.0, 4.0, 5.0]]])
  none = own + 10.0
  first = np.array([[[False, False, False], [False, False, True]]])
  got = probe.summarize({"own": own, "none": none}, swapped, scored, first)
  assert got["swapped_tokens"] == 2 and got["scored_tokens"] == 5
  assert got["swapped_fraction"] == pytest.approx(2 / 5)
  assert got["swapped_per_row"] == pytest.approx(1.0)  # 2 tokens over 2 rows
  assert got["own"]["nll_swapped"] == pytest.approx((1.0 + 5.0) / 2)
  assert got["own"]["nll_all"] == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)  # 99 unscored
  assert got["none"]["nll_swapped"] == pytest.approx(13.0)
  assert got["own"]["nll_swapped_first"] == pytest.approx(5.0)
  assert got["swapped_first_occurrences"] == 1


def test_summarize_without_swapped_tokens_reports_none():
  mask = np.zeros((1, 1, 2), bool)
  got = probe.summarize({"own": np.ones((1, 1, 2))}, mask, ~mask)
  assert got["own"]["nll_swapped"] is None and got["swapped_tokens"] == 0
  assert got["own"]["nll_swapped_first"] is None


@pytest.mark.integration
def test_probe_on_a_trained_tiny_run(tmp_path):
  """End to end: a tiny two-stage run with the swap, probed on its own training stream."""
  import json

  from m3jax.run.config import load_config
  from m3jax.train.loop import train

  workdir = tmp_path / "run"
  config = load_config(
    "configs/memory3.py:tiny",
    [
      f"--config.data.data_dir={tmp_path / 'data'}",
      "--config.data.memory_swap_rate=0.5",
      "--config.train.stages.warmup.steps=2",
      "--config.train.stages.continual.steps=2",
    ],
  )
  train(config, str(workdir))
  out = tmp_path / "signal.json"
  assert probe.main(["--workdir", str(workdir), "--batches", "2", "--out", str(out)]) == 0
  got = json.loads(out.read_text())
  assert got["swap_rate"] == 0.5 and got["swapped_tokens"] > 0
  assert 0 < got["swapped_first_occurrences"] <= got["swapped_tokens"]
  for kind in probe.MEMORIES:
    assert np.isfinite(got[kind]["nll_swapped"]) and got[kind]["nll_all"] > 0
  # The references reach the forward pass: own and no memory score differently.
  assert got["own"]["nll_all"] != got["none"]["nll_all"]
