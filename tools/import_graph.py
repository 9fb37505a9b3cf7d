"""The import graph of the repository's own packages, read from the source with `ast`.

One parse serves three users: tests/test_import_graph.py (no cycle between files or packages),
tools/gen_build.py (BUILD deps are the real imports) and `python tools/import_graph.py`, which
prints the cycles it finds. Every import counts, including those inside functions: a lazy
import still ties two modules together.

Nodes are dotted module names (`m3jax.data.prepare`; a package's `__init__.py` is the package's
own name). A "unit" is what BUILD makes one target of: a sub-package folder (`m3jax.data`), or a
module directly under a top-level package (`m3jax.axes`, `m3jax.cli`), because `m3jax/` itself
holds both the lowest layer (axes, sharding) and the highest (cli, demo).
"""

from __future__ import annotations

import ast
import pathlib
import sys
from collections.abc import Iterable

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOP_PACKAGES = ("m3jax", "configs")

# Cycles that still exist and who breaks them (issue #14). tests/test_import_graph.py and
# tests/test_build_file.py fail on any other cycle, AND on an entry here that no longer
# matches a cycle exactly: the lead deletes (or narrows) an entry when the branch that
# breaks it is merged, until the dict is empty. Keys: the sorted members of one strongly
# connected component of the file graph or of the unit graph (see `unit_of`).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def source_files(
  root: pathlib.Path = ROOT, tops: Iterable[str] = TOP_PACKAGES
) -> dict[str, pathlib.Path]:
  """Module name -> file, for every .py file under the given top-level packages."""
  return {module_name(p, root): p for top in tops for p in sorted((root / top).rglob("*.py"))}


def _imported_names(tree: ast.AST, this: str, is_package: bool) -> set[str]:
  """Dotted names an AST imports, relative imports resolved, `from a import b` as `a.b` and `a`."""
  names: set[str] = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = this.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module or ""
      names.add(module)
      names.update(f"{module}.{a.name}" for a in node.names)
    elif _is_lazy_exports_call(node):
      # m3jax.lazy_exports.lazy_exports(__name__, {"Name": "m3jax.pkg.module", ...})
      names.update(
        v.value
        for v in node.args[1].values
        if isinstance(v, ast.Constant) and isinstance(v.value, str)
      )
    elif _is_import_module_call(node):
      # importlib.import_module("a.b") or (f"a.b.{name}"): the constant prefix is a dependency
      # (cli.py dispatches to m3jax.commands this way).
      arg = node.args[0]
      if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        names.add(arg.value)
      elif (
        isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant)
      ):
        names.add(str(arg.values[0].value).rstrip("."))
  return names


def _is_lazy_exports_call(node: ast.AST) -> bool:
  return (
    isinstance(node, ast.Call)
    and isinstance(node.func, ast.Name)
    and node.func.id == "lazy_exports"
    and len(node.args) == 2
    and isinstance(node.args[1], ast.Dict)
  )


def _is_import_module_call(node: ast.AST) -> bool:
  if not isinstance(node, ast.Call) or not node.args:
    return False
  func = node.func
  return (
    isinstance(func, ast.Attribute)
    and func.attr == "import_module"
    and isinstance(func.value, ast.Name)
    and func.value.id == "importlib"
  )


def resolve(name: str, known: set[str]) -> str | None:
  """The longest prefix of `name` that is a known module (`a.b.func` -> `a.b`), else None."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    cand = ".".join(parts[:i])
    if cand in known:
      return cand
  return None


def module_graph(
  root: pathlib.Path = ROOT, tops: Iterable[str] = TOP_PACKAGES
) -> dict[str, set[str]]:
  """Module -> the set of known modules it imports (itself excluded)."""
  files = source_files(root, tops)
  known = set(files)
  graph: dict[str, set[str]] = {}
  for mod, path in files.items():
    tree = ast.parse(path.read_text(), filename=str(path))
    targets = {resolve(n, known) for n in _imported_names(tree, mod, path.name == "__init__.py")}
    # `from m3jax.data import prepare` names both `m3jax.data` and `m3jax.data.prepare`: keep the
    # package only when nothing below it was named (a package is not imported for its children).
    named = {t for t in targets if t is not None}
    graph[mod] = {t for t in named if t != mod and not any(o.startswith(t + ".") for o in named)}
  return graph


def file_imports(
  path: pathlib.Path, root: pathlib.Path = ROOT, tops: Iterable[str] = TOP_PACKAGES
) -> set[str]:
  """Known modules that one file outside the packages (a test, a tool) imports."""
  known = set(source_files(root, tops))
  tree = ast.parse(path.read_text(), filename=str(path))
  found = {resolve(n, known) for n in _imported_names(tree, module_name(path, root), False)}
  return {f for f in found if f is not None}


def unit_of(module: str) -> str:
  """The BUILD unit holding a module: its sub-package (`m3jax.data`), or itself when it sits
  directly in a top-level package (`m3jax.axes`) or is one (`m3jax`)."""
  return ".".join(module.split(".")[:2])


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
  """Collapse the module graph onto units (see module docstring)."""
  out: dict[str, set[str]] = {}
  for mod, deps in graph.items():
    u = unit_of(mod)
    out.setdefault(u, set()).update(unit_of(d) for d in deps)
  for u, deps in out.items():
    deps.discard(u)
  return out


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's SCCs with more than one node, each sorted; iterative (no recursion limit)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  on_stack: set[str] = set()
  stack: list[str] = []
  sccs: list[list[str]] = []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph.get(start, ()))))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, it = work[-1]
      advanced = False
      for nxt in it:
        if nxt not in index:
          index[nxt] = low[nxt] = counter
          counter += 1
          stack.append(nxt)
          on_stack.add(nxt)
          work.append((nxt, iter(sorted(graph.get(nxt, ())))))
          advanced = True
          break
        if nxt in on_stack:
          low[node] = min(low[node], index[nxt])
      if advanced:
        continue
      work.pop()
      if work:
        low[work[-1][0]] = min(low[work[-1][0]], low[node])
      if low[node] == index[node]:
        comp = []
        while True:
          w = stack.pop()
          on_stack.discard(w)
          comp.append(w)
          if w == node:
            break
        if len(comp) > 1:
          sccs.append(sorted(comp))
  return sorted(sccs)


def cycle_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
  """Every edge a -> b with a and b in the same strongly connected component."""
  comp_of = {n: i for i, comp in enumerate(strongly_connected(graph)) for n in comp}
  return {
    (a, b)
    for a, deps in graph.items()
    for b in deps
    if a in comp_of and comp_of.get(b) == comp_of[a]
  }


def main() -> int:
  graph = {m: d for m, d in module_graph().items() if m.startswith("m3jax")}
  status = 0
  for title, g in (("file", graph), ("unit", unit_graph(graph))):
    sccs = strongly_connected(g)
    print(f"{title} cycles: {len(sccs)}")
    for comp in sccs:
      status = 1
      print("  " + " ".join(comp))
      for a, b in sorted(cycle_edges(g)):
        if a in comp:
          print(f"    {a} -> {b}")
  return status


if __name__ == "__main__":
  sys.exit(main())
