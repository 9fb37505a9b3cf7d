"""JSONL files in and out, with errors that name the file and line.

Formats (docs/data.md): references ``{"id", "text"}``, training text ``{"text"}``, QA
``{"question", "answer", "choices"?}`` (extra keys are kept).
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

REQUIRED = {
    "references": ("id", "text"),
    "train_text": ("text",),
    "qa": ("question", "answer"),
}


def read_jsonl(path: str, kind: str | None = None) -> list[dict]:
  """Reads a JSONL file; ``kind`` (a REQUIRED key) checks each record's fields and types."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: file not found (check data.user_files.* or run "
                            "prepare_data)")
  out = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: malformed JSON ({e.msg}); each line must be "
                         "one JSON object") from None
      if not isinstance(rec, dict):
        raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
      for key in REQUIRED.get(kind, ()):
        if not isinstance(rec.get(key), str) or (key != "answer" and not rec[key].strip()):
          raise ValueError(f"{path}:{lineno}: {kind} records need a non-empty string "
                           f"{key!r}; got keys {sorted(rec)}")
      if kind == "qa" and "choices" in rec:
        ch = rec["choices"]
        if not (isinstance(ch, list) and all(isinstance(c, str) for c in ch)
                and rec["answer"] in ch):
          raise ValueError(f"{path}:{lineno}: 'choices' must be a list of strings that "
                           "contains the answer")
      out.append(rec)
  if kind == "references":
    seen = {}
    for i, rec in enumerate(out):
      if rec["id"] in seen:
        raise ValueError(f"{path}: duplicate reference id {rec['id']!r} (records "
                         f"{seen[rec['id']] + 1} and {i + 1})")
      seen[rec["id"]] = i
  return out


def write_jsonl(path: str, records: Iterable[dict]) -> None:
  """Atomic write (tmp + rename) so a crash never leaves a half file that looks done."""
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    for rec in records:
      f.write(json.dumps(rec, ensure_ascii=False) + "\n")
  os.replace(tmp, path)


def texts(records: Sequence[dict]) -> list[str]:
  return [r["text"] for r in records]
