"""The RAG baseline on the same weights (paper §7.4): references as a text prefix.

Same retrieval as the memory condition (the very ids the memory source returns for the
prompt's first chunk, after the same anti-copy filter), but the R references' *text* is
prepended in the paper's format, one item per line:

    header1 \\n ref_1 \\n … \\n ref_R \\n header2 \\n prompt

and the model runs without memory. With a one-chunk question (every QA prompt here) the
query text is exactly the memory condition's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from m3jax.task import RAG_HEADER_QUESTION, RAG_HEADER_REFERENCES, ChunkQuery, chunk_query_tokens


def rag_text(
  ref_texts: Sequence[str],
  prompt_text: str,
  *,
  header1: str = RAG_HEADER_REFERENCES,
  header2: str = RAG_HEADER_QUESTION,
) -> str:
  """header1 + refs + header2 + prompt, separated by line breaks (§7.4)."""
  return "\n".join([header1, *ref_texts, header2, prompt_text])


def references_that_fit(
  ref_texts: Sequence[str],
  prompt_text: str,
  n_tokens: Callable[[str], int],
  max_tokens: int | None,
  **headers,
) -> int:
  """How many of the ranked ``ref_texts`` (best first) the RAG prompt holds within
  ``max_tokens`` (``n_tokens(text)`` counts a prompt's tokens): the longest prefix that
  fits, and never fewer than one, so a reference longer than the budget is still read
  (over it). ``max_tokens`` None keeps them all.

  A model trained on rows of T tokens has never attended past position T; a prompt of
  five long references and a question goes past it, and RAG then measures the
  positions more than the references (docs/design.md, "Honest measurement")."""
  if max_tokens is None or not ref_texts:
    return len(ref_texts)
  keep = 1
  while keep < len(ref_texts):
    if n_tokens(rag_text(ref_texts[: keep + 1], prompt_text, **headers)) > max_tokens:
      break
    keep += 1
  return keep


def rag_ids(source, prompts_tokens: Sequence[np.ndarray], chunk_len: int) -> np.ndarray:
  """The retrieval the memory condition does for each prompt's first chunk, [n, R]."""
  queries = [
    ChunkQuery(i, 0, chunk_query_tokens(np.asarray(p), len(p), 0, chunk_len))
    for i, p in enumerate(prompts_tokens)
  ]
  return source.retrieve_ids(queries)


def rag_prompts(
  source,
  prompt_texts: Sequence[str],
  encode: Callable[[str], np.ndarray],
  ref_text: Callable[[str], str],
  chunk_len: int,
  **headers,
):
  """-> (RAG prompt texts, ids [n, R] used). ``encode(text)`` gives the model's prompt
  tokens (with ``<s>``); ``ref_text(id)`` the reference's text."""
  ids = rag_ids(source, [encode(t) for t in prompt_texts], chunk_len)
  texts = [
    rag_text([ref_text(i) for i in row if i is not None], t, **headers)
    for t, row in zip(prompt_texts, ids)
  ]
  return texts, ids
