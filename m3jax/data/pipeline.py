"""Training batches: packed sequences (+ their pre-retrieved references), checkpointable.

The batch contract (one numpy dict per step, host-local rows):

  inputs      int32   [B, T]     row starts with <s>
  targets     int32   [B, T]     inputs shifted left by one (next tokens)
  loss_mask   float32 [B, T]     the loss weight of each target: 1 on real targets, 0 off,
                                 data.memory_swap_loss_weight on swapped ones (ramped up
                                 over the first data.memory_swap_loss_ramp swapped batches)
  ref_tokens  int32   [B, C, N]  memory stages only: ONE reference per chunk, right-padded
  ref_lengths int32   [B, C]     0 = no reference (e.g. dropped by the leakage filter)

with C = T // chunk_len and N = ref_len. Chunk c later attends to the references of chunks
c-R+1..c; that windowing is the model's job, the batch carries one reference per chunk.

The order is a pure function of (seed, epoch): each epoch is a fresh permutation of the
packed sequences and global batch ``step`` takes permutation rows [step·B, (step+1)·B);
host ``process_index`` of ``process_count`` keeps its contiguous slice of those rows. So
``state() -> {"epoch", "step", "swap_batches"}`` and ``restore(state)`` resume the
identical stream (``swap_batches``, the batches drawn with the swap on, sets the ramped
swap weight; a state without it, written before the ramp existed, reads as 0).
"""

from __future__ import annotations

import os

import numpy as np

from m3jax.data import (
  cloze,
  context_refs,
  counterfactual,
  distractors,
  kb,
  pretrieval,
  qa_values,
  repetition,
  shift,
  sources,
)
from m3jax.data.config import data_config_from
from m3jax.data.prepare import DataPaths, load_vocab, prepare_data
from m3jax.task import RAG_HEADER_QUESTION, RAG_HEADER_REFERENCES


