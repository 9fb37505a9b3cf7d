"""``model.smeared_keys`` set from the knowledge base before a run is built.

A smeared key (m3jax.model.layers.AttentionProjections.smear_keys) carries the token
before it, so a head can find a value by the word that introduces it ("launched in
1842", "walks on 6 legs") and copy a value's later pieces by the piece before them. On two
invented prose worlds that read the training answers from references in varied
sentences it raised exact match by 0.34 and 0.18; on the demo world, whose references are
``key = value`` tables where every value follows "=", it made no value's key tell its
attribute and cost seed 0 0.58 (docs/design.md, "Session 26"). Which kind of knowledge
base a run has is a property of its text, so a config may ask for it:
``model.smeared_keys_fit = s`` turns smeared keys on unless a single word precedes more
than the share ``s`` of the training answers where they stand in their gold references
(``qa_train.jsonl``), and off when one does. No training answer found in a reference:
``smeared_keys`` stays as configured.

The commands that build a run fit their config once, after ``ref_len``
(m3jax.run.knowledge_fit); the workdir records the result.
"""

from __future__ import annotations

import collections
import re

import ml_collections

_WORD = re.compile(r"\w+|[^\w\s]")


def preceding_words(references: dict[str, str], qa: list[dict]) -> collections.Counter:
  """The word (or punctuation mark) right before each answer's first occurrence in its
  gold reference; answers without a gold reference holding them are skipped. A reference
  split at ``ref_len`` (ids ``id``, ``id#1``, …) is searched whole."""
  counts: collections.Counter = collections.Counter()
  for q in qa:
    text = references.get(str(q.get("gold_ref_id", "")), "")
    at = text.find(str(q.get("answer", ""))) if q.get("answer") else -1
    if at <= 0:
      continue
    words = _WORD.findall(text[:at])
    if words:
      counts[words[-1]] += 1
  return counts


def top_word_share(counts: collections.Counter) -> tuple[str, float, int]:
  """(the commonest preceding word, its share, how many answers were found)."""
  n = sum(counts.values())
  if not n:
    return "", 0.0, 0
  word, top = counts.most_common(1)[0]
  return word, top / n, n


def _references_by_id(records: list[dict]) -> dict[str, str]:
  """Reference texts by id; the pieces of a split line (``id#1``, …) joined under ``id``."""
  texts: dict[str, list[str]] = collections.defaultdict(list)
  for r in records:
    texts[str(r["id"]).split("#")[0]].append(r["text"])
  return {k: " ".join(v) for k, v in texts.items()}


def fit_smeared_keys(config: ml_collections.ConfigDict, paths=None) -> ml_collections.ConfigDict:
  """``config`` with ``model.smeared_keys`` set from its knowledge base (unchanged when
  ``model.smeared_keys_fit`` is 0). ``paths``: the run's prepared data
  (m3jax.run.reference_length.prepared_paths), prepared here when None."""
  share_max = float(config.model.get("smeared_keys_fit", 0.0) or 0.0)
  if not share_max:
    return config
  from m3jax.data.sources import read_jsonl
  from m3jax.run.reference_length import prepared_paths

  paths = paths or prepared_paths(config)
  refs = _references_by_id(read_jsonl(paths.references))
  word, share, n = top_word_share(preceding_words(refs, read_jsonl(paths.qa_train)))
  if not n:
    print(
      "[m3jax] model.smeared_keys_fit: no training answer stands in its gold reference; "
      f"model.smeared_keys stays {bool(config.model.smeared_keys)}",
      flush=True,
    )
    return config
  on = share <= share_max
  print(
    f"[m3jax] model.smeared_keys={on}: {share:.0%} of {n} training answers follow "
    f"{word!r} in their references (on when at most {share_max:.0%}: "
    "model.smeared_keys_fit; docs/design.md, 'Session 26')",
    flush=True,
  )
  config.model.smeared_keys = on
  return config
