"""experiments/gpu_check.sh runs end to end on CPU at a tiny size, so it is ready for a GPU."""

import glob
import json
import os
import subprocess
import sys

import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.integration
def test_gpu_check_tiny_runs_every_benchmark(tmp_path):
  env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
  env.pop("XLA_FLAGS", None)  # one CPU device, as on a real run
  proc = subprocess.run(
    ["bash", "experiments/gpu_check.sh", "--tiny"],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
  for name in ("ceilings", "attention", "decode", "train", "memory"):
    files = glob.glob(str(tmp_path / f"bench_{name}_*.json"))
    assert files, f"bench_{name} wrote no JSON; output:\n{proc.stdout[-3000:]}"
    with open(files[0]) as f:
      assert json.load(f)["machine"]["backend"] == "cpu"
  with open(glob.glob(str(tmp_path / "bench_decode_*.json"))[0]) as f:
    decode = json.load(f)
  for key in ("ratio_memory_vs_none", "ratio_memory_vs_rag", "memory_time_share"):
    assert key in decode
  assert set(decode["conditions"]) >= {"no_memory", "memory_cache_off", "memory_cache_on", "rag"}
  assert glob.glob(str(tmp_path / "cmdbuf" / "bench_decode_*.json"))