class TrainIterator:
  """Deterministic, resumable iterator over packed training batches."""

  def __init__(
    self,
    stream: np.ndarray,
    seq_len: int,
    batch_size: int,
    seed: int,
    bos_id: int,
    ref_index_SxC: np.ndarray | None = None,
    ref_tokens_NxL: np.ndarray | None = None,
    ref_lengths_N: np.ndarray | None = None,
    process_index: int = 0,
    process_count: int = 1,
    shuffle: bool = True,
    swap_rate: float = 0.0,
    swap_stop_tokens: int = 64,
    swap_words: counterfactual.WordSwapper | None = None,
    swap_window: int = 0,
    swap_loss_weight: float = 1.0,
    swap_loss_ramp: tuple[float, int] = (1.0, 0),
    repeat_rate: float = 0.0,
    repeat_spans: tuple[int, int] = (8, 64),
    cloze_rate: float = 0.0,
    cloze_rows: cloze.KBCloze | None = None,
    context_rate: float = 0.0,
    context_rows: context_refs.ContextRefs | None = None,
    chunk_len: int = 0,
    distractor_rate: float = 0.0,
  ):
    if batch_size % process_count:
      raise ValueError(
        f"global batch_size={batch_size} is not divisible by process_count={process_count}"
      )
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} not in [0, {process_count})")
    self.num_seqs = len(stream) // seq_len
    if self.num_seqs < batch_size:
      raise ValueError(
        f"only {self.num_seqs} sequences of {seq_len} tokens for a batch of "
        f"{batch_size}; lower the batch size or seq_len, or add data"
      )
    self._rows = stream[: self.num_seqs * seq_len].reshape(self.num_seqs, seq_len)
    self.seq_len, self.batch_size, self.seed, self.bos_id = seq_len, batch_size, seed, bos_id
    self.shuffle = shuffle
    self._refs = ref_index_SxC
    self._ref_tokens, self._ref_lengths = ref_tokens_NxL, ref_lengths_N
    self.local_batch = batch_size // process_count
    self._lo = process_index * self.local_batch
    self.steps_per_epoch = self.num_seqs // batch_size
    self.epoch, self.step = 0, 0
    self._perm_epoch: int | None = None
    self._perm = np.arange(0)
    self.swap_rate = float(swap_rate)
    # > 0: only values readable where they occur are swapped (chunk c reads the
    # references of chunks c-swap_window+1..c); needs chunk_len.
    self.swap_window = int(swap_window)
    self.swap_loss_weight = float(swap_loss_weight)  # loss_mask of a swapped target
    # (start weight, batches): the weight rises linearly from start to swap_loss_weight
    # over the first `batches` swapped batches (0: swap_loss_weight throughout).
    self.swap_loss_ramp = (float(swap_loss_ramp[0]), int(swap_loss_ramp[1]))
    self.swap_batches = 0  # batches drawn with the swap on (the ramp's clock)
    self._words: counterfactual.WordSwapper | None = None
    if self.swap_rate and self._refs is not None:
      assert self._ref_tokens is not None and self._ref_lengths is not None
      if swap_words is not None:  # whole words (counterfactual.WordSwapper)
        self._words = swap_words
      else:  # single tokens
        vocab_size = int(max(stream.max(), self._ref_tokens.max())) + 1
        self._stop_V = counterfactual.stop_token_mask(
          self._ref_tokens, self._ref_lengths, vocab_size, swap_stop_tokens
        )
        self._swap_weights_V = counterfactual.replacement_weights(
          self._ref_tokens, self._ref_lengths, self._stop_V
        )
    else:
      self.swap_rate = 0.0
    self.repeat_rate, self.repeat_spans = float(repeat_rate), tuple(repeat_spans)
    self.cloze_rate, self._cloze, self.chunk_len = float(cloze_rate), cloze_rows, chunk_len
    if self.cloze_rate and (cloze_rows is None or self._refs is None or chunk_len <= 0):
      raise ValueError("knowledge-base cloze rows need references, a KBCloze and chunk_len")
    self.context_rate, self._context = float(context_rate), context_rows
    # Distractor memories (m3jax.data.distractors): chunks reading an unrelated reference.
    self.distractor_rate = float(distractor_rate) if self._refs is not None else 0.0
    if self.context_rate and (context_rows is None or self._refs is None or chunk_len <= 0):
      raise ValueError("in-context reference rows need references, a ContextRefs and chunk_len")

  # -- checkpointing ------------------------------------------------------------------------
  def state(self) -> dict:
    return {"epoch": int(self.epoch), "step": int(self.step), "swap_batches": self.swap_batches}

  def restore(self, state: dict) -> None:
    missing = {"epoch", "step"} - set(state)
    if missing:
      raise ValueError(f"iterator state lacks {sorted(missing)}; got {sorted(state)}")
    self.epoch, self.step = int(state["epoch"]), int(state["step"])
    self.swap_batches = int(state.get("swap_batches", 0))

  def swap_weight(self, swap_batch: int) -> float:
    """The loss weight of a swapped target in the ``swap_batch``-th swapped batch (0-based):
    ``swap_loss_weight``, reached linearly from the ramp's start weight over its batches."""
    start, batches = self.swap_loss_ramp
    if batches <= 0 or swap_batch >= batches:
      return self.swap_loss_weight
    return start + (self.swap_loss_weight - start) * swap_batch / batches

  # -- iteration ----------------------------------------------------------------------------
  def _permutation(self) -> np.ndarray:
    if self._perm_epoch != self.epoch:
      if self.shuffle:
        rng = np.random.default_rng([self.seed, self.epoch])
        self._perm = rng.permutation(self.num_seqs)
      else:
        self._perm = np.arange(self.num_seqs)
      self._perm_epoch = self.epoch
    return self._perm

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self.step >= self.steps_per_epoch:
      self.epoch, self.step = self.epoch + 1, 0
    start = self.step * self.batch_size + self._lo
    rows = self._permutation()[start : start + self.local_batch]
    position = [self.seed, self.epoch, self.step, self._lo, 7]
    self.step += 1
    distract = None
    if self.distractor_rate:  # before the swap: it swaps what the drawn reference holds
      distract = np.random.default_rng(position[:-1] + [19])
    out = self.batch(rows, distract)
    if self.swap_rate:
      # Seeded by the position, so a resumed run swaps exactly as the original did.
      rng = np.random.default_rng(position)
      unswapped_BxT = out["targets"]
      if self._words is not None:
        out = self._words.swap_batch(
          out, self.swap_rate, rng, self.bos_id, self.chunk_len, self.swap_window
        )
      else:
        out = counterfactual.swap_batch(
          out, self._stop_V, self._swap_weights_V, self.swap_rate, rng, self.bos_id
        )
      weight = self.swap_weight(self.swap_batches)
      self.swap_batches += 1
      if weight != 1.0:
        swapped_BxT = out["targets"] != unswapped_BxT
        out["loss_mask"] = np.where(swapped_BxT, weight, out["loss_mask"]).astype(np.float32)
    if self.context_rate:  # in-context reference rows (m3jax.data.context_refs)
      assert self._context is not None
      rng = np.random.default_rng(position[:-1] + [17])
      out = self._context.replace_rows(out, self.context_rate, rng, self.bos_id, self.chunk_len)
    if self.repeat_rate:  # in-context repetition rows (m3jax.data.repetition)
      rng = np.random.default_rng(position[:-1] + [11])
      out = repetition.repeat_rows(out, self.repeat_rate, rng, self.bos_id, *self.repeat_spans)
    if self.cloze_rate:  # knowledge-base cloze rows (m3jax.data.cloze)
      assert self._cloze is not None
      rng = np.random.default_rng(position[:-1] + [13])
      out = self._cloze.replace_rows(out, self.cloze_rate, rng, self.bos_id, self.chunk_len)
    return out

  def batch(self, rows: np.ndarray, distract: np.random.Generator | None = None) -> dict:
    """The contract dict for the given packed-sequence rows (``distract``: the generator
    that redraws ``distractor_rate`` of the chunks' references; None keeps them)."""
    targets = self._rows[rows].astype(np.int32)
    out = dict(
      inputs=shift.inputs_for(targets, self.bos_id),
      targets=targets,
      loss_mask=np.ones(targets.shape, np.float32),
    )
    if self._refs is not None:
      assert self._ref_tokens is not None and self._ref_lengths is not None
      idx_BxC = self._refs[rows]
      if distract is not None:
        idx_BxC = distractors.redraw(
          idx_BxC, self.distractor_rate, distract, len(self._ref_lengths)
        )
      safe = np.maximum(idx_BxC, 0)
      lengths = np.where(idx_BxC >= 0, self._ref_lengths[safe], 0).astype(np.int32)
      tokens = self._ref_tokens[safe] * (idx_BxC >= 0)[..., None]
      out["ref_tokens"] = tokens.astype(np.int32)
      out["ref_lengths"] = lengths
    return out


