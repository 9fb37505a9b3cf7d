"""The end-to-end demo on the tiny config: data -> 2 stages -> bank -> eval -> demo.json."""

import json
import os

import pytest

from m3jax.run.config import load_config
from m3jax.demo import run_demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REQUIRED = {
  "qa_exact_match": ("no_memory", "memory", "oracle_memory", "rag", "random_memory"),
  "qa_multiple_choice": ("no_memory", "memory", "oracle_memory", "rag", "random_memory"),
  "decode_tokens_per_s": ("no_memory", "memory", "rag"),
}


def _config(tmp_path, smoke: bool):
  c = load_config("configs/memory3.py:tiny", [])
  c.data.data_dir = str(tmp_path / "data")
  c.train.tensorboard = c.train.progress_bar = False  # on by default; slow to start in tests
  if smoke:  # every step runs, on the smallest sizes
    for stage in c.train.stages.values():
      stage["steps"], stage["warmup_steps"] = 2, 1
    c.train.checkpoint_every = 2
    c.eval.num_questions = 4
    c.eval.qa_batch_size = 4
    c.eval.max_new_tokens = 3
    c.eval.perplexity_sequences = 2
    c.eval.speed_batch, c.eval.speed_prompt_tokens = 2, 16
    c.eval.speed_new_tokens, c.eval.speed_runs = 8, 2
    c.eval.attribution_examples = 1
    c.eval.insertion_examples = 2
  return c


def _check(res, path):
  with open(path) as f:
    saved = json.load(f)
  for key, conds in REQUIRED.items():
    assert set(conds) <= set(saved[key]), key
    for c in conds:
      assert saved[key][c] is not None
  assert saved["wall_seconds"] > 0 and saved["machine"]["cpu_count"] >= 1
  assert saved["qa_exact_match"] == res["qa_exact_match"]
  for png in saved["plots"].values():
    assert png is None or os.path.exists(png)


def _run_and_check(tmp_path, smoke: bool):
  path = str(tmp_path / "demo.json")
  res = run_demo(
    _config(tmp_path, smoke),
    str(tmp_path / "work"),
    results_path=path,
    plot_dir=str(tmp_path / "plots"),
    progress=False,
  )
  _check(res, path)
  return res


def _git_status() -> str:
  import subprocess

  return subprocess.run(
    ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True
  ).stdout


@pytest.mark.integration
def test_demo_smoke_then_eval_command(tmp_path, monkeypatch):
  """~90 s on an idle 2-core CPU (mostly compiles); the full tiny run below is slow.

  ``python -m m3jax eval --workdir W`` alone (the workdir's config.json is the config),
  run from the repository root, reopens the same checkpoint and bank, reproduces the
  demo's QA numbers, writes under W/eval/ only and changes no file of the repository."""
  from m3jax import cli

  demo = _run_and_check(tmp_path, smoke=True)
  work = tmp_path / "work"
  assert (work / "config.json").exists() and (work / "run.json").exists()
  before = _git_status()
  monkeypatch.chdir(ROOT)
  assert cli.main(["eval", "--workdir", str(work)]) == 0
  evaluated = json.loads((work / "eval" / "eval.json").read_text())
  assert evaluated["checkpoint_step"] == demo["checkpoint_step"]
  for key in ("qa_exact_match", "qa_multiple_choice"):
    assert evaluated[key] == demo[key]
  assert _git_status() == before
  # An override that changes the trained model is refused, naming the key.
  assert cli.main(["eval", "--workdir", str(work), "--config.model.num_layers=2"]) == 2
  # A bank keeping more tokens per head than training is not another model: it is built
  # beside the first (its own folder) and read with its own k.
  k = demo["memory_tokens_per_head"] * 2
  assert (
    cli.main(["eval", "--workdir", str(work), "--only", "qa", f"--config.bank.tokens_per_head={k}"])
    == 0
  )
  assert json.loads((work / "eval" / "eval.json").read_text())["memory_tokens_per_head"] == k
  assert (work / f"bank-step{demo['checkpoint_step']}-k{k}").is_dir()
  assert (work / f"bank-step{demo['checkpoint_step']}").is_dir()
  # generate reads the same run (run.loading.load_trained_run); no_memory opens no bank.
  for mode in ("memory", "no_memory", "rag"):
    argv = ["generate", "--workdir", str(work), "--prompt", "Where", "--max-new-tokens", "2"]
    assert cli.main([*argv, "--mode", mode]) == 0
  assert _git_status() == before


@pytest.mark.slow
def test_demo_tiny_full(tmp_path):
  _run_and_check(tmp_path, smoke=False)


# ----------------------------------------------------------------------------- notebook
NOTEBOOK = os.path.join(ROOT, "experiments", "colab", "quickstart.ipynb")


def test_notebook_outputs_are_cleared():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
  """Executes exactly the Colab cells, the clone cell pointed at this checkout (its
  committed HEAD, cloned into tmp), within 5 minutes on this CPU."""
  import time

  nbformat = pytest.importorskip("nbformat")
  NotebookClient = pytest.importorskip("nbclient").NotebookClient
  monkeypatch.setenv("M3JAX_REPO", f"file://{ROOT}")
  monkeypatch.setenv("M3JAX_CHECKOUT", str(tmp_path / "checkout"))
  monkeypatch.setenv("M3JAX_QUICKSTART_DIR", str(tmp_path / "work"))
  monkeypatch.delenv("M3JAX_QUICKSTART_STEPS", raising=False)  # the cells' own default
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("PIP_NO_INDEX", "1")  # everything is installed here: no downloads
  nb = nbformat.read(NOTEBOOK, as_version=4)
  t0 = time.perf_counter()
  NotebookClient(
    nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  assert time.perf_counter() - t0 < 300
  assert os.path.exists(tmp_path / "work" / "demo.json")
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
  assert "seconds per step" in outputs and "exact match" in outputs
  assert any(
    "image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs
  )
