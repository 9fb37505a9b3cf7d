"""Fast smoke of the whole evaluation (no training): random tiny model, real tiny data,
real bank + index; every results key the demo writes is present and sane."""

import os

import pytest

from configs.memory3 import get_config
from m3jax.data.config import data_config_from
from m3jax.data.prepare import load_vocab, prepare_data
from m3jax.run.loading import kb_references
from m3jax.evaluate import evaluation, report
from m3jax.memory.build import BankConfig, build_bank
from tests.inference.fakes import tiny_model


@pytest.mark.integration
def test_evaluate_all_smoke(tmp_path):
  config = get_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  ev = report.eval_config_from(
    dict(
      config.eval.to_dict(),
      num_questions=4,
      qa_batch_size=4,
      max_new_tokens=2,
      perplexity_sequences=2,
      speed_batch=2,
      speed_prompt_tokens=16,
      speed_new_tokens=4,
      speed_runs=2,
      attribution_examples=1,
      insertion_examples=2,
    )
  )
  paths = prepare_data(config.data)
  vocab = load_vocab(data_config_from(config.data), paths)
  cfg, params = tiny_model(init_std=0.02)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank = build_bank(
    params,
    cfg,
    refs,
    str(tmp_path / "bank"),
    progress=False,
    bank_cfg=BankConfig(index_kind="numpy", encode_batch_size=16),
  )
  emb, ret = bank.index
  out = evaluation.evaluate_all(
    cfg,
    params,
    vocab,
    paths,
    refs,
    bank,
    emb,
    ret,
    ev,
    plot_dir=str(tmp_path / "plots"),
    progress=False,
    only=evaluation.PARTS,  # the default leaves the slow retrievers comparison out
  )
  for key in ("qa_exact_match", "qa_multiple_choice"):
    assert set(out[key]) == set(ev.conditions)
  assert set(out["decode_tokens_per_s"]) == {"no_memory", "memory", "memory_warm", "rag"}
  conds = out["speed"]["conditions"]
  assert conds["memory"]["cold"] and not conds["memory_warm"]["cold"]
  assert len(conds["rag"]["tokens_per_s_runs"]) == out["speed"]["rounds"] == ev.speed_runs
  ratios = out["speed"]["ratios"]
  assert set(out["decode_ratios"]) == set(ratios) >= {"memory_vs_none", "memory_vs_rag"}
  got = ratios["memory_vs_rag"]
  per_round = [
    m / r for m, r in zip(conds["memory"]["tokens_per_s_runs"], conds["rag"]["tokens_per_s_runs"])
  ]
  assert got["values"] == pytest.approx(per_round) and got["n"] == ev.speed_runs
  assert set(out["perplexity"]) == {"no_memory", "memory", "oracle_memory"}
  assert all(v > 0 for v in out["decode_tokens_per_s"].values())
  assert 0 <= out["retrieval"]["gold_recall_at_R"] <= 1
  by_ret = out["retrieval_by_retriever"]
  assert set(by_ret) == {"tfidf", "minilm", "self"}
  assert all(0 <= v["top1"] <= v["recall5"] <= 1 for v in by_ret.values())
  ki = out["knowledge_insertion"]
  assert ki["after_insert"]["gold_retrieved"] >= ki["after_delete"]["gold_retrieved"] == 0.0
  assert len(bank) == len(refs)  # the bank is restored afterwards
  assert os.path.exists(out["plots"]["accuracy"])
  # The synthetic world's QA carries attributes: a per-attribute breakdown and its plot.
  by_attr = out["qa_multiple_choice_by_attribute"]["memory"]
  assert by_attr and sum(v["count"] for v in by_attr.values()) == out["num_questions"]
  assert os.path.exists(out["plots"]["accuracy_by_attribute"])
  assert "memory" in report.table(out)
  with pytest.raises(ValueError, match="valid keys"):
    report.eval_config_from({"num_question": 3})


def test_accuracy_by_attribute_plot(tmp_path):
  from m3jax.evaluate import plots

  assert plots.accuracy_by_attribute({"no_memory": {}}, str(tmp_path / "none.png")) is None
  by = {
    "no_memory": {"year": {"accuracy": 0.25, "count": 4}},
    "memory": {"year": {"accuracy": 0.75, "count": 4}, "city": {"accuracy": 1.0, "count": 2}},
  }
  path = plots.accuracy_by_attribute(by, str(tmp_path / "p" / "by_attr.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_only_qa_on_a_corpus_too_small_for_perplexity(tmp_path):
  """A part that cannot run is skipped with its reason; the others are kept."""
  import numpy as np

  config = get_config("tiny")
  config.data.data_dir = str(tmp_path / "data")
  ev = report.eval_config_from(
    dict(
      config.eval.to_dict(),
      num_questions=4,
      qa_batch_size=4,
      max_new_tokens=2,
      conditions=("no_memory", "memory"),
    )
  )
  paths = prepare_data(config.data)
  np.save(paths.tokens("valid"), np.arange(5, 10, dtype=np.int32))  # 5 held-out tokens
  vocab = load_vocab(data_config_from(config.data), paths)
  cfg, params = tiny_model(init_std=0.02)
  refs = kb_references(paths, vocab, cfg.memory.ref_len)
  bank = build_bank(
    params,
    cfg,
    refs,
    str(tmp_path / "bank"),
    progress=False,
    bank_cfg=BankConfig(index_kind="numpy", encode_batch_size=16),
  )
  emb, ret = bank.index
  out = evaluation.evaluate_all(
    cfg,
    params,
    vocab,
    paths,
    refs,
    bank,
    emb,
    ret,
    ev,
    plot_dir=str(tmp_path / "plots"),
    progress=False,
    only=("qa", "perplexity"),
  )
  assert set(out["qa_multiple_choice"]) == {"no_memory", "memory"}
  assert "perplexity" not in out and "shorter than one sequence" in out["skipped"]["perplexity"]
  assert out["skipped"]["speed"] == "not selected (--only)"
  table = report.table(out)
  assert "retrieval: gold_recall_at_R" in table and "skipped perplexity" in table
  with pytest.raises(ValueError, match="unknown part"):
    evaluation.evaluate_all(
      cfg,
      params,
      vocab,
      paths,
      refs,
      bank,
      emb,
      ret,
      ev,
      plot_dir=str(tmp_path / "plots"),
      only=("qa", "ppl"),
    )
