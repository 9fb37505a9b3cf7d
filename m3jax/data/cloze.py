"""Knowledge-base cloze rows: a lookup signal that matches by the references' own words.

A question asks for a value with the words its reference uses ("Who is the captain of
the ship X?" for "X sails under captain V"), but a user's training prose may never use
them ("Sailors on the X answer to V"): reading then needs a paraphrase map per attribute,
learned from the few percent of tokens only memory predicts, and on a small prose corpus
it is not learned (docs/design.md, "What the training rows teach"). These rows teach the
lookup itself, from the knowledge base alone, for any world.

A cloze row holds one item per chunk. Chunk ``c`` reads one reference ``r`` drawn from the
knowledge base, with *every* value word swapped (m3jax.data.counterfactual.WordSwapper at
rate 1, in the memory and the text alike), and says

    Q: <r with one value word replaced by " ?"> A: <that word>

then padding. Only the answer's tokens are scored (``loss_mask``), so the only way to
predict them is to find the question's words in memory and read the word at the gap:
the text does not hold it (the gap), and the weights cannot (a fresh word each time). A
blank is a value word that occurs once in ``r``, so the context never repeats it.

With the whole reference as context, the value can be found by the words just before
the gap alone (copy what followed them in memory), which a question rarely repeats: it
names the attribute, often with words the reference puts *after* the value ("X calls V
its home port"). ``window`` > 0 keeps only that many words on each side of the gap and,
for two items in three, one side only (before, or after), so the lookup must also match
the words that follow a value.

No fact leaks into the weights, for held-out entities either: each value word of an
item, entity names included, is replaced by a value word of the knowledge base drawn at
random, so a row pairs names and values by chance, never by the facts; a word left as it
is occurs in more than ``template_df`` of the references (a template word). Pure numpy
on the host; the caller seeds ``rng`` by stream position, so a resumed run builds the
same rows.
"""

from __future__ import annotations

import json
import re

import numpy as np

from m3jax.data import shift
from m3jax.data.counterfactual import WordSwapper, word_spans

TRIES = 8  # references drawn per chunk before the chunk is left as padding
MODES = ("auto", "on", "off")
_QA_LINE = re.compile(r"Q: .+? A:")  # m3jax.task.qa_prompt's format


def text_has_questions(train_jsonl: str) -> bool:
  """Whether any training document holds a ``Q: … A:`` line (m3jax.task.qa_prompt)."""
  with open(train_jsonl) as f:
    return any(_QA_LINE.search(json.loads(line)["text"]) for line in f if line.strip())


def effective_rate(mode: str, rate: float, train_jsonl: str) -> float:
  """The cloze rate a run uses: ``rate`` when ``mode`` is "on", or "auto" and the
  training text never asks a question in the evaluation's format (a corpus that shows
  the format, like the demo world's, does not need the rows); else 0."""
  if mode not in MODES:
    raise ValueError(f"data.kb_cloze={mode!r}: use one of {MODES}")
  if mode == "off" or rate == 0.0:
    return 0.0
  if mode == "auto" and text_has_questions(train_jsonl):
    return 0.0
  return rate


