"""What every benchmark shares: machine description, device tag, table printing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import subprocess

from m3jax.evaluate.report import cpu_model

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def device_tag() -> str:
  """cpu | h100 | h200 | a100 | tpu… (used in result file names)."""
  import jax

  dev = jax.devices()[0]
  if dev.platform == "cpu":
    return "cpu"
  kind = dev.device_kind.lower()
  for tag in ("h200", "h100", "a100", "a800", "l4"):
    if tag in kind:
      return tag
  return kind.replace(" ", "_")


def describe_machine() -> dict:
  import jax

  dev = jax.devices()[0]
  cpu = cpu_model()
  info = {
    "backend": dev.platform,
    "device_kind": dev.device_kind,
    "device_count": jax.device_count(),
    "cpu": cpu,
    "cpu_count": os.cpu_count(),
    "jax": jax.__version__,
    "python": platform.python_version(),
  }
  if dev.platform == "gpu":
    try:
      info["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=20,
      ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
      pass
  return info


def print_table(header, rows) -> None:
  rows = [tuple(str(c) for c in r) for r in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
  fmt = "  ".join(f"{{:<{w}}}" for w in widths)
  print(fmt.format(*header))
  print("  ".join("-" * w for w in widths))
  for r in rows:
    print(fmt.format(*r))


def write_json(name: str, result: dict, out_dir: str | None = None, tag: str | None = None) -> str:
  out_dir = out_dir or RESULTS_DIR
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"{name}_{tag or device_tag()}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2, sort_keys=True, default=float)
  return path


def median_seconds(fn, *args, repeats: int = 5) -> float:
  """Median wall time of ``fn(*args)`` after two untimed calls (compile, warm-up)."""
  import time

  import jax

  jax.block_until_ready(fn(*args))
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]
