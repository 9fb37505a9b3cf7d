"""Counterfactual memory augmentation: training tokens that only memory can predict.

In stage 2 a training row and its pre-retrieved references state the same facts, and on a
small corpus the weights memorize those facts within a few epochs: predicting a value
from parameters is then as good as reading it from memory, and reading is never learned
(issue #10: training loss 0.001 on a 2,400-document world while exact match stays 0.02).

This module breaks that shortcut without changing the world. For each training row, the
tokens it shares with its references (minus the most frequent reference tokens, which are
template words, and the special ids) are, each with probability ``rate``, replaced by a
fresh token drawn from the references' unigram distribution, consistently in the row and
in every one of its references. The swapped fact is then true in this batch's memory and
nowhere in the weights, so the only way to predict it is to read it. The replacement is
injective within a row (two different tokens never collapse into one) and never a token
already present in the row or its references.

Pure numpy on the host, outside ``jit``; the per-batch generator is seeded from the
iterator's position, so a resumed run swaps identically.
"""

from __future__ import annotations

import unicodedata
from typing import Collection, Mapping

import numpy as np

from m3jax.data import shift
from m3jax.data.vocab import NUM_SPECIAL


def _valid_tokens(ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray) -> np.ndarray:
  positions_L = np.arange(ref_tokens_NxL.shape[-1])
  return ref_tokens_NxL[positions_L < ref_lengths_N[..., None]]


def stop_token_mask(
  ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray, vocab_size: int, num_stop: int
) -> np.ndarray:
  """bool [V]: tokens never swapped: the special ids and the ``num_stop`` most frequent
  tokens of the knowledge base (its template words: "is", "of", attribute names)."""
  counts_V = np.bincount(_valid_tokens(ref_tokens_NxL, ref_lengths_N), minlength=vocab_size)
  stop_V = np.zeros(vocab_size, bool)
  stop_V[:NUM_SPECIAL] = True
  if num_stop > 0:
    stop_V[np.argsort(-counts_V, kind="stable")[:num_stop]] = True
  return stop_V


def replacement_weights(
  ref_tokens_NxL: np.ndarray, ref_lengths_N: np.ndarray, stop_V: np.ndarray
) -> np.ndarray:
  """float [V], sums to 1: the references' unigram distribution over swappable tokens, so
  a replacement looks like a value the knowledge base could hold."""
  counts_V = np.bincount(
    _valid_tokens(ref_tokens_NxL, ref_lengths_N), minlength=stop_V.shape[0]
  ).astype(np.float64)
  counts_V[stop_V] = 0.0
  total = counts_V.sum()
  if total == 0:
    raise ValueError(
      "counterfactual swap: the references have no token outside the stop list; lower "
      "data.memory_swap_stop_tokens or set data.memory_swap_rate=0"
    )
  return counts_V / total


