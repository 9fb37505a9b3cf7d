"""Issue #12: a knowledge-base line longer than ``ref_len`` is split, never truncated, in
every path (training arrays, bank, retrieval, RAG, gold ids), so all see the same text."""

import json

import numpy as np


from m3jax.data.references import document_pieces, split_reference, split_tokens
from tests.data.conftest import tiny_data_cfg
from tests.memory.helpers import WordTokenizer


def _segment(i: int) -> str:
  """32 bytes (the tiny ref_len), no sentence end: 8 words only this segment holds."""
  return " ".join(f"k{i}{c}" for c in "abcdefgh") + " "


def test_split_tokens_prefers_sentence_ends_and_never_drops_a_token():
  end = {7}.__contains__  # token 7 ends a sentence
  toks = [1, 2, 7, 3, 4, 5, 6, 8, 9, 1, 7]
  spans = split_tokens(toks, 4, end)
  assert spans == [(0, 3), (3, 7), (7, 11)]  # cut after the 7; no 7 in [3, 7): hard cut
  assert sum((toks[a:b] for a, b in spans), []) == toks
  assert split_tokens(toks, 100, end) == [(0, len(toks))]
  assert split_tokens(list(range(40)), 4) == [(i, i + 4) for i in range(0, 40, 4)]


def test_a_line_that_fits_keeps_its_id_and_text_a_long_one_is_split_at_sentences():
  tok = WordTokenizer()
  (short,) = split_reference("x", "alpha  beta.", tok, 4)
  assert (short.id, short.text, len(short.tokens)) == ("x", "alpha  beta.", 2)  # text as given
  refs = split_reference("d", "one two. three four five. six seven", tok, 4)
  assert [r.id for r in refs] == ["d", "d#1", "d#2"]
  assert [r.text for r in refs] == ["one two.", "three four five.", "six seven"]
  assert all(list(r.tokens) == tok.encode(r.text) for r in refs)


def test_document_pieces_maps_a_gold_id_to_every_piece_in_order():
  ids = ["a", "a#2", "a#1", "b", "c#0", "c#1", "c#10", "d#x"]
  got = document_pieces(ids)
  assert got["a"] == ["a", "a#1", "a#2"] and got["b"] == ["b"]
  assert got["c"] == ["c#0", "c#1", "c#10"]  # a document file's chunks (load_references)
  assert got["a#1"] == ["a#1"] and got["d#x"] == ["d#x"] and "d" not in got


