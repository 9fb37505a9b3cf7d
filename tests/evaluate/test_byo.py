"""Bring your own KB: bank from a user JSONL, runtime insertion/deletion, clear errors."""

import json

import numpy as np
import pytest

from m3jax.data.references import Reference
from m3jax.data.sources import read_jsonl
from m3jax.evaluate import qa
from m3jax.inference import memory_sources
from m3jax.inference.knowledge import LiveKnowledge
from m3jax.memory.build import BankConfig, build_bank
from tests.evaluate import world
from tests.inference.fakes import tiny_model


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("byo")
  cfg, params = tiny_model()
  from m3jax.data.vocab import ByteVocab

  vocab = ByteVocab()
  kb = _write(
    tmp / "kb.jsonl",
    [
      {"id": f"u{i}", "text": f"{n} | job = {world.JOBS[i % 6]}"} for i, n in enumerate(world.NAMES)
    ],
  )
  refs = [
    Reference(r["id"], r["text"], tuple(vocab.encode(r["text"])[: cfg.memory.ref_len]))
    for r in read_jsonl(kb, "references")
  ]
  bank_cfg = BankConfig(index_kind="numpy", encode_batch_size=8, embedding_dim=256)
  bank = build_bank(params, cfg, refs, str(tmp / "bank"), bank_cfg=bank_cfg, progress=False)
  emb, ret = bank.index
  return (
    cfg,
    vocab,
    LiveKnowledge(
      cfg,
      params,
      bank,
      emb,
      ret,
      {r.id: r.text for r in refs},
      vocab,
      bank_cfg=bank_cfg,
      encode_batch_size=8,
    ),
  )


def _memory_ids(cfg, vocab, knowledge, question):
  """The ids the memory condition retrieves for the whole question (one query chunk)."""
  source = memory_sources.RetrievedMemory(knowledge.feeder(), vocab)
  toks = qa.encode_prompt(vocab, qa.qa_prompt(question))
  return [i for i in source.retrieve_ids([qa.ChunkQuery(0, 0, toks)])[0] if i is not None]


def test_insert_then_delete_changes_retrieval_and_qa_inputs(live):
  cfg, vocab, kn = live
  question = "What is the job of Vorpexian?"
  before = _memory_ids(cfg, vocab, kn, question)
  assert "new-1" not in before
  kn.insert([{"id": "new-1", "text": "Vorpexian | job = juggler"}])
  assert "new-1" in kn.bank
  after = _memory_ids(cfg, vocab, kn, question)
  assert after[0] == "new-1"
  # The QA inputs (memory K/V attended by the question) now hold the new reference.
  mem, ids = memory_sources.RetrievedMemory(kn.feeder(), vocab)(
    [qa.ChunkQuery(0, 0, qa.encode_prompt(vocab, qa.qa_prompt(question)))]
  )
  row = kn.bank.read(["new-1"])
  np.testing.assert_allclose(
    np.asarray(mem.keys_LxBxCxRxKxMxD[:, 0, 0, 0]), np.asarray(row.keys[0], np.float32), atol=1e-2
  )
  kn.delete(["new-1"])
  assert "new-1" not in kn.bank
  assert "new-1" not in _memory_ids(cfg, vocab, kn, question)
  with pytest.raises(KeyError, match="unknown reference"):
    kn.delete(["new-1"])
  with pytest.raises(ValueError, match="non-empty 'text'"):
    kn.insert([{"id": "x"}])


def test_bad_inputs_give_clear_errors(tmp_path, live):
  cfg, vocab, _ = live
  with pytest.raises(FileNotFoundError, match="not found"):
    read_jsonl(str(tmp_path / "missing.jsonl"), "references")
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b", "text": \n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
    read_jsonl(str(bad), "references")
  with pytest.raises(ValueError, match="exceeds the context budget"):
    qa.encode_prompt(vocab, qa.qa_prompt("why " * 300), max_len=512)
  with pytest.raises(ValueError, match="empty knowledge base"):
    build_bank(None, cfg, [], str(tmp_path / "empty"))


@pytest.mark.integration
def test_insertion_roundtrip_reports_three_states(live, tmp_path):
  from m3jax.evaluate.insertion import insertion_roundtrip

  cfg, vocab, kn = live
  # ByteVocab + chunk_len 16: the entity name must sit in the first 16-token chunk.
  items = [
    dict(
      question="Wembril job?",
      answer="juggler",
      choices=["juggler", "baker", "poet"],
      gold_ref_id="new-2",
    )
  ]
  params = kn.params
  out = insertion_roundtrip(
    kn,
    cfg,
    params,
    vocab,
    items,
    [{"id": "new-2", "text": "Wembril | job = juggler"}],
    max_new_tokens=2,
    batch_size=2,
  )
  assert out["before"]["gold_retrieved"] == 0.0
  assert out["after_insert"]["gold_retrieved"] == 1.0
  assert out["after_delete"]["gold_retrieved"] == 0.0
  assert "new-2" not in kn.bank
