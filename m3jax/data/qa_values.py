"""Which knowledge-base words are values, read from the training QA's answers.

The counterfactual swap (m3jax.data.counterfactual) must know which words to swap and
what may replace them. Frequency alone calls a value of an attribute with few options
("6" in "walks on 6 legs") a template word; the training answers say otherwise, and
their attributes say which options a closed-list value is among. Only training items may
be passed: evaluation answers would tell training which words the test asks about.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from m3jax.data.counterfactual import word_tuples
from m3jax.data.value_kinds import value_kinds


def _words(text: str, encode: Callable[[str], list[int]], boundaries_V: np.ndarray) -> list:
  """The words of ``text`` (token tuples), spaced as inside a row."""
  tokens = np.asarray(encode(" " + " ".join(str(text).split())), np.int64)
  return word_tuples(tokens, boundaries_V)


def _asked(items: Iterable[dict], encode, boundaries_V: np.ndarray) -> set[tuple]:
  """Every word the questions say: template words, whatever an answer holds."""
  return {w for it in items for w in _words(it["question"], encode, boundaries_V)}


def answer_value_words(
  items: Iterable[dict], encode: Callable[[str], list[int]], boundaries_V: np.ndarray
) -> set[tuple]:
  """The words of training QA answers that no training question uses: values, whatever
  their document frequency in the knowledge base.

  An answer's words are values ("6", "Elones", "diving"), except those the questions
  also say ("the" in "the diving bell": "What is the ..."), which are template words.
  """
  items = list(items)
  answers = {w for it in items for w in _words(it["answer"], encode, boundaries_V)}
  return answers - _asked(items, encode, boundaries_V)


def closed_list_options(
  items: Iterable[dict], encode: Callable[[str], list[int]], boundaries_V: np.ndarray
) -> dict[tuple, str]:
  """Value word -> its attribute, for the answers of closed-list attributes (few options,
  each shared by many entities: m3jax.data.value_kinds) among ``items``; the words the
  questions also say are left out, as in :func:`answer_value_words`. Items without an
  ``attribute`` give nothing."""
  items = [it for it in items if it.get("attribute") is not None]
  closed = {a for a, k in value_kinds(items).items() if k == "closed_list"}
  out: dict[tuple, str] = {}
  for it in items:
    if str(it["attribute"]) in closed:
      for w in _words(it["answer"], encode, boundaries_V):
        out.setdefault(w, str(it["attribute"]))
  asked = _asked(items, encode, boundaries_V)
  return {w: a for w, a in out.items() if w not in asked}
