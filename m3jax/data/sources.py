"""JSONL files in and out, with errors that name the file and line.

Formats (docs/data.md): references ``{"id", "text"}``, training text ``{"text"}``, QA
``{"question", "answer", "choices"?}`` (extra keys are kept).
"""

from __future__ import annotations

import json
import os
from typing import Collection, Iterable, Sequence

REQUIRED = {
  "references": ("id", "text"),
  "train_text": ("text",),
  "qa": ("question", "answer"),
}


def read_jsonl(
  path: str, kind: str | None = None, *, ref_ids: Collection[str] | None = None
) -> list[dict]:
  """Reads a JSONL file; ``kind`` (a REQUIRED key) checks each record's fields and types.

  QA records are checked further (each a one-line error naming file and line): choices
  must be distinct (after squeezing whitespace; a repeated answer would inflate multiple
  choice) and contain the answer; with ``ref_ids``, a ``gold_ref_id`` must be one of them.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: file not found (check data.user_files.* or run prepare_data)")
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(
          f"{path}:{lineno}: malformed JSON ({e.msg}); each line must be one JSON object"
        ) from None
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
      for key in REQUIRED.get(kind, ()):
        if not isinstance(rec.get(key), str) or (key != "answer" and not rec[key].strip()):
          raise ValueError(
            f"{path}:{lineno}: {kind} records need a non-empty string "
            f"{key!r}; got keys {sorted(rec)}"
          )
      if kind == "qa":
        _check_qa(rec, f"{path}:{lineno}", ref_ids)
      out.append(rec)
  if kind == "references":
    seen = {}
    for i, rec in enumerate(out):
      if rec["id"] in seen:
        raise ValueError(
          f"{path}: duplicate reference id {rec['id']!r} (records "
          f"{seen[rec['id']] + 1} and {i + 1})"
        )
      seen[rec["id"]] = i
  return out


def _check_qa(rec: dict, where: str, ref_ids: Collection[str] | None) -> None:
  if "choices" in rec:
    ch = rec["choices"]
    if not (isinstance(ch, list) and all(isinstance(c, str) for c in ch)):
      raise ValueError(f"{where}: 'choices' must be a list of strings")
    if rec["answer"] not in ch:
      raise ValueError(
        f"{where}: the answer {rec['answer']!r} is not among the choices {ch}; add it to 'choices'"
      )
    squeezed = [" ".join(c.split()) for c in ch]
    dup = sorted({c for c in squeezed if squeezed.count(c) > 1})
    if dup:
      raise ValueError(f"{where}: duplicate choices {dup}; each choice must appear once")
  gold = rec.get("gold_ref_id")
  if ref_ids is not None and gold is not None and gold not in ref_ids:
    raise ValueError(
      f"{where}: gold_ref_id {gold!r} is not a reference id of the knowledge "
      "base; fix the id or drop the field"
    )


def write_jsonl(path: str, records: Iterable[dict]) -> None:
  """Atomic write (tmp + rename) so a crash never leaves a half file that looks done."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for rec in records:
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def texts(records: Sequence[dict]) -> list[str]:
  return [r["text"] for r in records]
