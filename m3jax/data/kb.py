"""The prepared knowledge base of a run as references of at most ``ref_len`` tokens.

``prepare_data`` tokenizes each KB line once (``ref_tokens.npy``/``ref_offsets.npy``,
independent of the model); here a line longer than ``ref_len`` is split into pieces
(``references.split_reference``), never truncated. Training (``reference_arrays``,
pre-retrieval), the bank build, evaluation and the demo all read this one list, so
memory, retrieval and RAG see the same pieces and the same text.
"""

from __future__ import annotations

import numpy as np

from m3jax.data.references import Reference, SentenceEnds, split_reference
from m3jax.data.sources import read_jsonl


def kb_references(paths, vocab, ref_len: int) -> list[Reference]:
  """Every KB line as one reference, split into ``ref_len``-token pieces when longer.

  A line that fits keeps its id and text (banks and QA gold ids stay valid); a longer one
  becomes ``X``, ``X#1``, … (``references.document_pieces`` maps ``X`` back to them).
  Silent: training, pre-retrieval and evaluation each call it; the run says once what is
  split (:func:`split_note`, printed where ``ref_len`` is fitted).
  """
  records = read_jsonl(paths.references, "references")
  flat, offsets = np.load(paths.ref_tokens), np.load(paths.ref_offsets)
  if len(offsets) - 1 != len(records):
    raise ValueError(f"{paths.ref_tokens} does not match {paths.references}; re-run prepare_data")
  ends = SentenceEnds(vocab)
  refs: list[Reference] = []
  for i, r in enumerate(records):
    tokens = flat[offsets[i] : offsets[i + 1]]
    refs.extend(split_reference(r["id"], r["text"], vocab, ref_len, tokens=tokens, ends=ends))
  if len(refs) != len(records):
    ids = [r.id for r in refs]
    if len(set(ids)) != len(ids):
      dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
      raise ValueError(
        f"{paths.references}: a split line's piece id clashes with another line's id "
        f"{dup}; rename that line (ids ending in '#<digits>' are piece ids)"
      )
  return refs


def split_note(line_lengths_N: np.ndarray, ref_len: int) -> str | None:
  """What splitting lines of ``line_lengths_N`` tokens at ``ref_len`` does, for the user: None
  when every line fits. With more than 10% split, it names the ``ref_len`` that keeps 90%
  whole (a split line's later pieces may hold a fact without its subject, and each memory
  slot reads one piece)."""
  long = int(np.sum(line_lengths_N > ref_len))
  if not long:
    return None
  advice = ""
  if long > 0.1 * len(line_lengths_N):
    p90 = int(np.percentile(line_lengths_N, 90))
    advice = (
      f"; a piece of a split line may hold a fact without its subject, and each memory "
      f"slot reads one piece: to keep 90% of the lines whole, set "
      f"--config.model.memory.ref_len={p90} or more (before training)"
    )
  return (
    f"[m3jax] {long} of the {len(line_lengths_N)} knowledge-base lines are longer than "
    f"model.memory.ref_len={ref_len} tokens and are split at sentence ends{advice}"
  )


def reference_arrays(refs, ref_len: int) -> tuple[np.ndarray, np.ndarray]:
  """References -> ``(tokens_NxL int32 right-padded with pad=0, lengths_N int32)``, row i
  = ``refs[i]`` (each already at most ``ref_len`` tokens: :func:`kb_references`)."""
  lengths = np.array([len(r.tokens) for r in refs], np.int32)
  if len(lengths) and lengths.max() > ref_len:
    raise ValueError(f"a reference has {lengths.max()} tokens > ref_len={ref_len}; split it first")
  tokens = np.zeros((len(refs), ref_len), np.int32)
  for i, r in enumerate(refs):
    tokens[i, : lengths[i]] = r.tokens
  return tokens, lengths
