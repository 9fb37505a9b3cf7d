"""`python -m m3jax build-memory` end to end on the tiny config (random params, byte tokens)."""

import pytest

from m3jax import cli
from m3jax.memory.build import load_index
from m3jax.memory.feeder import MemoryFeeder
from m3jax.memory.store import MemoryBank
from tests.memory.helpers import write_kb


@pytest.mark.integration
def test_build_memory_cli_pq_then_feed(tmp_path, capsys, tiny_cfg):
  pytest.importorskip("seqio")
  kb = write_kb(tmp_path / "kb.jsonl", 6)
  bank_dir = str(tmp_path / "bank")
  argv = [
    "build-memory",
    "--config",
    "configs/memory3.py:tiny",
    "--kb",
    kb,
    "--bank",
    bank_dir,
    "--quantization",
    "pq",
    "--config.bank.pq_iters=3",
    "--config.bank.embedding_dim=32",
  ]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert "RANDOM parameters" in out and "bank complete" in out
  bank = MemoryBank.open(bank_dir, model_cfg=tiny_cfg, checkpoint_step=0, require_complete=True)
  assert bank.manifest["quantization"]["kind"] == "pq" and len(bank) > 6
  assert 0 < bank.manifest["quantization"]["relative_mse"] < 0.5
  embedder, retriever = load_index(f"{bank_dir}/index")
  mem, ids = MemoryFeeder(embedder, retriever, bank, 5).fetch([["town3 bridges", "dish1"]])
  assert mem.keys_LxBxCxRxKxMxD.shape == (2, 1, 2, 5, 2, 4, 16)
  assert mem.mask_BxCxRxM.any()
  assert cli.main(argv) == 0  # rerun: resumes a complete bank, encodes nothing
  assert MemoryBank.open(bank_dir).ids == bank.ids


@pytest.mark.integration
def test_build_memory_cli_refuses_a_non_empty_folder(tmp_path):
  pytest.importorskip("seqio")
  kb = write_kb(tmp_path / "kb.jsonl", 2)
  folder = tmp_path / "not_a_bank"
  (folder / "keys").mkdir(parents=True)
  (folder / "keys" / "mine.txt").write_text("precious")
  assert (
    cli.main(
      ["build-memory", "--config", "configs/memory3.py:tiny", "--kb", kb, "--bank", str(folder)]
    )
    == 2
  )
  assert (folder / "keys" / "mine.txt").read_text() == "precious"