def _qa_swap_words(cfg, paths: DataPaths, vocab, boundaries_V: np.ndarray):
  """(value words, closed-list options) the word swap takes from the training answers
  (qa_train.jsonl only; the evaluated questions are never read here), read once:
  ``data.memory_swap_answer_values`` asks for the first, ``data.memory_swap_pool=
  "attribute"`` for the second; each is empty when not asked for or without the file."""
  want_values = cfg.memory_swap_answer_values
  want_options = cfg.memory_swap_pool == "attribute"
  if not (want_values or want_options) or not os.path.exists(paths.qa_train):
    return set(), {}
  items = sources.read_jsonl(paths.qa_train, "qa")
  values = qa_values.answer_value_words(items, vocab.encode, boundaries_V) if want_values else set()
  options = qa_values.closed_list_options(items, vocab.encode, boundaries_V) if want_options else {}
  return values, options


def make_train_iterator(
  data_cfg,
  model_cfg,
  split: str = "train",
  batch_size: int = 8,
  seq_len: int | None = None,
  with_references: bool = False,
  seed: int | None = None,
  process_index: int = 0,
  process_count: int = 1,
  shuffle: bool | None = None,
  memory_window: str = "chunks",
) -> TrainIterator:
  """Prepares the data if needed and returns the batch iterator for one host.

  ``model_cfg`` (a ModelConfig) supplies the special ids, chunk_len and ref_len, and its
  vocab_size must cover the data vocabulary. ``split`` is "train" or "valid" (valid is
  not shuffled by default). ``memory_window`` is the stage's (StageSpec.memory_window):
  the readable swap takes only values a chunk's window can read, the previous R-1
  chunks' references too with "chunks", the chunk's own reference alone with "similar".
  """
  cfg = data_config_from(data_cfg)
  seq_len = seq_len or cfg.seq_len
  if seed is None:
    seed = cfg.order_seed if cfg.order_seed >= 0 else cfg.seed
  chunk_len, ref_len = model_cfg.memory.chunk_len, model_cfg.memory.ref_len
  if with_references and seq_len % chunk_len:
    raise ValueError(
      f"seq_len={seq_len} must be a multiple of model.memory.chunk_len="
      f"{chunk_len} (C = T // chunk_len chunks per row)"
    )
  paths = prepare_data(cfg)
  vocab = load_vocab(cfg, paths)
  if vocab.vocab_size > model_cfg.vocab_size:
    raise ValueError(
      f"data vocabulary has {vocab.vocab_size} tokens but "
      f"model.vocab_size={model_cfg.vocab_size}; raise the model's or lower "
      "data.vocab_size"
    )
  if (model_cfg.bos_id, model_cfg.eos_id, model_cfg.pad_id) != (
    vocab.bos_id,
    vocab.eos_id,
    vocab.pad_id,
  ):
    raise ValueError(
      "model special ids (bos, eos, pad) = "
      f"{(model_cfg.bos_id, model_cfg.eos_id, model_cfg.pad_id)} differ from "
      f"the vocabulary's {(vocab.bos_id, vocab.eos_id, vocab.pad_id)}"
    )
  stream = np.load(paths.tokens(split))
  refs = ref_tokens = ref_lengths = None
  if with_references:
    refs = pretrieval.pretrieve(cfg, paths, split, seq_len, chunk_len, ref_len)
    ref_tokens, ref_lengths = kb.reference_arrays(kb.kb_references(paths, vocab, ref_len), ref_len)
  if shuffle is None:
    shuffle = split == "train"
  swap_rate = cfg.memory_swap_rate if split == "train" else 0.0
  cloze_rate = 0.0
  if split == "train" and with_references:
    cloze_rate = cloze.effective_rate(cfg.kb_cloze, cfg.kb_cloze_rate, paths.train_text)
  # One WordSwapper (the knowledge base's word statistics) serves the word swap and the
  # cloze rows, which swap every value of their reference.
  # Both need the references: without them (stage 1) there is nothing to swap.
  words = None
  if with_references and ((swap_rate and cfg.memory_swap_unit == "word") or cloze_rate):
    assert ref_tokens is not None and ref_lengths is not None
    codes_V = counterfactual.word_boundary_codes(
      vocab, split_punctuation=cfg.memory_swap_split_punctuation
    )
    values, options = _qa_swap_words(cfg, paths, vocab, codes_V)
    words = counterfactual.WordSwapper(
      ref_tokens,
      ref_lengths,
      codes_V,
      cfg.memory_swap_template_df,
      cfg.memory_swap_pool,
      values=values,
      options=options,
    )
  cloze_rows = None
  if cloze_rate:
    assert ref_tokens is not None and ref_lengths is not None and words is not None
    cloze_rows = cloze.KBCloze(
      ref_tokens,
      ref_lengths,
      words,
      question=vocab.encode("Q:"),
      gap=vocab.encode(" ?"),
      answer=vocab.encode(" A:"),
      pad_id=vocab.pad_id,
      window=cfg.kb_cloze_window,
    )
  context_rate, context_rows = 0.0, None
  if split == "train" and with_references and cfg.context_ref_rate:
    context_rate = cfg.context_ref_rate
    context_rows = context_refs.ContextRefs(
      header=vocab.encode(RAG_HEADER_REFERENCES),
      separator=vocab.encode(RAG_HEADER_QUESTION),
      max_refs=model_cfg.memory.refs_per_chunk,
      pad_id=vocab.pad_id,
    )
  # The chunks a training chunk's memory window reads (StageSpec.memory_window): the
  # readable swap takes only values they hold.
  readable_window = model_cfg.memory.refs_per_chunk if memory_window == "chunks" else 1
  return TrainIterator(
    stream,
    seq_len,
    batch_size,
    seed,
    vocab.bos_id,
    refs,
    ref_tokens,
    ref_lengths,
    process_index,
    process_count,
    shuffle,
    # Counterfactual memory augmentation (m3jax.data.counterfactual): training only.
    swap_rate=swap_rate,
    swap_stop_tokens=cfg.memory_swap_stop_tokens,
    swap_words=words if cfg.memory_swap_unit == "word" else None,
    swap_window=readable_window if cfg.memory_swap_readable else 0,
    swap_loss_weight=cfg.memory_swap_loss_weight,
    swap_loss_ramp=(cfg.memory_swap_loss_weight_start, cfg.memory_swap_loss_ramp),
    repeat_rate=cfg.repeat_rate if split == "train" else 0.0,
    repeat_spans=cfg.repeat_spans,
    cloze_rate=cloze_rate,
    cloze_rows=cloze_rows,
    context_rate=context_rate,
    context_rows=context_rows,
    chunk_len=chunk_len,
    distractor_rate=cfg.memory_distractor_rate if split == "train" and with_references else 0.0,
  )


def prepare_for_training(data_cfg, model_cfg) -> DataPaths:
  """:func:`prepare_data`, then pre-retrieval of both splits at ``data.seq_len`` with the
  model's (a ModelConfig) chunk and reference lengths: everything training will read."""
  cfg = data_config_from(data_cfg)
  paths = prepare_data(cfg)
  for split in ("train", "valid"):
    pretrieval.pretrieve(
      cfg, paths, split, cfg.seq_len, model_cfg.memory.chunk_len, model_cfg.memory.ref_len
    )
  return paths


def data_paths(data_cfg) -> DataPaths:
  return DataPaths(data_config_from(data_cfg).data_dir)
