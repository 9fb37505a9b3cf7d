"""``prepare_data``: world + real text + user files -> JSONL, vocabulary, token arrays.

Idempotent: a manifest holding the hash of every input (config fields and user-file bytes)
is written last, and a matching manifest means nothing is redone. Layout of ``data_dir``:

  references.jsonl  {"id","text"}      the knowledge base (synthetic + countries + user)
  train.jsonl       {"text","source"}  pretraining documents (synthetic + real + user)
  valid.jsonl       {"text"}           held-back documents for validation loss
  qa_train.jsonl    QA on train entities (their text is also inside train.jsonl)
  qa_eval.jsonl     QA for evaluation: held-out entities (facts only in the KB) + user QA
                    (minus the questions data.user_qa_train moves to training, m3jax.data.qa_split)
  vocab.model       SentencePiece BPE (absent for the byte vocabulary)
  {train,valid}_tokens.npy   int32 streams, documents separated by eos
  ref_tokens.npy / ref_offsets.npy   ragged tokenized references, row i = [off[i], off[i+1])
  embedder.npz      the retrieval embedder fitted on the KB (plain arrays, no pickle)
  pretrieval-*.npz  per-sequence chunk -> reference index (see pretrieval.py)
  .lock             held (flock) while a run builds any of the above (``exclusive``)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random

import numpy as np
from tqdm import tqdm

from m3jax.data import cloze, corpora, qa_split, sources, synthetic
from m3jax.data import vocab as vocab_lib
from m3jax.data.config import DataConfig, data_config_from

MANIFEST_VERSION = 3


@dataclasses.dataclass(frozen=True)
class DataPaths:
  data_dir: str

  def _p(self, name: str) -> str:
    return os.path.join(self.data_dir, name)

  references = property(lambda self: self._p("references.jsonl"))
  train_text = property(lambda self: self._p("train.jsonl"))
  valid_text = property(lambda self: self._p("valid.jsonl"))
  qa_train = property(lambda self: self._p("qa_train.jsonl"))
  qa_eval = property(lambda self: self._p("qa_eval.jsonl"))
  vocab_model = property(lambda self: self._p("vocab.model"))
  ref_tokens = property(lambda self: self._p("ref_tokens.npy"))
  ref_offsets = property(lambda self: self._p("ref_offsets.npy"))
  embedder = property(lambda self: self._p("embedder.npz"))
  manifest = property(lambda self: self._p("manifest.json"))

  def tokens(self, split: str) -> str:
    if split not in ("train", "valid"):
      raise ValueError(f"unknown split {split!r}; use 'train' or 'valid'")
    return self._p(f"{split}_tokens.npy")

  def pretrieval(self, key: str) -> str:
    return self._p(f"pretrieval-{key}.npz")


@contextlib.contextmanager
def exclusive(data_dir: str):
  """Holds an exclusive lock on ``data_dir`` (``<data_dir>/.lock``, flock) for a block.

  Runs that share a data directory (two trainings started together, a sweep's points)
  then build each file once: the second waits, and finds what the first wrote.
  """
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, ".lock"), "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _manifest_matches(paths: DataPaths, key: str) -> bool:
  if not os.path.exists(paths.manifest):
    return False
  with open(paths.manifest) as f:
    return json.load(f).get("sources_key") == key


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:16]


def sources_key(cfg: DataConfig) -> str:
  fields = dataclasses.asdict(cfg)
  for k in (
    "data_dir",
    "order_seed",  # the training rows' order, not data
    "seq_len",
    "train_query",
    "train_overlap_threshold",
    "max_span_factor",
    "retrieval_candidates",
    "memory_swap_rate",  # training-time augmentation, not data
    "memory_swap_stop_tokens",
    "memory_swap_unit",
    "memory_swap_template_df",
    "memory_swap_pool",
    "memory_swap_readable",
    "memory_swap_answer_values",
    "memory_swap_loss_weight",
    "memory_swap_loss_ramp",
    "memory_swap_loss_weight_start",
    "kb_cloze",  # training-time rows, not data
    "kb_cloze_rate",
    "kb_cloze_window",
    "context_ref_rate",  # training-time rows, not data
    "memory_distractor_rate",  # training-time memories, not data
    "repeat_rate",  # training-time rows, not data
    "repeat_spans",
  ):
    fields.pop(k)
  for k, path in dataclasses.asdict(cfg.user_files).items():
    fields["user_files"][k] = _file_digest(path) if path else ""
  blob = json.dumps([MANIFEST_VERSION, fields], sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_vocab(cfg: DataConfig, paths: DataPaths):
  return vocab_lib.load_vocab(cfg.vocab_kind, paths.vocab_model)


def _collect(cfg: DataConfig):
  """All records by role, before tokenization."""
  refs, train, valid, qa_train, qa_eval = [], [], [], [], []
  uf = cfg.user_files
  for name, path in dataclasses.asdict(uf).items():
    if path and not os.path.exists(path):
      raise FileNotFoundError(f"{path}: data.user_files.{name} not found")
  if cfg.synthetic:
    world = synthetic.build_world(cfg.world)
    refs += world.references
    train += [dict(d, source="synthetic") for d in world.train_texts]
    valid += [dict(d, source="synthetic") for d in world.valid_texts]
    qa_train += world.train_qa
    qa_eval += world.heldout_qa
  if cfg.real_text:
    limit = cfg.real_text_limit or None
    refs += corpora.country_references(limit)
    real = [dict(d, source="real") for d in corpora.real_documents(cfg.seed, limit)]
    n_valid = max(1, len(real) // 50)
    train += real[:-n_valid]
    valid += real[-n_valid:]
  if uf.references:
    refs += [
      dict(id=str(r["id"]), text=r["text"]) for r in sources.read_jsonl(uf.references, "references")
    ]
  if uf.train_text:
    user = [
      dict(text=r["text"], source="user") for r in sources.read_jsonl(uf.train_text, "train_text")
    ]
    n_valid = len(user) // 50 if len(user) >= 50 else 0
    train += user[: len(user) - n_valid]
    valid += user[len(user) - n_valid :]
  if uf.qa:
    user_qa = sources.read_jsonl(uf.qa, "qa", ref_ids={r["id"] for r in refs})
    if _splits_user_qa(cfg):
      trained, user_qa = _split_user_qa(cfg, user_qa)
      qa_train += trained
      train += [
        dict(text=t, source="user_qa")
        for t in qa_split.qa_documents(trained, cfg.user_qa_train_passes, cfg.seed)
      ]
      random.Random(cfg.seed).shuffle(train)
    qa_eval += user_qa
  ids = [r["id"] for r in refs]
  if len(set(ids)) != len(ids):
    dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
    raise ValueError(
      f"duplicate reference ids across sources: {dup}; rename them in "
      f"{uf.references or 'data.user_files.references'}"
    )
  if not refs:
    raise ValueError(
      "the knowledge base is empty: enable data.synthetic / data.real_text "
      "or set data.user_files.references"
    )
  if not valid:
    valid = train[-1:]
  return refs, train, valid, qa_train, qa_eval


def _splits_user_qa(cfg: DataConfig) -> bool:
  """data.user_qa_train: "auto" splits unless the user's training text asks questions."""
  if cfg.user_qa_train == "auto":
    uf = cfg.user_files
    return not (uf.train_text and cloze.text_has_questions(uf.train_text))
  return cfg.user_qa_train == "on"


def _split_user_qa(cfg: DataConfig, items: list[dict]) -> tuple[list[dict], list[dict]]:
  """(training questions, evaluated questions) of the user's QA file, with a note."""
  trained, held_out = qa_split.split_by_reference(items, cfg.user_qa_train_fraction, cfg.seed)
  if cfg.user_qa_train == "auto" and not (trained and held_out):
    # Too few references to put some on each side: evaluate the whole file, as "off".
    print(
      f"[m3jax] {cfg.user_files.qa}: its {len(items)} questions are about too few "
      "references to train on some and evaluate the rest; all are evaluated "
      "(data.user_qa_train='auto'; 'on' forces the split)",
      flush=True,
    )
    return [], items
  if not held_out:
    raise ValueError(
      f"{cfg.user_files.qa}: data.user_qa_train_fraction={cfg.user_qa_train_fraction} "
      "left no question to evaluate; lower it, or set data.user_qa_train='off'"
    )
  refs = lambda its: len({it.get("gold_ref_id") for it in its})
  print(
    f"[m3jax] {len(trained)} of the {len(items)} questions in {cfg.user_files.qa} "
    f"({refs(trained)} references) train as 'Q: … A:' documents, "
    f"{cfg.user_qa_train_passes} per reference (data.user_qa_train="
    f"{cfg.user_qa_train!r}); the {len(held_out)} about the other references are "
    "evaluated, their facts held out",
    flush=True,
  )
  return trained, held_out


def _tokenize_stream(vocab, docs: list[dict], desc: str) -> np.ndarray:
  pieces = []
  batch = 2048
  for i in tqdm(range(0, len(docs), batch), desc=desc, leave=False):
    for ids in vocab.encode_batch(d["text"] for d in docs[i : i + batch]):
      pieces.append(np.asarray(ids + [vocab.eos_id], np.int32))
  return np.concatenate(pieces) if pieces else np.zeros([0], np.int32)


def prepare_data(data_cfg) -> DataPaths:
  """Generates every source file, the vocabulary, token arrays and the embedder.

  Returns the paths; safe to call repeatedly (and from every host: each writes the same
  bytes). Pre-retrieval needs the model's chunk/reference lengths, so it lives a layer up:
  :func:`m3jax.data.pipeline.prepare_for_training` does both, and
  :func:`m3jax.data.pretrieval.pretrieve` caches it when an iterator asks.
  """
  return _prepare_sources(data_config_from(data_cfg))


def _prepare_sources(cfg: DataConfig) -> DataPaths:
  paths = DataPaths(cfg.data_dir)
  key = sources_key(cfg)
  if _manifest_matches(paths, key):
    return paths
  with exclusive(cfg.data_dir):
    if not _manifest_matches(paths, key):  # another run may have built it while we waited
      _build_sources(cfg, paths, key)
  return paths


def _build_sources(cfg: DataConfig, paths: DataPaths, key: str) -> None:
  steps = tqdm(total=5, desc=f"prepare_data {cfg.data_dir}")
  refs, train, valid, qa_train, qa_eval = _collect(cfg)
  from m3jax.data import doc_order, sparse_embedder

  ref_texts = [r["text"] for r in refs]
  embedder = sparse_embedder.make(cfg.embedder, cfg.embedding_dim)
  embedder.fit(ref_texts)
  corpus = ref_texts + [d["text"] for d in train]  # the vocabulary's, documents as given
  if cfg.doc_order == "similar":  # look-alike references in one window (m3jax.data.doc_order)
    order = doc_order.similar_order(
      embedder, corpus[len(refs) :], ref_texts, cfg.doc_group_size, cfg.seed
    )
    train = [train[i] for i in order]
  sources.write_jsonl(paths.references, refs)
  sources.write_jsonl(paths.train_text, train)
  sources.write_jsonl(paths.valid_text, valid)
  sources.write_jsonl(paths.qa_train, qa_train)
  sources.write_jsonl(paths.qa_eval, qa_eval)
  steps.update()
  vocab: vocab_lib.ByteVocab | vocab_lib.SentencePieceVocab
  if cfg.vocab_kind == "sentencepiece":
    vocab = vocab_lib.train_sentencepiece(
      corpus, paths.vocab_model, cfg.vocab_size, cfg.seed, cfg.vocab_min_median_count
    )
  else:
    vocab = vocab_lib.ByteVocab()
  steps.update()
  np.save(paths.tokens("train"), _tokenize_stream(vocab, train, "tokenize train"))
  np.save(paths.tokens("valid"), _tokenize_stream(vocab, valid, "tokenize valid"))
  ref_ids = vocab.encode_batch(r["text"] for r in refs)
  lengths = np.array([len(r) for r in ref_ids], np.int64)
  np.save(paths.ref_tokens, np.concatenate([np.asarray(r, np.int32) for r in ref_ids]))
  np.save(paths.ref_offsets, np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
  steps.update()
  embedder.save(paths.embedder)
  steps.update()
  with open(paths.manifest + ".tmp", "w") as f:
    json.dump(
      dict(
        sources_key=key,
        num_references=len(refs),
        num_train_docs=len(train),
        vocab_size=vocab.vocab_size,
        train_tokens=int(np.load(paths.tokens("train"), mmap_mode="r").shape[0]),
      ),
      f,
      indent=1,
    )
  os.replace(paths.manifest + ".tmp", paths.manifest)
  steps.update()
  steps.close()
