"""Train-step time with and without glibc's huge-page tunable (m3jax/run/hugepages.py).

A tunable is read when a process starts, so each measurement is a fresh child process that
times the stage-2 step of a config (``bench_train.time_steps``: synthetic batches, median
step) and counts its own minor page faults per step, compilation left out. Children run in
pairs, the two settings alternating and the first of each pair alternating too, and the
table gives the median and spread of the paired ratios (with ÷ without). Writes
``experiments/results/bench_hugepages_<device>.json`` (or ``--out``).

  python experiments/bench_hugepages.py [--pairs 5] [--steps 40]
      [--config configs/memory3.py:small] [--config.train.batch_size=8 ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from m3jax.run.hugepages import SETTING, TUNABLE  # noqa: E402

SETTINGS = {"hugepages": SETTING, "default": f"{TUNABLE}=0"}


def child(config_spec: str, overrides: list[str], steps: int) -> dict:
  """One measurement in this process: the stage-2 median step and the minor page faults
  per step of the timed steps (``bench_train.time_steps``; compilation left out)."""
  from experiments.bench_train import time_steps
  from m3jax.run.config import load_config
  from m3jax.train.config import train_config_from

  config = load_config(config_spec, overrides)
  stage = dataclasses.replace(
    train_config_from(config.train).stages[-1], use_memory=True, init_from=""
  )
  r = time_steps(config, stage, steps)
  return {"step_s": r["step_s"], "minor_faults_per_step": r["minor_faults_per_step"]}


def measure(setting: str, args, overrides: list[str]) -> dict:
  env = dict(os.environ, GLIBC_TUNABLES=SETTINGS[setting])
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--steps", str(args.steps)]
  cmd += ["--config", args.config, *overrides]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"{setting} measurement failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", default="configs/memory3.py:small")
  p.add_argument("--steps", type=int, default=40)
  p.add_argument("--pairs", type=int, default=5)
  p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--out", default=None)
  args, overrides = p.parse_known_args(argv)
  if args.child:
    print(json.dumps(child(args.config, overrides, args.steps)))
    return 0
  from tqdm import tqdm

  from experiments import bench_common

  runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
  for i in tqdm(range(args.pairs), desc="pairs"):
    order = list(SETTINGS) if i % 2 == 0 else list(reversed(SETTINGS))
    for name in order:
      runs[name].append(measure(name, args, overrides))
  ratios = [h["step_s"] / d["step_s"] for h, d in zip(runs["hugepages"], runs["default"])]
  rows = []
  for name, rs in runs.items():
    rows.append(
      (
        name,
        f"{statistics.median(r['step_s'] for r in rs) * 1e3:.1f}",
        f"{statistics.median(r['minor_faults_per_step'] for r in rs):.0f}",
      )
    )
  bench_common.print_table(["setting", "median step ms", "minor faults / step"], rows)
  print(
    f"step time hugepages ÷ default: median {statistics.median(ratios):.3f} "
    f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(ratios)} pairs)"
  )
  result = {
    "machine": bench_common.describe_machine(),
    "config": args.config,
    "overrides": overrides,
    "steps": args.steps,
    "load_average_1m": os.getloadavg()[0],
    "runs": runs,
    "ratios_hugepages_over_default": ratios,
    "median_ratio": statistics.median(ratios),
  }
  print(f"wrote {bench_common.write_json('bench_hugepages', result, args.out)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
