"""Storage accounting reproduces the paper's numbers (SPEC.md §2 "Storage numbers")."""

import argparse

from configs.memory3 import get_config
from m3jax.commands import storage as storage_cmd
from m3jax.memory.build import bank_config_from
from m3jax.memory.storage import PIB, TIB, storage_report
from m3jax.model.config import model_config_from


def test_paper_storage_numbers_exact():
  config = get_config("paper_2p4b")
  bank = bank_config_from(config.bank)
  r = storage_report(
    model_config_from(config.model), bank.pq_bytes_per_vector, bank.storage_num_references
  )
  assert r.bytes_bf16 == 450_560 == 22 * 2 * 8 * 8 * 80 * 2
  assert r.bytes_pq == 39_424 == 2_816 * 14
  assert r.bytes_full == 72_089_600
  assert r.sparsity == 160
  assert round(r.bank_bytes(r.bytes_bf16) / TIB, 1) == 45.9
  assert round(r.bank_bytes(r.bytes_pq) / TIB, 1) == 4.0
  assert round(r.bank_bytes(r.bytes_full) / PIB, 2) == 7.17


def test_storage_command_prints_them(capsys):
  args = argparse.Namespace(
    config="configs/memory3.py:paper_2p4b",
    num_references=1.12e8,
    pq_bytes=None,
    config_overrides=[],
  )
  assert storage_cmd.run(args) == 0
  out = capsys.readouterr().out
  for text in (
    "450,560 B",
    "39,424 B",
    "total sparsity               : 160",
    "sparse 45.9 TiB",
    "sparse + PQ 4.0 TiB",
  ):
    assert text in out


def test_every_variant_has_a_valid_bank_section():
  for variant in ("tiny", "small", "paper_2p4b"):
    cfg = bank_config_from(get_config(variant).bank)
    assert cfg.pq_bytes_per_vector <= model_config_from(get_config(variant).model).head_dim
  import pytest

  with pytest.raises(ValueError, match="valid keys"):
    bank_config_from({"bogus": 1})
