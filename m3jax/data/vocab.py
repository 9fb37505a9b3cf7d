"""Vocabularies with the project's fixed special ids: pad=0, eos=1, unk=2, <s>=3, <ref>=4.

These match ``ModelConfig`` (pad_id=0, eos_id=1, bos_id=3, ref_id=4) and seqio's
convention (pad 0, eos 1, unk 2). Two kinds:

* :class:`SentencePieceVocab`: BPE trained at build time on the project's own generated
  corpus and cached; re-trained only when the model file is missing or the corpus hash
  changed (the hash is stored beside the model).
* :class:`ByteVocab`: bytes offset by 5 (ids 5..260, vocab 261) for tests that must not
  train anything.

Both expose ``encode(str) -> list[int]``, ``decode(ids) -> str``, ``vocab_size``, and the
special ids, with no seqio dependency; :func:`to_seqio` wraps a SentencePiece model as a
``seqio.SentencePieceVocabulary`` where seqio is installed.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable, Sequence

PAD_ID, EOS_ID, UNK_ID, BOS_ID, REF_ID = 0, 1, 2, 3, 4
NUM_SPECIAL = 5
REF_PIECE = "<ref>"


class _Specials:
  pad_id = PAD_ID
  eos_id = EOS_ID
  unk_id = UNK_ID
  bos_id = BOS_ID
  ref_id = REF_ID

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]


class ByteVocab(_Specials):
  """UTF-8 bytes shifted by 5 so the special ids stay free; vocab_size 261."""

  kind = "byte"
  vocab_size = 256 + NUM_SPECIAL

  def encode(self, text: str) -> list[int]:
    return [b + NUM_SPECIAL for b in text.encode("utf-8")]

  def decode(self, ids: Sequence[int]) -> str:
    data = bytes(int(i) - NUM_SPECIAL for i in ids if NUM_SPECIAL <= int(i) < self.vocab_size)
    return data.decode("utf-8", errors="replace")


class SentencePieceVocab(_Specials):
  """A pure-sentencepiece wrapper (works on machines without seqio)."""

  kind = "sentencepiece"

  def __init__(self, model_path: str | None = None, *, model_proto: bytes | None = None):
    """From a model file, or (``model_proto``, nothing written) from its serialized bytes."""
    import sentencepiece as spm

    if (model_path is None) == (model_proto is None):
      raise ValueError("SentencePieceVocab: give exactly one of model_path and model_proto")
    if model_proto is not None:
      self.model_path = "<in memory>"
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    else:
      assert model_path is not None
      if not os.path.exists(model_path):
        raise FileNotFoundError(
          f"SentencePiece model {model_path} not found; run "
          "`python -m m3jax prepare` (prepare_data) first"
        )
      self.model_path = model_path
      self._sp = spm.SentencePieceProcessor(model_file=model_path)
    got = (
      self._sp.pad_id(),
      self._sp.eos_id(),
      self._sp.unk_id(),
      self._sp.bos_id(),
      self._sp.piece_to_id(REF_PIECE),
    )
    if got != (PAD_ID, EOS_ID, UNK_ID, BOS_ID, REF_ID):
      raise ValueError(
        f"{self.model_path}: special ids (pad, eos, unk, bos, <ref>) = {got}, "
        f"expected {(PAD_ID, EOS_ID, UNK_ID, BOS_ID, REF_ID)}; delete the "
        "file so it is re-trained"
      )

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
    return self._sp.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.decode([int(i) for i in ids if int(i) >= NUM_SPECIAL])


MIN_VOCAB = 256  # the smallest vocabulary the corpus-sized fit goes down to


def corpus_hash(texts: Iterable[str], vocab_size: int, min_median_count: int = 0) -> str:
  key = f"v{vocab_size}\n" + (f"m{min_median_count}\n" if min_median_count else "")
  h = hashlib.sha256(key.encode())
  for t in texts:
    h.update(t.encode("utf-8"))
    h.update(b"\n")
  return h.hexdigest()[:16]


def median_piece_count(vocab: "SentencePieceVocab", texts: Sequence[str]) -> float:
  """The median, over the vocabulary's pieces (special ids excluded), of how often each
  occurs when ``texts`` are encoded: how well the corpus trains a typical piece."""
  import numpy as np

  counts_V = np.zeros(vocab.vocab_size, np.int64)
  for ids in vocab.encode_batch(texts):
    np.add.at(counts_V, np.asarray(ids, np.int64), 1)
  return float(np.median(counts_V[NUM_SPECIAL:]))


def train_sentencepiece(
  texts: Sequence[str],
  model_path: str,
  vocab_size: int,
  seed: int = 0,
  min_median_count: int = 0,
) -> SentencePieceVocab:
  """Trains (or reuses) a BPE model; the cache key is the corpus, the vocab size and
  ``min_median_count``.

  ``min_median_count`` > 0 sizes the vocabulary to the corpus: ``vocab_size`` is halved
  (not below ``MIN_VOCAB``) until the median piece occurs at least that often in
  ``texts``. On a small corpus a large BPE vocabulary makes each rare word (an invented
  name, a number) one piece seen a handful of times, whose embedding and output row are
  barely trained, and a model does not learn to copy such tokens out of memory
  (docs/design.md, "A vocabulary sized to the corpus"); smaller vocabularies spell them
  with frequent pieces. A large corpus keeps ``vocab_size``.
  """
  del seed  # sentencepiece BPE is deterministic given the input order
  key = corpus_hash(texts, vocab_size, min_median_count)
  stamp = model_path + ".hash"
  if os.path.exists(model_path) and os.path.exists(stamp):
    with open(stamp) as f:
      if f.read().strip() == key:
        return SentencePieceVocab(model_path)
  os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
  size = vocab_size
  proto = _train_bpe(texts, size)
  while min_median_count and size // 2 >= MIN_VOCAB:
    median = median_piece_count(SentencePieceVocab(model_proto=proto), texts)
    if median >= min_median_count:
      break
    print(
      f"[m3jax] vocabulary of {size} pieces: the median piece occurs {median:.0f} times "
      f"in the corpus (< data.vocab_min_median_count={min_median_count}); "
      f"trying {size // 2}"
    )
    size //= 2
    proto = _train_bpe(texts, size)
  tmp = model_path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(proto)
  os.replace(tmp, model_path)
  with open(stamp, "w") as f:
    f.write(key)
  return SentencePieceVocab(model_path)


def _train_bpe(texts: Sequence[str], vocab_size: int) -> bytes:
  """The serialized BPE model of ``vocab_size`` pieces (the project's special ids)."""
  import sentencepiece as spm

  proto = io.BytesIO()
  spm.SentencePieceTrainer.train(
    sentence_iterator=iter(texts),
    model_writer=proto,
    vocab_size=vocab_size,
    model_type="bpe",
    pad_id=PAD_ID,
    eos_id=EOS_ID,
    unk_id=UNK_ID,
    bos_id=BOS_ID,
    user_defined_symbols=[REF_PIECE],
    character_coverage=1.0,
    byte_fallback=False,
    split_digits=False,
    input_sentence_size=200_000,
    shuffle_input_sentence=False,
    max_sentence_length=8192,
    num_threads=2,
    minloglevel=2,
    hard_vocab_limit=False,
  )
  return proto.getvalue()


def to_seqio(vocab: SentencePieceVocab):
  """The same model as a ``seqio.SentencePieceVocabulary`` (seqio imported lazily)."""
  import seqio

  return seqio.SentencePieceVocabulary(vocab.model_path)


def load_vocab(kind: str, model_path: str | None = None):
  if kind == "byte":
    return ByteVocab()
  if kind == "sentencepiece":
    return SentencePieceVocab(model_path)
  raise ValueError(f"unknown vocab kind {kind!r}; choose 'sentencepiece' or 'byte'")
