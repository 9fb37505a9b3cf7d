"""The curated public API (issue #14): every exported name resolves, `import m3jax` stays
cheap, and the README's Python snippets use only exported names."""

from __future__ import annotations

import ast
import importlib
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = [
  "m3jax",
  "m3jax.model",
  "m3jax.memory",
  "m3jax.data",
  "m3jax.train",
  "m3jax.inference",
  "m3jax.evaluate",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
  module = importlib.import_module(package)
  assert module.__all__, f"{package} exports nothing"
  for name in module.__all__:
    value = getattr(module, name)
    assert getattr(value, "__name__", name) == name, f"{package}.{name} is {value!r}"
  assert set(module.__all__) <= set(dir(module))
  with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
    module.not_a_name  # noqa: B018


def test_import_m3jax_does_not_import_jax():
  code = "import sys, m3jax; m3jax.__all__; print('jax' in sys.modules)"
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
  )
  assert out.stdout.strip() == "False", out.stderr


def _readme_snippets() -> list[str]:
  return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def _uses(tree: ast.AST) -> set[tuple[str, str]]:
  """(package, name) for `from m3jax[.pkg] import name` and `m3jax[.pkg].name` accesses."""
  uses: set[tuple[str, str]] = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("m3jax"):
      uses |= {(node.module, a.name) for a in node.names}
    elif isinstance(node, ast.Attribute):
      chain, inner = [node.attr], node.value
      while isinstance(inner, ast.Attribute):
        chain.append(inner.attr)
        inner = inner.value
      if isinstance(inner, ast.Name) and inner.id == "m3jax":
        parts = ["m3jax"] + chain[::-1]
        pkg = "m3jax" if f"m3jax.{parts[1]}" not in PACKAGES else f"m3jax.{parts[1]}"
        if pkg == "m3jax":
          uses.add((pkg, parts[1]))
        elif len(parts) > 2:
          uses.add((pkg, parts[2]))
  return uses


def test_readme_python_snippets_use_only_the_public_api():
  snippets = _readme_snippets()
  assert snippets, "README.md has no ```python snippet"
  for snippet in snippets:
    for package, name in _uses(ast.parse(snippet)):
      assert package in PACKAGES, f"README imports from {package}; use a package's exports"
      exported = importlib.import_module(package).__all__
      assert name in exported or f"{package}.{name}" in PACKAGES, (
        f"README uses {package}.{name}, which {package}.__all__ does not export"
      )


def test_the_snippet_checker_catches_a_private_import():
  bad = ast.parse("from m3jax.memory.store import MemoryBank\nimport m3jax\nm3jax.axes.BATCH\n")
  assert _uses(bad) == {("m3jax.memory.store", "MemoryBank"), ("m3jax", "axes")}
  with pytest.raises(AssertionError):
    for package, name in _uses(bad):
      assert package in PACKAGES and name in importlib.import_module(package).__all__
