"""BUILD (Starlark, i.e. Python syntax) is the import graph: current, complete and acyclic."""

from __future__ import annotations

import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import gen_build  # noqa: E402
import import_graph  # noqa: E402

FIX = " Run `python tools/gen_build.py` to regenerate BUILD."


def _rules(text: str):
  rules = []
  for node in ast.parse(text).body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
      call = node.value
      if getattr(call.func, "id", None) in ("py_library", "py_test"):
        rules.append((call.func.id, {k.arg: ast.literal_eval(k.value) for k in call.keywords}))
  return rules


def test_build_is_generated_from_the_current_imports():
  assert (ROOT / "BUILD").read_text() == gen_build.render(), "BUILD is stale." + FIX


def test_build_lists_every_module_and_test_and_nothing_missing():
  rules = _rules((ROOT / "BUILD").read_text())
  names = {kw["name"] for _, kw in rules}
  listed_libs = {s for kind, kw in rules if kind == "py_library" for s in kw["srcs"]}
  listed_tests = {s for kind, kw in rules if kind == "py_test" for s in kw["srcs"]}
  modules = {
    str(p.relative_to(ROOT)) for top in ("m3jax", "configs") for p in (ROOT / top).rglob("*.py")
  }
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
  assert not modules - listed_libs, (
    f"modules missing from BUILD: {sorted(modules - listed_libs)}.{FIX}"
  )
  assert not tests - listed_tests, f"tests missing from BUILD: {sorted(tests - listed_tests)}.{FIX}"
  for _, kw in rules:
    for src in kw["srcs"] + kw.get("data", []):
      assert (ROOT / src).exists(), f"BUILD lists {src}, which does not exist.{FIX}"
    for dep in kw["deps"]:
      assert dep.lstrip(":") in names, f"{kw['name']} depends on unknown target {dep}.{FIX}"


def test_library_targets_form_no_cycle():
  """Bazel rejects a dependency cycle between targets; so do we (minus the known ones)."""
  libs = {
    kw["name"]: {d.lstrip(":") for d in kw["deps"]}
    for kind, kw in _rules((ROOT / "BUILD").read_text())
    if kind == "py_library"
  }
  known = {
    tuple(sorted(gen_build.target_name(u) for u in cycle)) for cycle in import_graph.KNOWN_CYCLES
  }
  cycles = [c for c in import_graph.strongly_connected(libs) if tuple(c) not in known]
  assert not cycles, f"BUILD targets form cycle(s): {cycles}. Import only downward."


def test_a_cycle_in_build_is_caught():
  text = (
    'py_library(name = "a", srcs = [], deps = [":b"])\n'
    'py_library(name = "b", srcs = [], deps = [":a"])\n'
  )
  libs = {kw["name"]: {d.lstrip(":") for d in kw["deps"]} for _, kw in _rules(text)}
  assert import_graph.strongly_connected(libs) == [["a", "b"]]


def test_one_library_per_package_folder_and_per_top_level_module():
  libs = [kw for kind, kw in _rules((ROOT / "BUILD").read_text()) if kind == "py_library"]
  sub_packages = {
    str(p.parent.relative_to(ROOT))
    for top in ("m3jax", "configs")
    for p in (ROOT / top).glob("*/__init__.py")
  }
  lib_dirs = [str(pathlib.PurePath(kw["srcs"][0]).parent) for kw in libs]
  for d in sub_packages:
    assert lib_dirs.count(d) == 1, f"{d} should be exactly one py_library.{FIX}"
  for kw in libs:
    assert len({str(pathlib.PurePath(s).parent) for s in kw["srcs"]}) == 1
    if str(pathlib.PurePath(kw["srcs"][0]).parent) not in sub_packages:
      assert len(kw["srcs"]) == 1, f"{kw['name']}: a top-level module is its own target"
