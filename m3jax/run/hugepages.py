"""Transparent huge pages for XLA:CPU's per-step buffers: the CLI re-executes itself once.

XLA:CPU allocates each call's temporaries as one block (128 MB for `small`'s stage-2 step)
and frees it when the call ends. glibc serves a block that large with ``mmap`` and returns
it with ``munmap``, so every step faults the whole block in again, 4 KiB at a time: 13
million minor page faults in 400 demo training steps. glibc's tunable
``glibc.malloc.hugetlb=1`` (glibc >= 2.35) asks for transparent huge pages on such blocks,
2 MiB a fault; nothing computed changes. Measured on 2 cores (docs/design.md, "Session
33"; ``experiments/bench_hugepages.py``): those steps' faults 13.2M -> 0.36M, and
``make demo`` 17 min 44 s -> 16 min 26 s, the same accuracies.

A tunable is read when the process starts, so ``python -m m3jax`` (and the ``m3jax``
script) re-executes itself with it, in the same process id, before importing jax.
The ``experiments/bench_*.py`` scripts do the same, so they time what the CLI runs.
``make`` exports it, so its targets never re-execute. ``M3JAX_HUGEPAGES=0`` turns it off.
Colab kernels and other long-lived interpreters start without it; set ``GLIBC_TUNABLES``
before the interpreter starts to get it there.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Mapping

TUNABLE = "glibc.malloc.hugetlb"
SETTING = f"{TUNABLE}=1"
OPT_OUT = "M3JAX_HUGEPAGES"


def env_with_hugepages(env: Mapping[str, str]) -> dict[str, str] | None:
  """``env`` with the tunable added to ``GLIBC_TUNABLES``; None when nothing is to change.

  Nothing changes when the tunable is already set (to any value: the user's choice wins)
  or when ``M3JAX_HUGEPAGES=0``. Other tunables in ``GLIBC_TUNABLES`` are kept.
  """
  if env.get(OPT_OUT, "1") == "0":
    return None
  current = env.get("GLIBC_TUNABLES", "")
  names = [item.split("=", 1)[0] for item in current.split(":") if item]
  if TUNABLE in names:
    return None
  new = dict(env)
  new["GLIBC_TUNABLES"] = f"{current}:{SETTING}" if current else SETTING
  return new


def glibc_version() -> tuple[int, ...] | None:
  """This interpreter's glibc version on Linux, e.g. ``(2, 36)`` (empty when unreadable);
  None elsewhere (musl, macOS, Windows): there is no tunable to set."""
  if sys.platform != "linux":
    return None
  lib, version = platform.libc_ver()
  if lib != "glibc":
    return None
  return tuple(int(x) for x in version.split(".")[:2] if x.isdigit())


def reexec_with_hugepages() -> None:
  """Replace this process by the same command line with the tunable set (glibc Linux only).

  Returns only when nothing is to change: not glibc, no known interpreter, already set, or
  opted out.
  """
  if not sys.executable or glibc_version() is None:
    return
  env = env_with_hugepages(os.environ)
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, list(sys.orig_argv), env)
