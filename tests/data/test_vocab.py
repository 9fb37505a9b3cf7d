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


def test_vocab_from_serialized_model_equals_the_file(tiny_data):
  _, paths = tiny_data
  from_file = vocab_lib.SentencePieceVocab(paths.vocab_model)
  with open(paths.vocab_model, "rb") as f:
    in_memory = vocab_lib.SentencePieceVocab(model_proto=f.read())
  text = "Q: Where was Zorblat born? A: Quenby"
  assert in_memory.vocab_size == from_file.vocab_size
  assert in_memory.encode(text) == from_file.encode(text)
  with pytest.raises(ValueError, match="exactly one"):
    vocab_lib.SentencePieceVocab()


def test_missing_model_names_fix(tmp_path):
  with pytest.raises(FileNotFoundError, match="prepare_data"):
    vocab_lib.SentencePieceVocab(str(tmp_path / "nope.model"))


def _invented_corpus(names=400, seed=0):
  """Sentences about invented names, each name in three of them: a small corpus whose
  rare words a large BPE vocabulary would make whole pieces."""
  import numpy as np

  rng = np.random.default_rng(seed)
  syl = ["ka", "lo", "mir", "tev", "sun", "dra", "pol", "gai", "ren", "vos", "thu", "bel"]
  words = sorted({"".join(rng.choice(syl, 3)).capitalize() for _ in range(names)})
  return [f"The ship {w} sails under captain {v}." for w in words for v in words[:3]]


def test_median_piece_count_equals_a_brute_force_count(tmp_path):
  from collections import Counter

  import numpy as np

  corpus = _invented_corpus(60)
  v = vocab_lib.train_sentencepiece(corpus, str(tmp_path / "v.model"), 200)
  counts = Counter(i for text in corpus for i in v._sp.encode(text))
  expected = np.median([counts.get(i, 0) for i in range(vocab_lib.NUM_SPECIAL, v.vocab_size)])
  assert vocab_lib.median_piece_count(v, corpus) == expected


def test_vocabulary_is_sized_to_a_small_corpus(tmp_path):
  corpus = _invented_corpus()
  big = vocab_lib.train_sentencepiece(corpus, str(tmp_path / "big.model"), 2048)
  assert vocab_lib.median_piece_count(big, corpus) < 32  # rare names are whole pieces
  fit_dir = tmp_path / "fit"
  fitted = vocab_lib.train_sentencepiece(
    corpus, str(fit_dir / "v.model"), 2048, min_median_count=32
  )
  assert vocab_lib.MIN_VOCAB <= fitted.vocab_size < big.vocab_size
  # Candidates are scored in memory: the folder holds the model and its cache stamp only.
  assert sorted(p.name for p in fit_dir.iterdir()) == ["v.model", "v.model.hash"]
  median = vocab_lib.median_piece_count(fitted, corpus)
  assert median >= 32 or fitted.vocab_size // 2 < vocab_lib.MIN_VOCAB
  # The halving stops at the first size that passes: twice the size fails.
  if fitted.vocab_size * 2 <= 2048:
    double = vocab_lib.train_sentencepiece(
      corpus, str(tmp_path / "double.model"), fitted.vocab_size * 2
    )
    assert vocab_lib.median_piece_count(double, corpus) < 32


def test_a_corpus_that_trains_its_pieces_keeps_the_vocabulary_size(tmp_path):
  corpus = _invented_corpus(20) * 40  # few names, each seen many times
  a = vocab_lib.train_sentencepiece(corpus, str(tmp_path / "a.model"), 256)
  b = vocab_lib.train_sentencepiece(corpus, str(tmp_path / "b.model"), 256, min_median_count=8)
  assert a.vocab_size == b.vocab_size
  # The setting is part of the cache key: a different one re-trains.
  assert vocab_lib.corpus_hash(corpus, 256, 8) != vocab_lib.corpus_hash(corpus, 256)
  assert open(str(tmp_path / "b.model.hash")).read() == vocab_lib.corpus_hash(corpus, 256, 8)
