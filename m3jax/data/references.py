"""Knowledge base -> references of at most ``ref_len`` tokens (paper §2: 128-token units).

A knowledge base is JSONL (one ``{"id", "text"}`` document per line; ``"reference": true``
marks a line that is already one reference and must not be split) or plain ``.txt`` files
(one document per file, id = file stem). Chunks never mix documents and end at sentence
boundaries when they can; a sentence longer than ``ref_len`` is split by tokens.
Ids are stable, ``"{doc_id}#{i}"``, so a resumed bank build sees the same sequence.

A knowledge-base *line* (the prepared KB of a run, a ``LiveKnowledge`` record) is one
reference; :func:`split_reference` splits one longer than ``ref_len`` tokens into pieces
(never truncates it): the first keeps the line's id, the others are ``"{id}#{i}"``, i ≥ 1.
:func:`document_pieces` maps a document id to its pieces (gold ids, deletion).

The tokenizer is anything with ``encode(str) -> list[int]`` and ``decode(list[int]) -> str``
(the seqio Vocabulary interface).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Callable, Iterable, Protocol, Sequence

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PIECE_SUFFIX = re.compile(r"^(.*)#(\d+)$")
_BOUNDARY_ENDS = (".", "!", "?", ";")


class Tokenizer(Protocol):
  def encode(self, text: str) -> Sequence[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


@dataclasses.dataclass(frozen=True)
class Reference:
  id: str
  text: str
  tokens: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Document:
  id: str
  text: str
  explicit: bool  # already one reference: never split, must fit ref_len
  source: str  # "file:line" for error messages


def _decode_error(path: str, raw: bytes, err: UnicodeDecodeError) -> ValueError:
  line = raw[: err.start].count(b"\n") + 1
  return ValueError(
    f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start}); "
    "re-encode the file as UTF-8"
  )


def _read_text(path: str) -> str:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise _decode_error(path, raw, e) from None


def read_documents(path: str, *, explicit: bool = False) -> list[Document]:
  """Documents of a ``.jsonl``/``.txt`` file or of every such file in a directory (sorted).

  ``explicit=True`` treats every JSONL line as an explicit reference (mode flag).
  """
  if os.path.isdir(path):
    files = sorted(
      os.path.join(path, f) for f in os.listdir(path) if f.endswith((".jsonl", ".txt"))
    )
    if not files:
      raise ValueError(f"{path}: directory holds no .jsonl or .txt knowledge-base files")
  elif os.path.exists(path):
    files = [path]
  else:
    raise ValueError(f"{path}: knowledge base not found")
  docs: list[Document] = []
  for f in files:
    docs.extend(_read_jsonl(f, explicit) if f.endswith(".jsonl") else _read_txt(f, explicit))
  seen = {}
  for d in docs:
    if d.id in seen:
      raise ValueError(f"{d.source}: duplicate document id {d.id!r} (first at {seen[d.id]})")
    seen[d.id] = d.source
  return docs


def _read_txt(path: str, explicit: bool) -> list[Document]:
  text = _read_text(path)
  if not text.strip():
    return []
  doc_id = os.path.splitext(os.path.basename(path))[0]
  return [Document(doc_id, text, explicit, f"{path}:1")]


def _read_jsonl(path: str, explicit: bool) -> list[Document]:
  docs = []
  for i, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    where = f"{path}:{i}"
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(
        f"{where}: malformed JSONL ({e.msg}); each line must be a JSON "
        'object like {"id": "doc1", "text": "..."}'
      ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
      raise ValueError(f'{where}: expected an object with a string "text" field')
    doc_id = obj.get("id", f"{os.path.basename(path)}:{i}")
    if not isinstance(doc_id, (str, int)):
      raise ValueError(f'{where}: "id" must be a string or an integer, got {doc_id!r}')
    docs.append(Document(str(doc_id), obj["text"], explicit or bool(obj.get("reference")), where))
  return docs


def split_tokens(
  tokens: Sequence[int], ref_len: int, is_boundary: Callable[[int], bool] = lambda t: False
) -> list[tuple[int, int]]:
  """``[start, end)`` spans of at most ``ref_len`` tokens that cover ``tokens`` in order.

  While more than ``ref_len`` tokens remain, a span ends just after the last boundary
  token (``is_boundary``: a sentence end) of its ``ref_len``-token window, or at the
  window's end when the window holds none (a hard split). One span when it fits.
  """
  if ref_len < 1:
    raise ValueError(f"ref_len={ref_len} must be at least 1")
  spans, start, n = [], 0, len(tokens)
  while n - start > ref_len:
    end = start + ref_len
    cut = next((j + 1 for j in range(end - 1, start - 1, -1) if is_boundary(tokens[j])), end)
    spans.append((start, cut))
    start = cut
  spans.append((start, n))
  return spans


class SentenceEnds:
  """``is_boundary`` for :func:`split_tokens`: a token whose text ends a sentence or a
  clause (``. ! ? ;``, trailing spaces ignored) or holds a line break. Each token id is
  decoded once (cached)."""

  def __init__(self, tok: Tokenizer):
    self.tok, self._cache = tok, {}

  def __call__(self, token: int) -> bool:
    hit = self._cache.get(token)
    if hit is None:
      text = self.tok.decode([int(token)])
      hit = self._cache[token] = "\n" in text or text.rstrip().endswith(_BOUNDARY_ENDS)
    return hit


def _split_long(tokens: Sequence[int], ref_len: int, tok: Tokenizer) -> list[tuple[str, list]]:
  pieces = [list(tokens[a:b]) for a, b in split_tokens(tokens, ref_len)]
  return [(tok.decode(p), p) for p in pieces]


def chunk_document(doc: Document, tok: Tokenizer, ref_len: int) -> list[Reference]:
  """Greedy sentence packing; every chunk re-encodes to at most ``ref_len`` tokens."""
  if doc.explicit:
    tokens = list(tok.encode(doc.text))
    if len(tokens) > ref_len:
      raise ValueError(
        f"{doc.source}: explicit reference {doc.id!r} has {len(tokens)} "
        f'tokens > ref_len={ref_len}; shorten it or drop "reference": true'
      )
    if not tokens:
      return []
    return [Reference(f"{doc.id}#0", doc.text, tuple(tokens))]
  pieces: list[tuple[str, list]] = []  # (text, tokens), each within ref_len
  cur_text, cur_tokens = "", []
  for sentence in _SENTENCE_END.split(doc.text.strip()):
    if not sentence:
      continue
    cand = f"{cur_text} {sentence}" if cur_text else sentence
    cand_tokens = list(tok.encode(cand))
    if len(cand_tokens) <= ref_len:
      cur_text, cur_tokens = cand, cand_tokens
      continue
    if cur_text:
      pieces.append((cur_text, cur_tokens))
    sent_tokens = list(tok.encode(sentence))
    if len(sent_tokens) <= ref_len:
      cur_text, cur_tokens = sentence, sent_tokens
    else:
      pieces.extend(_split_long(sent_tokens, ref_len, tok))
      cur_text, cur_tokens = "", []
  if cur_text:
    pieces.append((cur_text, cur_tokens))
  return [Reference(f"{doc.id}#{i}", text, tuple(t)) for i, (text, t) in enumerate(pieces) if t]


def piece_id(ref_id: str, i: int) -> str:
  """Id of piece ``i`` of a split reference: the first keeps ``ref_id``, then ``ref_id#i``."""
  return ref_id if i == 0 else f"{ref_id}#{i}"


