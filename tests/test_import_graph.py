"""No import cycle between files or packages under m3jax/ (issue #14).

The graph is read from the source with `ast` (tools/import_graph.py), imports inside
functions included. Cycles another branch is breaking are listed in
`import_graph.KNOWN_CYCLES`; an entry that no longer matches fails too, so the list shrinks
to empty as those branches land.
"""

from __future__ import annotations

import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import import_graph  # noqa: E402


def _graphs():
  files = {m: d for m, d in import_graph.module_graph().items() if m.startswith("m3jax")}
  return {"file": files, "package": import_graph.unit_graph(files)}


def _describe(graph, comp):
  edges = sorted((a, b) for a, b in import_graph.cycle_edges(graph) if a in comp)
  return "{" + ", ".join(comp) + "} via " + "; ".join(f"{a} -> {b}" for a, b in edges)


@pytest.mark.parametrize("level", ["file", "package"])
def test_no_import_cycle_beyond_the_known_ones(level):
  graph = _graphs()[level]
  new = [
    c for c in import_graph.strongly_connected(graph) if tuple(c) not in import_graph.KNOWN_CYCLES
  ]
  assert not new, (
    f"import cycle(s) at {level} level: "
    + " | ".join(_describe(graph, c) for c in new)
    + ". Import only downward (see pyproject.toml [tool.importlinter])."
  )


def test_known_cycles_are_still_real():
  graphs = _graphs()
  present = {tuple(c) for g in graphs.values() for c in import_graph.strongly_connected(g)}
  stale = sorted(set(import_graph.KNOWN_CYCLES) - present)
  assert not stale, (
    f"cycles fixed or changed: {stale}; delete or update their entries in "
    "tools/import_graph.py KNOWN_CYCLES"
  )


def test_cycle_finder_finds_a_planted_cycle_and_ignores_a_dag(tmp_path):
  """The checker itself: a 3-file cycle through a function-level and a relative import."""
  pkg = tmp_path / "toy"
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("")
  (pkg / "a.py").write_text("from toy import b\n")
  (pkg / "b.py").write_text("def f():\n  from toy.sub import c\n")
  (pkg / "sub" / "c.py").write_text("from ..a import x\n")
  (pkg / "d.py").write_text("import toy.a\n")
  graph = import_graph.module_graph(tmp_path, ("toy",))
  assert graph["toy.sub.c"] == {"toy.a"}
  assert import_graph.strongly_connected(graph) == [["toy.a", "toy.b", "toy.sub.c"]]
  assert import_graph.strongly_connected(import_graph.unit_graph(graph)) == [
    ["toy.a", "toy.b", "toy.sub"]
  ]
  (pkg / "sub" / "c.py").write_text("x = 1\n")
  assert import_graph.strongly_connected(import_graph.module_graph(tmp_path, ("toy",))) == []
