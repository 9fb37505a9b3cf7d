"""Workdir paths that may live on a bucket (``gs://…``) or on local disk.

On a pod every host must see the same workdir, so it is usually a GCS bucket. Remote
paths go through ``etils.epath`` (which orbax uses for checkpoints too) and are never
turned into local absolute paths; local paths behave exactly as with ``os``. Object
stores cannot append, so :func:`append_text` rewrites a remote file whole (the metrics
file is small and written every ``log_every`` steps by process 0 only).
"""

from __future__ import annotations

import os

from etils import epath


def is_remote(path: str) -> bool:
  return "://" in str(path)


def absolute(path: str) -> str:
  """``gs://b/run`` unchanged; a local path made absolute."""
  return str(path) if is_remote(path) else os.path.abspath(path)


def makedirs(path: str) -> None:
  if is_remote(path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def exists(path: str) -> bool:
  return epath.Path(path).exists() if is_remote(path) else os.path.exists(path)


def read_text(path: str) -> str:
  if is_remote(path):
    return epath.Path(path).read_text()
  with open(path) as f:
    return f.read()


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str, data: bytes) -> None:
  if is_remote(path):
    epath.Path(path).write_bytes(data)
  else:
    with open(path, "wb") as f:
      f.write(data)


def append_text(path: str, text: str) -> None:
  if is_remote(path):
    write_text(path, (read_text(path) if exists(path) else "") + text)
  else:
    with open(path, "a") as f:
      f.write(text)