class KBCloze:
  """Builds cloze rows from the references ``ref_tokens_NxL`` (lengths ``ref_lengths_N``).

  ``question``, ``gap`` and ``answer`` are the token ids of ``"Q:"``, ``" ?"`` and
  ``" A:"`` in the run's vocabulary (m3jax.task.qa_text's format).
  """

  def __init__(
    self,
    ref_tokens_NxL: np.ndarray,
    ref_lengths_N: np.ndarray,
    words: WordSwapper,
    question: list[int],
    gap: list[int],
    answer: list[int],
    pad_id: int,
    window: int = 0,
  ):
    self.ref_tokens, self.ref_lengths, self.words = ref_tokens_NxL, ref_lengths_N, words
    self.question, self.gap, self.answer = list(question), list(gap), list(answer)
    self.pad_id = pad_id
    if window < 0:
      raise ValueError(f"data.kb_cloze_window={window} must be >= 0 (0: the whole reference)")
    self.window = window
    self._usable = np.flatnonzero(ref_lengths_N > 0)
    if self._usable.size == 0:
      raise ValueError("knowledge-base cloze: the knowledge base has no reference")

  def item(
    self, ref_T: np.ndarray, rng: np.random.Generator, chunk_len: int
  ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(tokens [chunk_len], loss_mask [chunk_len], swapped reference [len(ref_T)]) for one
    reference, or None when a value could not be swapped, none occurs once, or the item
    does not fit in a chunk."""
    swapped, _ = self.words.swap_row(ref_T, ref_T[None], np.array([len(ref_T)]), 1.0, rng)
    spans = word_spans(swapped, self.words.boundaries_V)
    word_list = [tuple(swapped[s:e].tolist()) for s, e in spans]
    original = [tuple(ref_T[s:e].tolist()) for s, e in spans]
    if any(w == o and self.words.is_value(o) for w, o in zip(word_list, original)):
      return None  # a value kept as it is (no fresh word found): it would leak its fact
    counts: dict[tuple, int] = {}
    for w in word_list:
      counts[w] = counts.get(w, 0) + 1
    blanks = [
      i
      for i, (w, o) in enumerate(zip(word_list, original))
      if w != o and counts[w] == 1  # swapped (a value), once in the reference
    ]
    if not blanks:
      return None
    blank = blanks[int(rng.integers(len(blanks)))]
    s, e = spans[blank]
    lo, hi = 0, len(swapped)  # the whole reference around the gap
    if self.window:
      lo = spans[max(0, blank - self.window)][0]
      hi = spans[min(len(spans), blank + 1 + self.window) - 1][1]
      side = int(rng.integers(3))  # both sides, the words before only, after only
      if side == 1 and lo < s:
        hi = e
      elif side == 2 and e < hi:
        lo = s
    text = self.question + swapped[lo:s].tolist() + self.gap + swapped[e:hi].tolist() + self.answer
    target = swapped[s:e].tolist()
    if len(text) + len(target) > chunk_len:
      return None
    tokens = np.full(chunk_len, self.pad_id, np.int32)
    mask = np.zeros(chunk_len, np.float32)
    tokens[: len(text) + len(target)] = text + target
    mask[len(text) : len(text) + len(target)] = 1.0
    return tokens, mask, swapped

  def row(self, num_chunks: int, chunk_len: int, ref_len: int, rng: np.random.Generator) -> dict:
    """One row: ``targets``/``loss_mask`` [C·chunk_len] and its ``ref_tokens`` [C, ref_len],
    ``ref_lengths`` [C] (a chunk with no usable reference after ``TRIES`` is padding)."""
    targets = np.full((num_chunks, chunk_len), self.pad_id, np.int32)
    mask = np.zeros((num_chunks, chunk_len), np.float32)
    refs = np.zeros((num_chunks, ref_len), np.int32)
    lengths = np.zeros(num_chunks, np.int32)
    for c in range(num_chunks):
      for n in rng.choice(self._usable, size=TRIES):
        ref_T = self.ref_tokens[n, : self.ref_lengths[n]]
        made = self.item(ref_T, rng, chunk_len)
        if made is not None:
          targets[c], mask[c], swapped = made
          refs[c, : len(swapped)] = swapped
          lengths[c] = len(swapped)
          break
    return dict(
      targets=targets.reshape(-1), loss_mask=mask.reshape(-1), ref_tokens=refs, ref_lengths=lengths
    )

  def replace_rows(
    self, batch: dict, rate: float, rng: np.random.Generator, bos_id: int, chunk_len: int
  ) -> dict:
    """The batch with about ``rate`` of its rows replaced by cloze rows (a memory-stage
    batch: ``ref_tokens`` [B, C, N] with one reference per chunk)."""
    if not 0.0 <= rate <= 1.0:
      raise ValueError(f"knowledge-base cloze rate={rate} must be in [0, 1]")
    chosen = np.flatnonzero(rng.random(batch["targets"].shape[0]) < rate)
    if chosen.size == 0:
      return batch
    targets, mask = batch["targets"].copy(), batch["loss_mask"].copy()
    refs, lengths = batch["ref_tokens"].copy(), batch["ref_lengths"].copy()
    num_chunks, ref_len = refs.shape[1], refs.shape[2]
    for b in chosen:
      row = self.row(num_chunks, chunk_len, ref_len, rng)
      targets[b], mask[b] = row["targets"], row["loss_mask"]
      refs[b], lengths[b] = row["ref_tokens"], row["ref_lengths"]
    return shift.with_targets(
      batch, targets, bos_id, loss_mask=mask, ref_tokens=refs, ref_lengths=lengths
    )
