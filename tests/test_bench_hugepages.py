"""experiments/bench_hugepages.py end to end: the tunable removes most of a step's faults."""

import glob
import json
import os
import subprocess
import sys

import pytest

from m3jax.run.hugepages import glibc_version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_usable() -> bool:
  version = glibc_version()
  if version is None or version < (2, 35):
    return False  # glibc.malloc.hugetlb is new in 2.35
  try:
    with open(THP) as f:
      return "[never]" not in f.read()
  except OSError:
    return False


@pytest.mark.integration
@pytest.mark.skipif(not _thp_usable(), reason="needs glibc >= 2.35 and THP not 'never'")
def test_huge_pages_remove_most_page_faults_of_a_step(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "GLIBC_TUNABLES")}
  proc = subprocess.run(
    [sys.executable, "experiments/bench_hugepages.py", "--pairs", "1", "--steps", "6"]
    + ["--out", str(tmp_path)],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  (path,) = glob.glob(str(tmp_path / "bench_hugepages_*.json"))
  with open(path) as f:
    result = json.load(f)
  (huge,), (default,) = result["runs"]["hugepages"], result["runs"]["default"]
  assert len(result["ratios_hugepages_over_default"]) == 1
  # small's stage-2 step has 128 MB of temporaries: about 32k 4-KiB faults a step without
  # huge pages (so at least 8k), and a small fraction of that with them.
  assert default["minor_faults_per_step"] > 8000, result
  assert huge["minor_faults_per_step"] < default["minor_faults_per_step"] / 5, result