def swap_row(
  targets_T: np.ndarray,
  ref_tokens_CxN: np.ndarray,
  ref_lengths_C: np.ndarray,
  stop_V: np.ndarray,
  weights_V: np.ndarray,
  rate: float,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """One row: returns (targets_T, ref_tokens_CxN) with shared tokens swapped; the inputs
  are not changed in place. Padding beyond ``ref_lengths_C`` is left as it is."""
  valid_CxN = np.arange(ref_tokens_CxN.shape[-1]) < ref_lengths_C[:, None]
  ref_set = np.unique(ref_tokens_CxN[valid_CxN])
  shared = np.intersect1d(np.unique(targets_T), ref_set)
  shared = shared[~stop_V[shared]]
  chosen = shared[rng.random(shared.shape[0]) < rate]
  if chosen.size == 0:
    return targets_T, ref_tokens_CxN
  taken_V = stop_V.copy()
  taken_V[targets_T] = True
  taken_V[ref_set] = True
  p_V = np.where(taken_V, 0.0, weights_V)
  available = int(np.count_nonzero(p_V))
  chosen = chosen[:available]  # a tiny vocabulary can run out of fresh tokens
  if chosen.size == 0:
    return targets_T, ref_tokens_CxN
  fresh = rng.choice(p_V.shape[0], size=chosen.size, replace=False, p=p_V / p_V.sum())
  table_V = np.arange(stop_V.shape[0], dtype=targets_T.dtype)
  table_V[chosen] = fresh
  refs = ref_tokens_CxN.copy()
  refs[valid_CxN] = table_V[ref_tokens_CxN[valid_CxN]]
  return table_V[targets_T], refs


def swap_batch(
  batch: dict,
  stop_V: np.ndarray,
  weights_V: np.ndarray,
  rate: float,
  rng: np.random.Generator,
  bos_id: int,
) -> dict:
  """A batch dict (see m3jax.data.pipeline) with every row swapped; ``inputs`` are rebuilt
  from the swapped ``targets`` so the two stay shifted by one."""
  targets_BxT = batch["targets"].copy()
  refs_BxCxN = batch["ref_tokens"].copy()
  for b in range(targets_BxT.shape[0]):
    targets_BxT[b], refs_BxCxN[b] = swap_row(
      targets_BxT[b], refs_BxCxN[b], batch["ref_lengths"][b], stop_V, weights_V, rate, rng
    )
  return shift.with_targets(batch, targets_BxT, bos_id, ref_tokens=refs_BxCxN)


# ------------------------------------------------------------------------- whole words
# Token-level swapping cannot touch a value made of frequent pieces: a year is digits, and
# digits are among the most frequent reference tokens, so years were never swapped and
# never had to be read. Swapping whole words, with a replacement word of the same number
# of pieces, reaches every value kind; template words are told apart by how many
# references hold them (a template word is in a large share of references, any one value
# in a small share), not by a count tuned to one world.


# Word boundaries, one code per token id ([V] int8): CONTINUES a word, STARTS one, or is
# PUNCTUATION, a word of its own that also ends the one before and begins a new one after
# it. Without the last, "1842." and "(1842)" in a reference would be other words than
# the "1842" a training row or an answer says, and a natural-prose world's values, which
# end sentences and clauses, would never be shared and never swapped (docs/design.md,
# session 21).
CONTINUES, STARTS, PUNCTUATION = 0, 1, 2


def _is_punctuation(piece: str) -> bool:
  text = piece.lstrip("\u2581")
  return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def word_boundary_codes(vocab, *, split_punctuation: bool) -> np.ndarray:
  """int8 [V]: each token's word-boundary code (CONTINUES, STARTS, PUNCTUATION).
  SentencePiece: pieces starting with '\u2581' and the special ids start a word; with
  ``split_punctuation``, pieces of punctuation only ("." "," ")" "\u2581(") are
  PUNCTUATION (without, a word runs on through its trailing punctuation: "1842." is a
  word of its own; ``data.memory_swap_split_punctuation``). A vocabulary without word
  pieces (bytes) makes every token a word, which reduces word swapping to token swapping."""
  size = int(vocab.vocab_size)
  sp = getattr(vocab, "_sp", None)
  if sp is None:
    return np.full(size, STARTS, np.int8)
  pieces = [sp.id_to_piece(i) for i in range(size)]
  codes_V = np.array([STARTS if p.startswith("\u2581") else CONTINUES for p in pieces], np.int8)
  if split_punctuation:
    codes_V[[_is_punctuation(p) for p in pieces]] = PUNCTUATION
  codes_V[:NUM_SPECIAL] = STARTS
  return codes_V


def word_spans(tokens_T: np.ndarray, boundaries_V: np.ndarray) -> list[tuple[int, int]]:
  """``[(start, end), ...]`` of the words of ``tokens_T``: a word runs from a word-start
  token (any nonzero code of ``boundaries_V``, a bool mask included) to the next one, and a
  PUNCTUATION token is a word of its own (the first span may be a word's tail, cut by row
  packing)."""
  n = len(tokens_T)
  if n == 0:
    return []
  codes_T = np.asarray(boundaries_V)[tokens_T].astype(np.int8)
  after_punct_T = np.concatenate([[False], codes_T[:-1] == PUNCTUATION])
  cuts = np.flatnonzero((codes_T != CONTINUES) | after_punct_T)
  bounds = np.unique(np.concatenate([[0], cuts, [n]]))
  return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def word_tuples(tokens_T: np.ndarray, boundaries_V: np.ndarray) -> list[tuple]:
  """The words of ``tokens_T`` (:func:`word_spans`), each as a tuple of its token ids."""
  return [tuple(tokens_T[s:e].tolist()) for s, e in word_spans(tokens_T, boundaries_V)]


SWAP_POOLS = ("length", "slot", "mixed", "pieces", "attribute")
SLOT_WORDS = 2  # template words that name a value's slot ("color =", "built in")


class WordSwapper:
  """Whole-word counterfactual swaps, with the knowledge base's word statistics.

  Template words are those in more than ``template_df`` of the references (document
  frequency), except the words in ``values`` (:func:`m3jax.data.qa_values.answer_value_words`: a value of an
  attribute with few options, "6" in "walks on 6 legs", is in more than 5% of the
  references, yet a value); the rest are values. A replacement is a value word of the
  knowledge base with the same number of pieces (drawn by its frequency), so the row
  keeps its length and its word boundaries, and the swapped fact reads like one the
  knowledge base could hold.

  Pool "pieces" recombines instead: piece i of a replacement is drawn on its own among
  the i-th pieces of the value words with as many pieces (by frequency). A knowledge-base
  word is known to the weights, which can complete it once its first piece is read; a
  recombined word is new, so each of its pieces must be read. Measured worse than
  "length" (docs/design.md, "Session 25": what kept a held-out "Melskoruv" from being
  read past "Mel" was training's selection, which dropped the later pieces).
  """

  def __init__(
    self,
    ref_tokens_NxL: np.ndarray,
    ref_lengths_N: np.ndarray,
    boundaries_V: np.ndarray,
    template_df: float,
    pool: str = "length",
    values: Collection[tuple] = (),
    options: Mapping[tuple, str] | None = None,
  ):
    if pool not in SWAP_POOLS:
      raise ValueError(f"swap pool {pool!r}: use one of {SWAP_POOLS}")
    self.pool = pool
    if not 0.0 < template_df <= 1.0:
      raise ValueError(f"template_df={template_df} must be in (0, 1]")
    self.boundaries_V = boundaries_V
    df: dict[tuple, int] = {}
    freq: dict[tuple, int] = {}
    ref_words = [self._words(tokens[:n]) for tokens, n in zip(ref_tokens_NxL, ref_lengths_N)]
    for words in ref_words:
      for w in words:
        freq[w] = freq.get(w, 0) + 1
      for w in set(words):
        df[w] = df.get(w, 0) + 1
    limit = template_df * max(1, len(ref_lengths_N))
    values = set(values)
    self.template = {w for w, d in df.items() if d > limit and w not in values}
    pools: dict[int, list[tuple]] = {}
    for w in sorted(freq):
      if w not in self.template and min(w) >= NUM_SPECIAL:
        pools.setdefault(len(w), []).append(w)
    if not pools:
      raise ValueError(
        "counterfactual swap: every knowledge-base word is a template word; raise "
        "data.memory_swap_template_df or set data.memory_swap_rate=0"
      )
    self.pools = {k: _weighted(ws, freq) for k, ws in pools.items()}
    # Pool "pieces": per length n, per position i < n, the i-th pieces of the value words
    # of n pieces and their probabilities (by word frequency); built for that pool only.
    self.piece_pools: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    for n, ws in pools.items() if pool == "pieces" else ():
      per_position = []
      for i in range(n):
        piece_counts: dict[int, int] = {}
        for w in ws:
          piece_counts[w[i]] = piece_counts.get(w[i], 0) + freq[w]
        ids = np.array(sorted(piece_counts), np.int64)
        weight = np.array([piece_counts[t] for t in ids.tolist()], np.float64)
        per_position.append((ids, weight / weight.sum()))
      self.piece_pools[n] = per_position
    # Slot pools: the value words seen after the same template words ("color =", "was
    # built in"), so a swapped value is one of its kind and the weights' prior for that
    # slot is no help: only reading memory predicts it.
    self.slot_of: dict[tuple, tuple] = {}
    slot_freq: dict[tuple, dict[tuple, int]] = {}
    for words in ref_words:
      for i, w in enumerate(words):
        if w in self.template or min(w) < NUM_SPECIAL:
          continue
        slot = self._slot(words, i)
        self.slot_of.setdefault(w, slot)
        counts = slot_freq.setdefault((slot, len(w)), {})
        counts[w] = counts.get(w, 0) + 1
    self.slot_pools = {k: _weighted(sorted(c), c) for k, c in slot_freq.items()}
    # Pool "attribute": a closed-list value's options (``options``: value word ->
    # attribute, m3jax.data.qa_values.closed_list_options), per attribute and length, by their frequency in
    # the knowledge base (1 for an option no reference holds).
    self.option_of = dict(options or {})
    option_freq: dict[tuple, dict[tuple, int]] = {}
    for w, attr in self.option_of.items():
      if min(w) >= NUM_SPECIAL:
        option_freq.setdefault((attr, len(w)), {})[w] = max(freq.get(w, 0), 1)
    self.option_pools = {k: _weighted(sorted(c), c) for k, c in option_freq.items()}

  def _words(self, tokens: np.ndarray) -> list[tuple]:
    return word_tuples(tokens, self.boundaries_V)

  def _slot(self, words: list[tuple], i: int) -> tuple:
    """The template words right before word ``i`` (at most ``SLOT_WORDS``): its slot."""
    lo = i
    while lo > 0 and i - lo < SLOT_WORDS and words[lo - 1] in self.template:
      lo -= 1
    return tuple(words[lo:i])

  def _candidates(self, w: tuple, rng: np.random.Generator) -> tuple[list[tuple], np.ndarray]:
    """Replacement words for ``w`` and their probabilities: its slot's value words of the
    same length (pool "slot", when that slot has another; pool "mixed", for half the
    swapped words, drawn per word; pool "attribute": a closed-list value's other options
    of its length, when it has some), else any value word of the same length."""
    if self.pool == "attribute" and w in self.option_of:
      options = self.option_pools.get((self.option_of[w], len(w)))
      if options is not None and len(options[0]) > 1:
        return options
    if self.pool == "slot" or (self.pool == "mixed" and rng.random() < 0.5):
      slot = self.slot_pools.get((self.slot_of.get(w, ()), len(w)))
      if slot is not None and len(slot[0]) > 1:
        return slot
    return self.pools[len(w)]

  def _draw(self, w: tuple, rng: np.random.Generator, size: int = 8) -> list[tuple]:
    """``size`` candidate replacements for ``w``, in the order they are tried."""
    if self.pool == "pieces":
      cols = [ids[rng.choice(len(ids), size=size, p=p)] for ids, p in self.piece_pools[len(w)]]
      return [tuple(int(c[j]) for c in cols) for j in range(size)]
    words, p = self._candidates(w, rng)
    return [words[i] for i in rng.choice(len(words), size=size, p=p)]

  def is_value(self, w: tuple) -> bool:
    """A word swaps get to replace: not a template word, no special id, a pool of its length."""
    return w not in self.template and min(w) >= NUM_SPECIAL and len(w) in self.pools

  def swap_row(
    self,
    targets_T: np.ndarray,
    ref_tokens_CxN: np.ndarray,
    ref_lengths_C: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    chunk_len: int = 0,
    window: int = 0,
  ) -> tuple[np.ndarray, np.ndarray]:
    """One row: ``(targets_T, ref_tokens_CxN)`` with each shared value word replaced, with
    probability ``rate``, everywhere in the row and its references alike; inputs are not
    changed in place, padding beyond ``ref_lengths_C`` is left as it is.

    ``window`` > 0: only words that every occurrence can read are swapped. Chunk ``c``
    (tokens ``[c·chunk_len, (c+1)·chunk_len)``) reads the references of chunks
    ``c-window+1..c`` (the model's ``refs_per_chunk``); a value shared only with another
    chunk's reference would, swapped, be predictable from nothing. 0: any reference.
    """
    if window > 0 and chunk_len <= 0:
      raise ValueError(f"swapping only readable values (window={window}) needs chunk_len > 0")
    row_spans = word_spans(targets_T, self.boundaries_V)
    ref_spans = [
      word_spans(r[:n], self.boundaries_V) for r, n in zip(ref_tokens_CxN, ref_lengths_C)
    ]
    row_words = [tuple(targets_T[s:e].tolist()) for s, e in row_spans]
    ref_words = [
      [tuple(r[s:e].tolist()) for s, e in sp] for r, sp in zip(ref_tokens_CxN, ref_spans)
    ]
    in_refs = {w for ws in ref_words for w in ws}
    shared = sorted(w for w in set(row_words) & in_refs if self.is_value(w))
    if window > 0 and shared:
      unreadable = _unreadable(row_spans, row_words, ref_words, chunk_len, window)
      shared = [w for w in shared if w not in unreadable]
    chosen = [w for w, u in zip(shared, rng.random(len(shared))) if u < rate]
    used = set(row_words) | in_refs
    table: dict[tuple, tuple] = {}
    for w in chosen:
      for new in self._draw(w, rng):  # a few draws; a used word is skipped
        if new not in used:
          table[w] = new
          used.add(new)
          break
    if not table:
      return targets_T, ref_tokens_CxN
    targets, refs = targets_T.copy(), ref_tokens_CxN.copy()
    for (s, e), w in zip(row_spans, row_words):
      if w in table:
        targets[s:e] = table[w]
    for c, (spans, words) in enumerate(zip(ref_spans, ref_words)):
      for (s, e), w in zip(spans, words):
        if w in table:
          refs[c, s:e] = table[w]
    return targets, refs

  def swap_batch(
    self,
    batch: dict,
    rate: float,
    rng: np.random.Generator,
    bos_id: int,
    chunk_len: int = 0,
    window: int = 0,
  ) -> dict:
    """A batch dict (m3jax.data.pipeline) with every row swapped; ``inputs`` rebuilt from
    the swapped ``targets``; ``chunk_len``, ``window``: as in :meth:`swap_row`."""
    targets_BxT = batch["targets"].copy()
    refs_BxCxN = batch["ref_tokens"].copy()
    for b in range(targets_BxT.shape[0]):
      targets_BxT[b], refs_BxCxN[b] = self.swap_row(
        targets_BxT[b], refs_BxCxN[b], batch["ref_lengths"][b], rate, rng, chunk_len, window
      )
    return shift.with_targets(batch, targets_BxT, bos_id, ref_tokens=refs_BxCxN)


def _unreadable(row_spans, row_words, ref_words, chunk_len: int, window: int) -> set:
  """Words of the row with an occurrence (its first token's chunk ``c``) that none of the
  references of chunks ``c-window+1..c`` holds."""
  ref_sets = [set(ws) for ws in ref_words]
  out = set()
  for (start, _), w in zip(row_spans, row_words):
    c = start // chunk_len
    visible = range(max(0, c - window + 1), min(c + 1, len(ref_sets)))
    if not any(w in ref_sets[j] for j in visible):
      out.add(w)
  return out


def _weighted(words: list[tuple], freq: dict[tuple, int]) -> tuple[list[tuple], np.ndarray]:
  """``(words, p)``: the words with probabilities proportional to their frequency."""
  counts = np.array([freq[w] for w in words], np.float64)
  return words, counts / counts.sum()
