"""``model.memory.ref_len`` fitted to the knowledge base before a run is built.

A knowledge-base line longer than ``ref_len`` tokens is split into pieces
(m3jax.data.kb), and a later piece can hold a fact without its subject, which neither
retrieval nor a memory slot (one piece each) then connects to it. On an invented world of
39-67-token lines, all split at 32 tokens, memory's multiple choice was 0.41; at 64 it
was 0.61 (docs/design.md, "Session 16"). The right length is a property of the user's
lines, known only once they are tokenized, so a config may ask for it:
``model.memory.ref_len_fit = q`` grows ``ref_len`` (never shrinks it) to hold the
``q``-quantile line, in steps of 16 tokens, up to :data:`CAP` (the paper's 128), and the
tokens kept per head, ``model.memory.tokens_per_head`` (training's selection) and a
``bank.tokens_per_head`` set in the config (the bank's), grow in proportion.

The commands that build a run (train, demo, reproduce, prepare, sweep) fit their config
once, through :func:`m3jax.run.knowledge_fit.fit_to_knowledge_base`; the workdir records the
fitted length, so a command that loads it reads the same model.
"""

from __future__ import annotations

import math

import ml_collections
import numpy as np

from m3jax.data.kb import split_note

CAP = 128  # the paper's reference length (SPEC §3.3)
STEP = 16


def fitted_length(line_lengths: np.ndarray, quantile: float, ref_len: int) -> int:
  """``ref_len`` grown to hold the ``quantile`` line (a multiple of STEP, at most CAP)."""
  if not quantile or len(line_lengths) == 0:
    return ref_len
  want = STEP * math.ceil(float(np.quantile(line_lengths, quantile)) / STEP)
  return max(ref_len, min(CAP, want))


def prepared_paths(config: ml_collections.ConfigDict):
  """The run's prepared data (DataPaths), where the run will read it: ``data.data_dir``
  becomes its content-addressed folder, as training makes it (a no-op once prepared, and
  the vocabulary does not depend on the model). Hashes the user's files to find it."""
  from m3jax.data.prepare import prepare_data
  from m3jax.train.workdir import content_addressed

  return prepare_data(content_addressed(config).data)


def fit_ref_len(config: ml_collections.ConfigDict, paths=None) -> ml_collections.ConfigDict:
  """``config`` with ``model.memory.ref_len`` fitted (unchanged when ``ref_len_fit`` is 0).

  ``paths``: the run's prepared data (``prepared_paths``), prepared here when None.
  Prints the lines the fitted length still splits (``kb.split_note``): once per run, here,
  as training, pre-retrieval and evaluation split them silently.
  """
  memory = config.model.memory
  quantile = float(memory.get("ref_len_fit", 0.0) or 0.0)
  if not quantile:
    return config
  paths = paths or prepared_paths(config)
  lengths = np.diff(np.load(paths.ref_offsets))
  ref_len = fitted_length(lengths, quantile, int(memory.ref_len))
  if ref_len != memory.ref_len:
    whole = float(np.mean(lengths <= ref_len))
    print(
      f"[m3jax] model.memory.ref_len {memory.ref_len} -> {ref_len}: the knowledge base's "
      f"{quantile:.0%} line has {int(np.quantile(lengths, quantile))} tokens "
      f"(model.memory.ref_len_fit={quantile}); {whole:.0%} of its {len(lengths)} lines "
      f"now fit whole",
      flush=True,
    )
    _scale_kept_tokens(config, int(memory.ref_len), ref_len)
    memory.ref_len = ref_len
  note = split_note(lengths, ref_len)
  if note:
    print(note, flush=True)
  return config


def _scale_kept_tokens(config: ml_collections.ConfigDict, old: int, new: int) -> None:
  """The tokens kept per head grown with ``ref_len``, so a longer reference keeps the same
  share of its tokens: ``model.memory.tokens_per_head`` (what training selects and reads)
  and ``bank.tokens_per_head`` when set (what the bank serves; 0 serves training's k). A
  value of several pieces (a number, a two-word name) sits in more of a longer line's
  tokens, and a fixed k keeps fewer of them: in training, the pieces after a value's first
  are then often not in memory, and the model learns to complete a value from its weights
  instead of reading it (docs/design.md, "Session 24" for the bank, "Session 25" for
  training)."""
  memory, bank = config.model.memory, config.get("bank")
  fields = [("model.memory", memory)] + ([("bank", bank)] if bank is not None else [])
  for name, section in fields:
    k = int(section.get("tokens_per_head", 0) or 0)
    if not k:
      continue
    scaled = min(new, int(round(k * new / old)))
    print(
      f"[m3jax] {name}.tokens_per_head {k} -> {scaled}: the same share of a {new}-token "
      f"reference as of a {old}-token one",
      flush=True,
    )
    section.tokens_per_head = scaled
