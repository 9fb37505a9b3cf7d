"""The end-to-end demo on the tiny config: data -> 2 stages -> bank -> eval -> demo.json."""

import json
import os

import pytest

from m3jax.config_loading import load_config
from m3jax.demo import run_demo

REQUIRED = {"qa_exact_match": ("no_memory", "memory", "oracle_memory", "rag", "random_memory"),
            "qa_multiple_choice": ("no_memory", "memory", "oracle_memory", "rag",
                                   "random_memory"),
            "decode_tokens_per_s": ("no_memory", "memory", "rag")}


def _config(tmp_path, smoke: bool):
  c = load_config("configs/memory3.py:tiny", [])
  c.data.data_dir = str(tmp_path / "data")
  if smoke:   # every step runs, on the smallest sizes
    for stage in c.train.stages:
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
  res = run_demo(_config(tmp_path, smoke), str(tmp_path / "work"), results_path=path,
                 plot_dir=str(tmp_path / "plots"), progress=False)
  _check(res, path)
  return res


@pytest.mark.integration
def test_demo_smoke_then_eval_command(tmp_path):
  """~90 s on an idle 2-core CPU (mostly compiles); the full tiny run below is slow.

  ``python -m m3jax eval`` on the demo's workdir reopens the same checkpoint and bank and
  must reproduce the demo's QA numbers."""
  from m3jax import cli
  demo = _run_and_check(tmp_path, smoke=True)
  c = _config(tmp_path, smoke=True)
  overrides = [f"--config.data.data_dir={c.data.data_dir}"] + [
      f"--config.eval.{k}={c.eval[k]}" for k in (
          "num_questions", "qa_batch_size", "max_new_tokens", "perplexity_sequences",
          "speed_batch", "speed_prompt_tokens", "speed_new_tokens", "speed_runs",
          "attribution_examples", "insertion_examples")]
  path = tmp_path / "eval.json"
  assert cli.main(["eval", "--config", "configs/memory3.py:tiny", "--workdir",
                   str(tmp_path / "work"), "--results", str(path),
                   "--plots", str(tmp_path / "eval_plots")] + overrides) == 0
  evaluated = json.loads(path.read_text())
  assert evaluated["checkpoint_step"] == demo["checkpoint_step"]
  for key in ("qa_exact_match", "qa_multiple_choice"):
    assert evaluated[key] == demo[key]


@pytest.mark.slow
def test_demo_tiny_full(tmp_path):
  _run_and_check(tmp_path, smoke=False)


# ----------------------------------------------------------------------------- notebook
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "experiments", "colab", "quickstart.ipynb")


def test_notebook_outputs_are_cleared():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  NotebookClient = pytest.importorskip("nbclient").NotebookClient
  monkeypatch.setenv("M3JAX_QUICKSTART_DIR", str(tmp_path))
  monkeypatch.setenv("M3JAX_QUICKSTART_STEPS", "2")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": os.path.join(ROOT, "experiments", "colab")}}
                 ).execute()
  assert os.path.exists(tmp_path / "demo.json")
