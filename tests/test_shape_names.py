"""Array parameters of the public API of m3jax/model and m3jax/memory carry their shape.

The convention (docs/architecture.md, "Shapes in names"): an array's name ends in
``_`` + its axes joined by ``x`` (``x_BxTxE``, ``lengths_B``), each axis a letter of
``GLOSSARY`` with an optional lower-case qualifier (``Tc``: T within a chunk), two
letters for a merged axis (``RM``) or a fixed size (``2``, ``1``). Read with ``ast``
(no jax import): every public function and method (name without a leading underscore,
plus ``__init__``/``__call__``) of a public class or of the module is checked for

1. a parameter annotated as an array (``jax.Array``, ``jnp.ndarray``, ``np.ndarray``,
   ``Array``, ``ArrayLike``) has a shape suffix;
2. a parameter with a shape suffix spells it with glossary letters only;
3. a parameter named like an array with no suffix (``x``, ``mask``, ``keys``, …).

Return annotations are not required (nor checked). ``ALLOWED`` lists the exceptions,
each with why.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("m3jax/model", "m3jax/memory")

GLOSSARY = {
  "B": "batch",
  "T": "query / context length (Tc: within a chunk, Tp: padded)",
  "S": "key length (context and memory keys); in memory.quantize: PQ subspaces",
  "E": "embedding width (the model's, or a retrieval embedding's)",
  "F": "MLP width, or a feature axis",
  "V": "vocabulary",
  "H": "query heads",
  "K": "KV heads",
  "G": "query heads per KV head",
  "D": "head dim (or a vector's width)",
  "L": "layers (memory layers where a bank stores them)",
  "C": "chunks; in memory.quantize: PQ centroids",
  "R": "references per chunk",
  "M": "memory tokens kept per reference",
  "N": "references, rows or vectors (a reference's tokens where the batch is references)",
  "Q": "queries",
  "W": "64-bit words (memory.overlap); a PQ subspace's width (memory.quantize)",
  "P": "training points (memory.quantize)",
  "U": "unique tokens (memory.overlap)",
  "X": "any leading axes: the function is rank-polymorphic there",
}

ARRAY_TYPES = {
  "jax.Array",
  "jnp.ndarray",
  "np.ndarray",
  "Array",
  "ArrayLike",
  "jax.typing.ArrayLike",
}
# Names that say "an array" but not its shape; public parameters so named need a suffix.
ARRAY_WORDS = {
  "x",
  "tokens",
  "positions",
  "mask",
  "keys",
  "values",
  "token_idx",
  "hashes",
  "rows",
  "codes",
  "scores",
  "logits",
  "embeddings",
}

# (file, qualified function name, parameter) -> why it has no shape suffix.
ALLOWED = {
  ("m3jax/memory/quantize.py", "relative_mse", "x"): (
    "rank-polymorphic: the relative error of any array and its reconstruction"
  ),
  ("m3jax/memory/quantize.py", "relative_mse", "mask"): "broadcast against x, any rank",
  ("m3jax/memory/store.py", "MemoryBank.dequantize", "keys"): (
    "the stored form, [..., L, K, M, D] bf16 or [..., L, K, M, S] PQ codes: no one suffix"
  ),
  ("m3jax/memory/store.py", "MemoryBank.dequantize", "values"): "as keys",
  ("m3jax/memory/overlay.py", "BankOverlay.dequantize", "keys"): "as MemoryBank.dequantize",
  ("m3jax/memory/overlay.py", "BankOverlay.dequantize", "values"): "as MemoryBank.dequantize",
  ("m3jax/memory/live_bank.py", "LiveBank.dequantize", "keys"): "as MemoryBank.dequantize",
  ("m3jax/memory/live_bank.py", "LiveBank.dequantize", "values"): "as MemoryBank.dequantize",
}

_AXIS = re.compile(r"^(?:([A-Z]{1,2})[a-z]*|\d+)$")


def _suffix(name: str) -> str | None:
  """The shape suffix of ``name`` (the part after its last underscore), if it has one."""
  head, _, tail = name.rpartition("_")
  return tail if head and any(ch.isupper() for ch in tail) else None


def suffix_errors(suffix: str) -> list[str]:
  errors = []
  for axis in suffix.split("x"):
    m = _AXIS.match(axis)
    if not m:
      errors.append(f"axis {axis!r} is not a glossary letter (+ lower-case qualifier) or a size")
    elif m.group(1):
      errors += [
        f"axis letter {c!r} is not in the glossary" for c in m.group(1) if c not in GLOSSARY
      ]
  return errors


def _annotation_names(ann: ast.expr | None) -> set[str]:
  if ann is None:
    return set()
  if isinstance(ann, ast.Constant) and isinstance(ann.value, str):  # a quoted annotation
    ann = ast.parse(ann.value, mode="eval").body
  return {ast.unparse(n) for n in ast.walk(ann) if isinstance(n, (ast.Name, ast.Attribute))}


def _public(name: str) -> bool:
  return not name.startswith("_") or name in ("__init__", "__call__")


def public_functions(tree: ast.Module):
  """(qualified name, def) of every public function and public method of a public class."""

  def walk(body, prefix):
    for node in body:
      if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
        yield from walk(node.body, f"{prefix}{node.name}.")
      elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(node.name):
        yield prefix + node.name, node

  yield from walk(tree.body, "")


def violations(path: str, source: str) -> list[str]:
  out = []
  for qualname, fn in public_functions(ast.parse(source)):
    a = fn.args
    for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
      if arg.arg in ("self", "cls") or (path, qualname, arg.arg) in ALLOWED:
        continue
      where = f"{path}:{fn.lineno} {qualname}({arg.arg})"
      suffix = _suffix(arg.arg)
      ann = _annotation_names(arg.annotation)
      if suffix is not None:
        out += [f"{where}: {e}" for e in suffix_errors(suffix)]
      elif ann & ARRAY_TYPES:
        out.append(f"{where}: annotated as an array, but the name has no shape suffix")
      elif arg.arg in ARRAY_WORDS and (not ann or ann & ARRAY_TYPES):
        out.append(f"{where}: an array named without its shape suffix")
  return out


def _sources():
  for package in PACKAGES:
    for file in sorted((ROOT / package).glob("*.py")):
      yield f"{package}/{file.name}", file.read_text()


def test_public_array_parameters_of_model_and_memory_carry_their_shape():
  found = [v for path, source in _sources() for v in violations(path, source)]
  assert not found, "shape-suffix convention (docs/architecture.md):\n" + "\n".join(found)


def test_every_allowlisted_parameter_still_exists():
  """A stale exception would silently allow a new parameter of the same name."""
  params = {
    (path, qualname, arg.arg)
    for path, source in _sources()
    for qualname, fn in public_functions(ast.parse(source))
    for arg in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
  }
  assert not set(ALLOWED) - params


@pytest.mark.parametrize(
  "source, expected",
  [
    ("def f(x_BxTxE, lengths_B, n: int): ...", []),
    ("def f(q_BxKxGxCxTcxRxM, pair_2xLxD, b_Bx1, m_BxKxGxTxRM): ...", []),
    ("def f(h: jax.Array): ...", ["annotated as an array"]),
    ("def f(h: 'np.ndarray | None' = None): ...", ["annotated as an array"]),
    ("def f(mask): ...", ["named without its shape suffix"]),
    ("def f(x_BxZ): ...", ["'Z' is not in the glossary"]),
    ("def f(x_Bxt): ...", ["'t' is not a glossary letter"]),
    ("class A:\n  def g(self, keys: np.ndarray): ...", ["annotated as an array"]),
    ("def _private(mask): ...\nclass _P:\n  def g(self, mask): ...", []),
    ("def f(k: int, mask: bool, texts: Sequence[str]): ...", []),
  ],
)
def test_the_checker_flags_what_the_convention_forbids(source, expected):
  found = violations("example.py", source)
  assert len(found) == len(expected), found
  for v, e in zip(found, expected):
    assert e in v
