"""`python -m m3jax prepare`: sources, vocabulary and pre-retrieval of both splits, once."""

from __future__ import annotations

import glob
import os

from m3jax import cli


def test_prepare_command_pretrieves_both_splits_then_does_nothing(tmp_path, capsys):
  data_dir = tmp_path / "data"
  argv = ["prepare", "--config", "configs/memory3.py:tiny", f"--config.data.data_dir={data_dir}"]
  assert cli.main(argv) == 0
  assert str(data_dir) in capsys.readouterr().out
  retrieved = sorted(glob.glob(str(data_dir / "pretrieval-*.npz")))
  assert len(retrieved) == 2, "one pre-retrieval file per split (train, valid)"
  stamps = {p: os.path.getmtime(p) for p in retrieved + [str(data_dir / "manifest.json")]}
  assert cli.main(argv) == 0
  assert {p: os.path.getmtime(p) for p in stamps} == stamps
