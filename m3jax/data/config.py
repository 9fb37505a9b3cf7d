"""The frozen, validated data config, built from ``config.data`` (configs/sections/data.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from m3jax.data.cloze import MODES as CLOZE_MODES
from m3jax.data.counterfactual import SWAP_POOLS
from m3jax.data.qa_split import MODES as USER_QA_TRAIN_MODES
from m3jax.data.synthetic import WorldConfig

TRAIN_QUERIES = ("own", "previous")
DOC_ORDERS = ("as_given", "similar")  # m3jax.data.doc_order


@dataclasses.dataclass(frozen=True)
class UserFiles:
  references: str = ""  # JSONL {"id", "text"}
  train_text: str = ""  # JSONL {"text"}
  qa: str = ""  # JSONL {"question", "answer", "choices"?}


@dataclasses.dataclass(frozen=True)
class DataConfig:
  data_dir: str = "artifacts/data/tiny"
  seed: int = 0  # the world, the QA split, the vocabulary and (unless order_seed) the order
  # >= 0: the training rows' order and swap draws follow this seed instead of `seed`, so
  # a run can change the order and keep the world and its data files (a training-time
  # choice, not part of the prepared data's hash). -1: follow `seed`.
  order_seed: int = -1
  vocab_kind: str = "sentencepiece"
  vocab_size: int = 512
  # Sizes the vocabulary to the corpus: vocab_size is halved (not below 256) until the
  # median piece occurs at least this often in the corpus (m3jax.data.vocab; 0: off). A
  # small corpus otherwise makes each rare value one barely trained piece.
  vocab_min_median_count: int = 64
  synthetic: bool = True
  world: WorldConfig = WorldConfig()
  real_text: bool = True
  real_text_limit: int = 0
  seq_len: int = 64
  valid_sequences: int = 8
  train_query: str = "own"
  train_overlap_threshold: float = 0.9
  max_span_factor: int = 2
  retrieval_candidates: int = 8
  embedder: str = "sparse_tfidf"
  embedding_dim: int = 256
  # Counterfactual memory augmentation (m3jax.data.counterfactual): in memory stages, each
  # value a training row shares with its references is swapped, with this probability, in
  # the row and its references alike, so only memory can predict it. Unit "word": whole
  # words, template words being those in more than `memory_swap_template_df` of the
  # references; "token": single tokens, minus the `memory_swap_stop_tokens` most frequent.
  # Word replacements come from `memory_swap_pool`: "length", any value word with as many
  # pieces; "slot", a value word seen after the same template words ("color ="); "mixed",
  # either, drawn per swapped word; "pieces", a new word whose i-th piece is drawn among
  # the value words' i-th pieces, so every piece of it must be read from memory (measured
  # worse: docs/design.md, "Session 25"); "attribute", as "length" except that a value of
  # a closed-list attribute of the training QA (few options, m3jax.data.value_kinds) is
  # replaced by another of its options. With any word in its place, a closed-list word's
  # own type (a riverbed's "granite") stops naming the attribute it answers, and a
  # swapped value can be found only by the words around it, which a question phrased
  # otherwise does not share (docs/design.md, "Session 30").
  memory_swap_rate: float = 0.0
  # Swap only values every occurrence can read: chunk c reads the references of chunks
  # c-R+1..c (R = model.memory.refs_per_chunk), so a value shared only with another
  # chunk's reference is left as it is (swapped, nothing could predict it). Word unit.
  memory_swap_readable: bool = False
  # The loss weight of a swapped token (loss_mask; 1: an ordinary token). Above 1, the
  # tokens only memory can predict weigh more in the training loss.
  memory_swap_loss_weight: float = 1.0
  # > 0: the swapped tokens' weight rises linearly from memory_swap_loss_weight_start to
  # memory_swap_loss_weight over the first this-many swapped batches (the memory stage's
  # first steps), then stays; 0: memory_swap_loss_weight from the first step.
  memory_swap_loss_ramp: int = 0
  memory_swap_loss_weight_start: float = 1.0
  memory_swap_unit: str = "word"
  # Word unit: a punctuation piece ("." "," "?") is a word of its own, so a value that ends
  # a sentence or a clause ("launched in 1842.") is the same word as where a row or an
  # answer says it without ("1842"). The configs (configs/sections/data.py) turn it on;
  # False here is the behaviour of runs whose config.json predates the field (words run
  # on through trailing punctuation), so resuming one never changes its data stream.
  # Measured both ways in docs/design.md, "Session 21" and "Session 22".
  memory_swap_split_punctuation: bool = False
  # Word unit: the words of training QA answers that no training question says are
  # values even when more than `memory_swap_template_df` of the references hold them (a
  # value of an attribute with few options: "6" in "walks on 6 legs"; without this such
  # values are never swapped, and memory is never needed to read them).
  # m3jax.data.qa_values.answer_value_words. The configs turn it on; False here is
  # what runs whose config.json predates the field did. docs/design.md, "Session 24".
  memory_swap_answer_values: bool = False
  memory_swap_template_df: float = 0.05
  memory_swap_pool: str = "length"
  memory_swap_stop_tokens: int = 64
  # In-context repetition (m3jax.data.repetition): this fraction of training rows, in
  # every stage, is replaced by a span of itself (`repeat_spans` tokens, inclusive range)
  # tiled to the row's length, a copy signal for worlds whose text never repeats.
  repeat_rate: float = 0.0
  repeat_spans: tuple[int, int] = (8, 64)
  # The order of the training documents in the stream (m3jax.data.doc_order): "as_given"
  # (the sources' order; a user QA split shuffles it), or "similar": grouped by the
  # reference each is most like, `doc_group_size` look-alike references a group, so a
  # chunk's window of R references (model.memory.refs_per_chunk) holds hard negatives, as
  # at inference. Part of the prepared data (its hash).
  doc_order: str = "as_given"
  doc_group_size: int = 8
  # Knowledge-base cloze rows (m3jax.data.cloze): in memory stages, this fraction of
  # training rows is replaced by "Q: <a reference with one value gapped> A: <value>"
  # items, one per chunk, each reading its (fully swapped) reference from memory.
  # `kb_cloze`: "auto" uses them only when the training text holds no "Q: … A:" line
  # (a corpus that never shows the question format); "on" always, "off" never.
  kb_cloze: str = "auto"
  kb_cloze_rate: float = 0.25
  # Words of context each side of a cloze gap (0: the whole reference); with a window,
  # one side only for two items in three (m3jax.data.cloze).
  kb_cloze_window: int = 0
  # In-context reference rows (m3jax.data.context_refs): in memory stages, this fraction
  # of training rows shows its chunks' references as text in the RAG prompt's format and
  # reads no memory, so the RAG baseline is trained to copy values in context as memory
  # rows train reading them from memory. 0: off (the RAG condition then measures a
  # memory-trained model's incidental in-context copying).
  context_ref_rate: float = 0.0
  # Distractor memories (m3jax.data.distractors): in memory stages, this fraction of the
  # chunks that read a reference read a random other one, so the model learns that a
  # memory may be about something else (as decoding's previous-chunk retrieval often
  # is). 0: off (every training memory is the chunk's own).
  memory_distractor_rate: float = 0.0
  # A user's QA file split by reference (m3jax.data.qa_split): the questions about a
  # `user_qa_train_fraction` of the references (by a seeded hash of gold_ref_id) become
  # training documents, `user_qa_train_passes` per reference, and only the others are
  # evaluated. "auto": when the user's training text holds no "Q: … A:" line (nothing
  # else shows the model the questions' wording); "on" always, "off" never.
  user_qa_train: str = "auto"
  user_qa_train_fraction: float = 0.5
  user_qa_train_passes: int = 4
  user_files: UserFiles = UserFiles()

  def __post_init__(self):
    if self.vocab_kind not in ("sentencepiece", "byte"):
      raise ValueError(f"data.vocab_kind={self.vocab_kind!r}: use 'sentencepiece' or 'byte'")
    if self.train_query not in TRAIN_QUERIES:
      raise ValueError(f"data.train_query={self.train_query!r}: use one of {TRAIN_QUERIES}")
    if not (self.synthetic or self.real_text or self.user_files.train_text):
      raise ValueError(
        "data has no training text: enable data.synthetic or "
        "data.real_text, or set data.user_files.train_text"
      )
    if self.vocab_min_median_count < 0:
      raise ValueError("data.vocab_min_median_count must be >= 0 (0: keep data.vocab_size)")
    if self.seq_len < 2:
      raise ValueError(f"data.seq_len={self.seq_len} must be >= 2")
    if self.order_seed < -1:
      raise ValueError(f"data.order_seed={self.order_seed}: use a seed >= 0, or -1 (data.seed)")
    if not 0 <= self.world.heldout_fraction < 1:
      raise ValueError("data.world.heldout_fraction must be in [0, 1)")
    if self.memory_swap_unit not in ("word", "token"):
      raise ValueError(f"data.memory_swap_unit={self.memory_swap_unit!r}: use 'word' or 'token'")
    if self.memory_swap_readable and self.memory_swap_unit != "word":
      raise ValueError(
        "data.memory_swap_readable needs data.memory_swap_unit='word' (token swaps do not "
        "track where a value can be read)"
      )
    if self.memory_swap_pool not in SWAP_POOLS:
      raise ValueError(f"data.memory_swap_pool={self.memory_swap_pool!r}: use one of {SWAP_POOLS}")
    if not 0.0 < self.memory_swap_template_df <= 1.0:
      raise ValueError(
        f"data.memory_swap_template_df={self.memory_swap_template_df} must be in (0, 1]"
      )
    if not 0.0 <= self.memory_swap_rate <= 1.0:
      raise ValueError(f"data.memory_swap_rate={self.memory_swap_rate} must be in [0, 1]")
    if not self.memory_swap_loss_weight > 0.0:
      raise ValueError(
        f"data.memory_swap_loss_weight={self.memory_swap_loss_weight} must be > 0 "
        "(1: a swapped token weighs as any other)"
      )
    if self.memory_swap_loss_ramp < 0:
      raise ValueError(
        f"data.memory_swap_loss_ramp={self.memory_swap_loss_ramp} must be >= 0 (0: no ramp)"
      )
    if not self.memory_swap_loss_weight_start > 0.0:
      raise ValueError(
        f"data.memory_swap_loss_weight_start={self.memory_swap_loss_weight_start} must be > 0"
      )
    if self.memory_swap_stop_tokens < 0:
      raise ValueError("data.memory_swap_stop_tokens must be >= 0")
    if not 0.0 <= self.repeat_rate <= 1.0:
      raise ValueError(f"data.repeat_rate={self.repeat_rate} must be in [0, 1]")
    if self.doc_order not in DOC_ORDERS:
      raise ValueError(f"data.doc_order={self.doc_order!r}: use one of {DOC_ORDERS}")
    if self.doc_group_size < 1:
      raise ValueError(f"data.doc_group_size={self.doc_group_size} must be >= 1")
    if self.kb_cloze not in CLOZE_MODES:
      raise ValueError(f"data.kb_cloze={self.kb_cloze!r}: use one of {CLOZE_MODES}")
    if self.user_qa_train not in USER_QA_TRAIN_MODES:
      raise ValueError(
        f"data.user_qa_train={self.user_qa_train!r}: use one of {USER_QA_TRAIN_MODES}"
      )
    if not 0.0 < self.user_qa_train_fraction < 1.0:
      raise ValueError(
        f"data.user_qa_train_fraction={self.user_qa_train_fraction} must be in (0, 1) "
        "(data.user_qa_train='off' evaluates every question)"
      )
    if self.user_qa_train_passes < 1:
      raise ValueError(f"data.user_qa_train_passes={self.user_qa_train_passes} must be >= 1")
    if self.kb_cloze_window < 0:
      raise ValueError(f"data.kb_cloze_window={self.kb_cloze_window} must be >= 0")
    if not 0.0 <= self.memory_distractor_rate <= 1.0:
      raise ValueError(
        f"data.memory_distractor_rate={self.memory_distractor_rate} must be in [0, 1]"
      )
    if not 0.0 <= self.context_ref_rate <= 1.0:
      raise ValueError(f"data.context_ref_rate={self.context_ref_rate} must be in [0, 1]")
    if not 0.0 <= self.kb_cloze_rate <= 1.0:
      raise ValueError(f"data.kb_cloze_rate={self.kb_cloze_rate} must be in [0, 1]")
    if len(self.repeat_spans) != 2 or not 1 <= self.repeat_spans[0] <= self.repeat_spans[1]:
      raise ValueError(
        f"data.repeat_spans={self.repeat_spans} must be (min, max) with 1 <= min <= max"
      )
    if self.retrieval_candidates < 1:
      raise ValueError("data.retrieval_candidates must be >= 1")


def _build(cls, values: Mapping[str, Any], where: str, nested: dict):
  valid = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - valid)
  if unknown:
    raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")
  kwargs = {}
  for k, v in values.items():
    if k in nested:
      v = _build(nested[k], v, f"{where}.{k}", {})
    elif isinstance(v, list):
      v = tuple(v)
    kwargs[k] = v
  return cls(**kwargs)


def data_config_from(section) -> DataConfig:
  """``config.data`` (ConfigDict or mapping) -> DataConfig; unknown keys are an error."""
  if isinstance(section, DataConfig):
    return section
  values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  if "world" in values and "seed" not in values["world"]:
    values["world"] = dict(values["world"], seed=values.get("seed", 0))
  return _build(DataConfig, values, "config.data", {"world": WorldConfig, "user_files": UserFiles})
