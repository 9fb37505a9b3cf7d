"""BUILD (Starlark, i.e. Python syntax) agrees with the tree: every module and test is listed."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _rules():
  tree = ast.parse((ROOT / "BUILD").read_text())
  rules = []
  for node in tree.body:
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
      call = node.value
      if getattr(call.func, "id", None) in ("py_library", "py_test"):
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        rules.append((call.func.id, kwargs))
  return rules


def test_build_lists_every_module_and_test_and_nothing_missing():
  rules = _rules()
  names = {kw["name"] for _, kw in rules}
  listed_libs = {s for kind, kw in rules if kind == "py_library" for s in kw["srcs"]}
  listed_tests = {s for kind, kw in rules if kind == "py_test" for s in kw["srcs"]}
  modules = {str(p.relative_to(ROOT)) for top in ("m3jax", "configs")
             for p in (ROOT / top).rglob("*.py")}
  tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
  fix = " Run `python tools/gen_build.py` to regenerate BUILD."
  assert not modules - listed_libs, f"modules missing from BUILD: {sorted(modules - listed_libs)}.{fix}"
  assert not tests - listed_tests, f"tests missing from BUILD: {sorted(tests - listed_tests)}.{fix}"
  for kind, kw in rules:
    for src in kw["srcs"] + kw.get("data", []):
      assert (ROOT / src).exists(), f"BUILD lists {src}, which does not exist.{fix}"
    for dep in kw.get("deps", []):
      assert dep.lstrip(":") in names, f"{kw['name']} depends on unknown target {dep}.{fix}"


def test_every_package_folder_has_one_library():
  rules = _rules()
  libs = [kw for kind, kw in rules if kind == "py_library"]
  pkg_dirs = {str(p.parent.relative_to(ROOT)) for top in ("m3jax", "configs")
              for p in (ROOT / top).rglob("__init__.py")}
  lib_dirs = [str(pathlib.PurePath(kw["srcs"][0]).parent) for kw in libs]
  assert sorted(lib_dirs) == sorted(pkg_dirs)
  for kw in libs:
    assert len({str(pathlib.PurePath(s).parent) for s in kw["srcs"]}) == 1
