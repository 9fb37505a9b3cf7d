"""Issue #12: durable, atomic runtime edits (insert/delete survive a restart, duplicate ids
change nothing, the insertion demo never edits the bank on disk) and long references split."""

import numpy as np
import pytest

from m3jax.data.references import load_references
from m3jax.inference.knowledge import LiveKnowledge
from m3jax.memory.build import BankConfig, build_bank, load_index
from m3jax.memory.store import MemoryBank
from tests.memory.helpers import WordTokenizer, write_kb

SPARSE = BankConfig(encode_batch_size=8, embedder="sparse_tfidf")
NEW = [
  {"id": "new0", "text": "Zorblax is the capital of Quuxland on the river Frobnitz."},
  {"id": "new1", "text": "Quuxland exports glimmerfruit every winter."},
]


@pytest.fixture
def live(tmp_path, tiny_cfg, tiny_params):
  tok = WordTokenizer()
  refs = load_references(write_kb(tmp_path / "kb.jsonl", 6), tok, ref_len=12)
  url = str(tmp_path / "bank")
  build_bank(tiny_params, tiny_cfg, refs, url, bank_cfg=SPARSE, tokenizer=tok, progress=False)

  def open_live():
    bank = MemoryBank.open(url, model_cfg=tiny_cfg, require_complete=True)
    emb, ret = load_index(f"{url}/index", bank)
    return LiveKnowledge(
      tiny_cfg,
      tiny_params,
      bank,
      emb,
      ret,
      dict(zip(bank.ids, bank.texts(bank.ids))),
      tok,
      bank_cfg=SPARSE,
    )

  return url, refs, open_live


def _top(kn, texts, k=3):
  q = getattr(kn.embedder, "embed_sparse", kn.embedder.embed)(texts)
  return kn.retriever.search(q, k)[0].tolist()


@pytest.mark.parametrize("refit", [False, True])
def test_insert_reopen_retrieve_finds_the_inserted_ids(live, refit):
  url, refs, open_live = live
  kn = open_live()
  kn.insert(NEW, refit_index=refit)
  kn.delete([refs[0].id], refit_index=refit)
  queries = ["capital of Quuxland Zorblax", "glimmerfruit winter", refs[0].text, refs[3].text]
  before = _top(kn, queries)
  assert before[0][0] == "new0" and before[1][0] == "new1" and refs[0].id not in before[2]
  again = open_live()  # a restart
  assert _top(again, queries) == before
  assert again.bank.texts(["new0"]) == [NEW[0]["text"]] and refs[0].id not in again.bank
  np.testing.assert_array_equal(again.bank.read(["new1"]).keys, kn.bank.read(["new1"]).keys)


def test_delete_with_duplicate_ids_leaves_bank_and_index_unchanged(live):
  url, refs, open_live = live
  kn = open_live()
  ids, n = kn.bank.ids, len(kn.retriever)
  manifest = dict(kn.bank.manifest)
  for call in (
    lambda: kn.delete([refs[1].id, refs[1].id], refit_index=False),
    lambda: kn.bank.delete([refs[1].id, refs[1].id]),
    lambda: kn.retriever.delete([refs[1].id, refs[1].id]),
    lambda: kn.insert([NEW[0], NEW[0]], refit_index=False),
  ):
    with pytest.raises((ValueError, KeyError), match="nothing was"):
      call()
  assert kn.bank.manifest == manifest and len(kn.retriever) == n
  again = open_live()
  assert again.bank.ids == ids and len(again.retriever) == n


def test_killed_insertion_demo_leaves_the_bank_as_it_was(live, tiny_cfg, tiny_params, monkeypatch):
  from m3jax.evaluate import evaluation
  from m3jax.evaluate import insertion
  from m3jax.inference import knowledge

  url, refs, open_live = live
  kn = open_live()
  ids_before = kn.bank.ids
  items = [{"question": "q", "answer": "a", "gold_ref_id": refs[2].id}]

  def killed(*a, **k):
    raise SystemExit("killed mid-demo")

  monkeypatch.setattr(insertion, "insertion_roundtrip", killed)
  monkeypatch.setattr(knowledge.LiveKnowledge, "insert", killed)  # the restore dies too
  with pytest.raises(SystemExit):
    evaluation.insertion_demo(
      tiny_cfg,
      tiny_params,
      WordTokenizer(),
      refs,
      kn.bank,
      kn.embedder,
      kn.retriever,
      items,
      None,
      None,
    )
  assert MemoryBank.open(url).ids == ids_before


def test_a_long_reference_becomes_ten_references_seen_everywhere(live, tiny_cfg):
  from m3jax.inference.rag import rag_text
  from m3jax.memory.feeder import MemoryFeeder

  url, refs, open_live = live
  kn = open_live()
  ref_len = tiny_cfg.memory.ref_len
  sentences = [
    " ".join([f"Sentence {i} names"] + [f"w{i}x{j}" for j in range(ref_len - 4)] + ["end."])
    for i in range(10)
  ]  # ref_len words: one reference each
  text = " ".join(sentences)
  assert len(kn.tokenizer.encode(text)) == 10 * ref_len
  got = kn.insert([{"id": "long", "text": text}])  # refit: the new words are indexed
  assert got == ["long"] + [f"long#{i}" for i in range(1, 10)]
  assert kn.bank.texts(got) == sentences  # nothing truncated
  feeder = MemoryFeeder(kn.embedder, kn.retriever, kn.bank, 1)
  for i, piece in enumerate(got):
    ids = feeder.retrieve([f"w{i}x3 w{i}x4 w{i}x5"])
    assert ids[0, 0] == piece
    assert sentences[i] in rag_text(kn.bank.texts([ids[0, 0]]), "question")
    assert kn.bank.read([piece]).keys.shape[0] == 1
  n = len(kn.retriever)
  kn.delete(["long"], refit_index=False)  # the document id deletes every piece
  assert not any(kn.bank.contains(got)) and len(kn.retriever) == n - 10
  again = kn.insert([{"id": "long", "text": text}], refit_index=False)
  kn.delete(again, refit_index=False)  # what insert returned: "long" and its own pieces
  assert not any(kn.bank.contains(got)) and len(kn.retriever) == n - 10