def split_reference(
  ref_id: str,
  text: str,
  tok: Tokenizer,
  ref_len: int,
  *,
  tokens: Sequence[int] | None = None,
  ends: Callable[[int], bool] | None = None,
) -> list[Reference]:
  """One knowledge-base line -> references of at most ``ref_len`` tokens, never truncated.

  A text that fits is one reference with its own id and text. A longer one is cut by
  :func:`split_tokens` (at the last sentence end of each window, else hard) into pieces
  :func:`piece_id` ``(ref_id, i)``, each with its own tokens and their decoded text: the
  text that retrieval embeds and RAG shows is the one the memory encodes. ``tokens``:
  ``tok.encode(text)`` when already known; ``ends``: a shared :class:`SentenceEnds`.
  """
  tokens = list(tok.encode(text)) if tokens is None else [int(t) for t in tokens]
  if len(tokens) <= ref_len:
    return [Reference(ref_id, text, tuple(tokens))]
  spans = split_tokens(tokens, ref_len, ends or SentenceEnds(tok))
  return [
    Reference(piece_id(ref_id, i), tok.decode(tokens[a:b]), tuple(tokens[a:b]))
    for i, (a, b) in enumerate(spans)
  ]


def document_pieces(ids: Iterable[str]) -> dict[str, list[str]]:
  """Reference ids -> {document id: its reference ids in piece order}, the one mapping from
  a document (a QA ``gold_ref_id``, a ``delete`` argument) to what the bank holds.

  Every id maps to itself (first); ``X#i`` (i digits) is also a piece of ``X`` whether or
  not ``X`` is an id: the pieces of a split line (``X``, ``X#1``, …) and the chunks of a
  document file (``X#0``, ``X#1``, …, :func:`chunk_document`) both map from ``X``.
  """
  out: dict[str, list[tuple[int, str]]] = {}
  for i in ids:
    out.setdefault(i, []).append((-1, i))
    m = _PIECE_SUFFIX.match(i)
    if m:
      out.setdefault(m.group(1), []).append((int(m.group(2)), i))
  return {k: [i for _, i in sorted(v)] for k, v in out.items()}


def chunk_documents(docs: Iterable[Document], tok: Tokenizer, ref_len: int) -> list[Reference]:
  refs = []
  for d in docs:
    refs.extend(chunk_document(d, tok, ref_len))
  return refs


def load_references(
  path: str, tok: Tokenizer, ref_len: int, *, explicit: bool = False
) -> list[Reference]:
  """Reads and chunks a knowledge base; an empty one is an error (nothing to build)."""
  refs = chunk_documents(read_documents(path, explicit=explicit), tok, ref_len)
  if not refs:
    raise ValueError(f"{path}: the knowledge base is empty (no non-blank text)")
  return refs
