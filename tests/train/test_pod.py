"""Pod operations: bucket workdirs, multislice meshes, preemption agreed across hosts."""

import dataclasses
import os
import pathlib

import numpy as np
import pytest

from m3jax import cli, sharding
from m3jax.train import checkpoint, metrics, paths


class _BucketPath:
  """Stands in for epath.Path on gs://bucket/…, backed by a local folder."""

  root: pathlib.Path = None

  def __init__(self, path):
    assert str(path).startswith("gs://bucket/"), path
    self.local = self.root / str(path)[len("gs://bucket/") :]

  def exists(self):
    return self.local.exists()

  def mkdir(self, parents=False, exist_ok=False):
    self.local.mkdir(parents=parents, exist_ok=exist_ok)

  def read_text(self):
    return self.local.read_text()

  def write_text(self, text):
    self.local.write_text(text)  # an object store writes whole objects only

  def write_bytes(self, data):
    self.local.write_bytes(data)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  monkeypatch.setattr(_BucketPath, "root", tmp_path)
  monkeypatch.setattr(paths.epath, "Path", _BucketPath)
  return tmp_path


def test_bucket_paths_stay_remote_and_append_rewrites(bucket):
  assert paths.absolute("gs://bucket/run") == "gs://bucket/run"
  assert paths.absolute("run") == os.path.abspath("run")
  paths.makedirs("gs://bucket/run")
  logger = metrics.MetricsLogger("gs://bucket/run", progress_bar=False)
  rec = lambda step: {"stage": "warmup", "step": step, "global_step": step, "loss": 1.0, "lr": 0.1}
  logger.write([rec(1)])
  logger.write([rec(2), rec(3)])
  assert [r["step"] for r in metrics.read_jsonl("gs://bucket/run/metrics.jsonl")] == [1, 2, 3]
  logger.rewind(lambda r: r["step"] <= 2)
  assert [r["step"] for r in metrics.read_jsonl("gs://bucket/run/metrics.jsonl")] == [1, 2]
  assert (bucket / "run" / "metrics.jsonl").exists()


def test_only_the_lead_host_writes_metrics(tmp_path):
  logger = metrics.MetricsLogger(str(tmp_path), progress_bar=False, enabled=False)
  logger.rewind(lambda r: True)
  logger.write([{"stage": "s", "step": 1, "global_step": 1, "loss": 1.0, "lr": 0.0}])
  assert not (tmp_path / "metrics.jsonl").exists()


@dataclasses.dataclass(frozen=True)
class _FakeDevice:
  id: int
  slice_index: int
  platform: str = "cpu"
  device_kind: str = "cpu"
  process_index: int = 0


def test_multislice_puts_slices_on_the_data_axis():
  devices = [_FakeDevice(i, i // 4) for i in range(8)]  # 2 slices of 4
  grid = sharding.device_grid((2, 2, 2), devices)
  slice_of = np.vectorize(lambda d: d.slice_index)(grid)
  assert (slice_of[0] == 0).all() and (slice_of[1] == 1).all()
  grid = sharding.device_grid((1, 2, 4), devices, dcn_shape=(1, 2, 1))
  assert (np.vectorize(lambda d: d.slice_index)(grid) == [[[0] * 4, [1] * 4]]).all()
  with pytest.raises(ValueError, match="2 slices cannot lay out as dcn shape"):
    sharding.device_grid((1, 8, 1), devices)


@pytest.mark.integration
def test_preemption_agreed_across_hosts_saves_that_step_and_exits_143(tmp_path, monkeypatch):
  """The sync point JAX's preemption service reports (here: step 3) decides the save."""
  monkeypatch.setattr(
    checkpoint.multihost_utils, "reached_preemption_sync_point", lambda step: step == 3
  )
  args = [
    "train",
    "--config",
    "configs/memory3.py:tiny",
    "--workdir",
    str(tmp_path),
    "--config.model.num_layers=2",
    "--config.train.data_source=synthetic",
    "--config.train.tensorboard=False",
    "--config.train.plot=False",
    "--config.train.progress_bar=False",
    "--config.train.checkpoint_every=5",
  ]
  assert cli.main(args) == 143
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints" / "warmup") if d.isdigit())
  assert steps == [3]  # off-cadence: the agreed step
  assert not (tmp_path / "checkpoints" / "continual").exists()
