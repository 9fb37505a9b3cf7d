"""experiments/probe_copy_task.py: rows are periodic with a period of 8-32, so every scored
target is the token one period back; the plateau exit is the first window a nat under
chance; and the probe runs end to end on the tiny config."""

import json

import numpy as np
import pytest

from experiments import probe_copy_task as probe


def test_rows_repeat_with_a_period_of_8_to_32():
  rows = probe.copy_rows(np.random.default_rng(0), 97, batch=12)
  assert rows.shape == (12, probe.ROW) and rows.min() >= 5 and rows.max() < 97
  for row in rows:
    period = next(p for p in range(8, 33) if np.array_equal(row[p:], row[:-p]))
    assert 8 <= period <= 32 and period < probe.FIRST_SCORED


def test_plateau_exit_is_the_first_window_a_nat_under_chance():
  curve = [(50, 7.6), (100, 6.7), (150, 6.5), (200, 2.0)]
  assert probe.plateau_exit(curve, 7.62) == 150
  assert probe.plateau_exit(curve[:2], 7.62) is None


@pytest.mark.integration
def test_probe_runs_both_arms_and_writes_json_and_plot(tmp_path):
  out = tmp_path / "copy.json"
  assert (
    probe.main(["--config", "configs/memory3.py:tiny", "--steps", "50", "--out", str(out)]) == 0
  )
  result = json.loads(out.read_text())
  assert [r["smeared_keys"] for r in result["runs"]] == [False, True]
  assert all(len(r["curve"]) == 1 for r in result["runs"])
  assert (tmp_path / "copy.png").stat().st_size > 0
