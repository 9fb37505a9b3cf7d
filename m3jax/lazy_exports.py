"""Lazy re-exports for package ``__init__`` files (PEP 562).

``import m3jax`` stays cheap (no JAX import) and a package's ``__init__`` adds no runtime
import edge: a name's module is imported on first access, then cached on the package. The
module paths are absolute string constants so tools/import_graph.py (and BUILD) see them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping


def lazy_exports(
  package: str, names: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
  """``(__getattr__, __dir__, __all__)`` for ``package`` exporting ``{name: module}``.

  Sub-modules are reachable as attributes too (``m3jax.train.train`` after ``import m3jax``).
  """

  def __getattr__(name: str) -> object:
    if name in names:
      value = getattr(importlib.import_module(names[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}"):
      value = importlib.import_module(f"{package}.{name}")  # `m3jax.train` without importing it
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    setattr(sys.modules[package], name, value)
    return value

  def __dir__() -> list[str]:
    return sorted(set(vars(sys.modules[package])) | set(names))

  return __getattr__, __dir__, sorted(names)
