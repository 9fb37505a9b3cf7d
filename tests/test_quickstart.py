"""The README's command-line quickstart, followed literally on a fresh clone.

The commands are read from README.md itself (the block after "Quickstart"), so the test
follows what a reader sees: ``train`` with the tiny config, then ``build-memory``,
``generate`` and ``eval`` with only ``--workdir``, each a subprocess in a fresh clone of
this checkout's committed HEAD. Only the workdir path is replaced (``/tmp/m3`` -> tmp).
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_WORKDIR = "/tmp/m3"


def quickstart_commands() -> list[str]:
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  block = re.search(r"Quickstart[^\n]*\n+```\n(.*?)```", text, re.S)
  assert block, "README.md has no Quickstart code block"
  return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_quickstart_needs_only_the_workdir_after_train():
  cmds = quickstart_commands()
  assert [shlex.split(c)[3] for c in cmds] == ["train", "build-memory", "generate", "eval"]
  assert "--config" in cmds[0]
  for c in cmds[1:]:
    assert "--config" not in c and f"--workdir {README_WORKDIR}" in c, c


@pytest.mark.integration
def test_readme_quickstart_on_a_fresh_clone(tmp_path):
  clone, work = tmp_path / "m3jax", tmp_path / "m3"
  subprocess.run(["git", "clone", "-q", ROOT, str(clone)], check=True)
  env = {
    **os.environ,
    "PYTHONPATH": str(clone),
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "",  # one CPU device, as a user has (tests/conftest.py asks for 8)
  }
  where = subprocess.run(
    [sys.executable, "-c", "import m3jax; print(m3jax.__file__)"],
    cwd=clone,
    env=env,
    capture_output=True,
    text=True,
    check=True,
  ).stdout
  assert where.startswith(str(clone)), where  # the clone's code, not this checkout's
  outputs = {}
  for line in quickstart_commands():
    argv = shlex.split(line.replace(README_WORKDIR, str(work)))
    assert argv[:3] == ["python", "-m", "m3jax"]
    r = subprocess.run(
      [sys.executable] + argv[1:], cwd=clone, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, f"{line}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    outputs[argv[3]] = r.stdout
  assert (work / "config.json").exists() and (work / "run.json").exists()
  assert any(p.startswith("bank-step") for p in os.listdir(work))
  assert outputs["generate"].strip()
  res = json.loads((work / "eval" / "eval.json").read_text())
  assert set(res["qa_multiple_choice"]) >= {"no_memory", "memory"}
  # Nothing in the clone changed but its ignored data folder.
  status = subprocess.run(
    ["git", "status", "--porcelain"], cwd=clone, capture_output=True, text=True, check=True
  ).stdout
  assert status == "", status
