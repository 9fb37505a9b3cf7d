"""Knowledge base -> references: boundaries, limits, stable ids, clear errors."""

import json

import pytest

from m3jax.data.references import load_references

from tests.memory.helpers import write_kb


def test_chunks_respect_documents_sentences_and_length(tmp_path, word_tok):
  kb = write_kb(tmp_path / "kb.jsonl", 5)
  refs = load_references(kb, word_tok, ref_len=12)
  assert refs and all(0 < len(r.tokens) <= 12 for r in refs)
  for r in refs:
    doc = r.id.split("#")[0]
    assert r.text in json.loads(open(kb).readlines()[int(doc[3:])])["text"]
    assert list(r.tokens) == word_tok.encode(r.text)
  # Packed at sentence boundaries whenever the sentence fits: every chunk ends a sentence.
  assert all(r.text.endswith(".") for r in refs)
  # Ids are "doc#i", consecutive per document, stable across runs.
  again = load_references(kb, word_tok, ref_len=12)
  assert [r.id for r in refs] == [r.id for r in again]
  by_doc = {}
  for r in refs:
    by_doc.setdefault(r.id.split("#")[0], []).append(int(r.id.split("#")[1]))
  assert all(v == list(range(len(v))) for v in by_doc.values())


def test_long_sentence_is_split_by_tokens(tmp_path, word_tok):
  words = [f"w{i}" for i in range(25)]
  (tmp_path / "kb.jsonl").write_text(json.dumps({"id": "x", "text": " ".join(words)}) + "\n")
  refs = load_references(str(tmp_path / "kb.jsonl"), word_tok, ref_len=10)
  assert [len(r.tokens) for r in refs] == [10, 10, 5]
  assert " ".join(r.text for r in refs) == " ".join(words)


def test_txt_files_and_byte_vocabulary(tmp_path):
  seqio = pytest.importorskip("seqio")
  (tmp_path / "a.txt").write_text("Alpha is first. Beta is second.")
  (tmp_path / "b.txt").write_text("Gamma.")
  refs = load_references(str(tmp_path), seqio.ByteVocabulary(), ref_len=20)
  assert [r.id for r in refs] == ["a#0", "a#1", "b#0"]
  assert all(len(r.tokens) <= 20 for r in refs)


def test_explicit_reference_kept_whole_or_rejected(tmp_path, word_tok):
  p = tmp_path / "kb.jsonl"
  p.write_text(json.dumps({"id": "r", "text": "one. two. three.", "reference": True}) + "\n")
  refs = load_references(str(p), word_tok, ref_len=3)
  assert [r.text for r in refs] == ["one. two. three."]
  p.write_text("\n" + json.dumps({"id": "r", "text": "a b c d", "reference": True}) + "\n")
  with pytest.raises(ValueError, match=r"kb.jsonl:2: explicit reference 'r' has 4 tokens"):
    load_references(str(p), word_tok, ref_len=3)
  p.write_text(json.dumps({"id": "r", "text": "a b c d"}) + "\n")
  with pytest.raises(ValueError, match="kb.jsonl:1"):
    load_references(str(p), word_tok, ref_len=3, explicit=True)


@pytest.mark.parametrize(
  "content,match",
  [
    ("", "empty"),
    ("\n   \n", "empty"),
    ('{"id": "a", "text": "ok."}\n{"id": "b", "text": broken}\n', r"kb.jsonl:2: malformed JSONL"),
    ('{"id": "a"}\n', r"kb.jsonl:1: expected an object"),
    ('{"id": "a", "text": "x."}\n{"id": "a", "text": "y."}\n', "duplicate document id"),
  ],
)
def test_bad_knowledge_base_errors(tmp_path, word_tok, content, match):
  p = tmp_path / "kb.jsonl"
  p.write_text(content)
  with pytest.raises(ValueError, match=match):
    load_references(str(p), word_tok, ref_len=8)


def test_undecodable_file_names_file_and_line(tmp_path, word_tok):
  p = tmp_path / "kb.txt"
  p.write_bytes(b"fine line\nsecond \xff\xfe bad\n")
  with pytest.raises(ValueError, match=r"kb.txt:2: not valid UTF-8"):
    load_references(str(p), word_tok, ref_len=8)
  with pytest.raises(ValueError, match="not found"):
    load_references(str(tmp_path / "nope.jsonl"), word_tok, ref_len=8)
