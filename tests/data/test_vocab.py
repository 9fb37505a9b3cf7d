"""Special ids shared with ModelConfig, round trips, and the SentencePiece cache."""

import os

import pytest

from m3jax.data import vocab as vocab_lib


def test_special_ids_match_model(tiny_data, tiny_model_cfg):
  _, paths = tiny_data
  for v in (vocab_lib.SentencePieceVocab(paths.vocab_model), vocab_lib.ByteVocab()):
    assert (v.pad_id, v.eos_id, v.unk_id, v.bos_id, v.ref_id) == (0, 1, 2, 3, 4)
    assert (
      tiny_model_cfg.pad_id,
      tiny_model_cfg.eos_id,
      tiny_model_cfg.bos_id,
      tiny_model_cfg.ref_id,
    ) == (v.pad_id, v.eos_id, v.bos_id, v.ref_id)
    assert v.vocab_size <= tiny_model_cfg.vocab_size
    text = "Zorblat was born in Quenby in 1734."
    ids = v.encode(text)
    assert min(ids) >= vocab_lib.NUM_SPECIAL
    assert v.decode(ids) == text
    # Special ids are dropped on decode (they are never text).
    assert v.decode([v.bos_id] + ids + [v.eos_id]) == text


def test_sentencepiece_cache(tmp_path):
  corpus = [f"the fox number {i} jumps over Zorblat and Quenby" for i in range(300)]
  path = str(tmp_path / "v.model")
  v = vocab_lib.train_sentencepiece(corpus, path, 64)
  assert v.vocab_size <= 64
  stamp = os.path.getmtime(path)
  vocab_lib.train_sentencepiece(corpus, path, 64)
  assert os.path.getmtime(path) == stamp  # same corpus: reused
  vocab_lib.train_sentencepiece(corpus + ["a new line of text"], path, 64)
  assert open(path + ".hash").read() != ""
  assert vocab_lib.corpus_hash(corpus, 64) != open(path + ".hash").read()  # re-trained


def test_seqio_wrapper(tiny_data):
  seqio = pytest.importorskip("seqio")
  _, paths = tiny_data
  sp = vocab_lib.SentencePieceVocab(paths.vocab_model)
  sv = vocab_lib.to_seqio(sp)
  assert isinstance(sv, seqio.SentencePieceVocabulary)
  assert sv.eos_id == sp.eos_id and sv.pad_id == sp.pad_id
  assert list(sv.encode("Zorblat was born")) == sp.encode("Zorblat was born")


def test_missing_model_names_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare_data"):
    vocab_lib.SentencePieceVocab(str(tmp_path / "nope.model"))