def test_ten_ref_len_line_is_ten_references_for_training_memory_retrieval_and_rag(
  tmp_path, tiny_cfg, tiny_params, capsys
):
  """The real path of the demo and eval: prepared data -> kb_references -> the run's bank
  (build_bank_for) -> the eval feeder, RAG prompts and gold diagnostics."""
  from configs.memory3 import get_config
  from m3jax.data import kb, pipeline
  from m3jax.data.prepare import load_vocab
  from m3jax.evaluate.evaluation import retrieval_diagnostics
  from m3jax.evaluate.qa import encode_prompt
  from m3jax.inference import memory_sources, rag
  from m3jax.memory.feeder import MemoryFeeder
  from m3jax.run.loading import build_bank_for, kb_references

  config = get_config("tiny")
  cfg = tiny_cfg
  n = cfg.memory.ref_len
  long_text = "".join(_segment(i) for i in range(10))
  short = [{"id": f"s{i}", "text": f"Short fact {i} about town{i}."} for i in range(4)]
  lines = short[:2] + [{"id": "long", "text": long_text}] + short[2:]
  (tmp_path / "kb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (tmp_path / "t.jsonl").write_text(json.dumps({"text": "Some training text. " * 40}) + "\n")
  question = {"question": "k5a k5b k5c k5d?", "answer": "k5e", "gold_ref_id": "long"}
  (tmp_path / "qa.jsonl").write_text(json.dumps(question) + "\n")
  data = tiny_data_cfg(tmp_path / "d", synthetic=False, real_text=False, vocab_kind="byte")
  data.user_files.references = str(tmp_path / "kb.jsonl")
  data.user_files.train_text = str(tmp_path / "t.jsonl")
  data.user_files.qa = str(tmp_path / "qa.jsonl")
  config.data = data
  paths = pipeline.prepare_data(data)
  vocab = load_vocab(pipeline.data_config_from(data), paths)
  assert len(vocab.encode(long_text)) == 10 * n

  capsys.readouterr()
  refs = kb_references(paths, vocab, n)
  assert len(kb_references(paths, vocab, 10 * n)) == 5  # every line fits whole
  assert capsys.readouterr().out == ""  # silent: the run's fit says it once (split_note)
  lengths = np.array([n // 2] * 4 + [10 * n])
  # One line of five split (> 10%): the note names the ref_len that keeps 90% whole.
  assert "1 of the 5 knowledge-base lines" in kb.split_note(lengths, n)
  assert f"--config.model.memory.ref_len={int(np.percentile(lengths, 90))} or" in (
    kb.split_note(lengths, n)
  )
  # One of twenty (5%): said, without advice.
  assert kb.split_note(np.array([n // 2] * 19 + [10 * n]), n).endswith("sentence ends")
  assert kb.split_note(lengths, 10 * n) is None
  pieces = ["long"] + [f"long#{i}" for i in range(1, 10)]
  assert [r.id for r in refs] == ["s0", "s1", *pieces, "s2", "s3"]
  text_of = {r.id: r.text for r in refs}
  assert [text_of[p] for p in pieces] == [_segment(i) for i in range(10)]  # nothing lost
  assert text_of["s0"] == short[0]["text"]  # a line that fits keeps its id and text
  tokens, lengths = kb.reference_arrays(refs, n)  # the training rows
  assert tokens.shape == (14, n) and lengths[2:12].tolist() == [n] * 10

  bank, embedder, retriever = build_bank_for(
    config, cfg, tiny_params, refs, str(tmp_path / "w"), 0, False, vocab=vocab
  )
  assert len(bank) == 14 and bank.read(pieces).keys.shape[0] == 10  # memory: 10 rows
  assert bank.texts(pieces) == [text_of[p] for p in pieces]
  feeder = MemoryFeeder(embedder, retriever, bank, cfg.memory.refs_per_chunk)
  for i, p in enumerate(pieces):
    assert feeder.retrieve([_segment(i)])[0, 0] == p  # retrieval finds each piece by its text
  source = memory_sources.RetrievedMemory(feeder, vocab)
  enc = lambda t: encode_prompt(vocab, t)
  (prompt,), ids = rag.rag_prompts(source, [question["question"]], enc, text_of.get, 16)
  assert ids[0, 0] == "long#5" and _segment(5) in prompt  # RAG shows the piece's text

  gold = document_pieces(text_of)
  diag = retrieval_diagnostics([question], source, source, vocab, 16, gold)
  assert diag["gold_top1"] == 1.0 and diag["gold_recall_at_R"] == 1.0  # a piece is gold
  diag = retrieval_diagnostics(
    [question], source, source, vocab, 16, gold, text_of=text_of, refs_per_chunk=5
  )
  # Memory reads the piece holding the answer; the oracle reads the first 5 pieces, not it.
  assert diag["answer_in_retrieved"] == 1.0 and diag["answer_in_oracle"] == 0.0
  diag = retrieval_diagnostics(
    [question], source, source, vocab, 16, gold, text_of=text_of, refs_per_chunk=6
  )
  assert diag["answer_in_oracle"] == 1.0
  oracle = memory_sources.OracleMemory(feeder, ["long"], gold)
  assert oracle.ids[0].tolist() == pieces[: cfg.memory.refs_per_chunk]
  rand = memory_sources.RandomMemory(feeder, 50, list(text_of), ["long"] * 50, 0, gold)
  assert not set(pieces) & set(rand.ids.ravel())
