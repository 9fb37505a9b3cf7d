"""``python -m m3jax <command>``: a thin dispatcher; each command lives in m3jax/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under m3jax.commands exposing add_arguments(parser) and run(args).
COMMANDS = {
    "demo": "demo",
    "train": "train",
    "build-memory": "build_memory",
    "storage": "storage",
    "generate": "generate",
    "eval": "evaluate",
    "sweep": "sweep",
    "compile": "compile",
}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog="python -m m3jax", description=__doc__)
  sub = parser.add_subparsers(dest="command", required=True)
  if argv and argv[0] in COMMANDS:   # import only the command being run (fast start-up)
    names = [argv[0]]
  else:
    names = list(COMMANDS)
  modules = {}
  for name in names:
    try:
      modules[name] = importlib.import_module(f"m3jax.commands.{COMMANDS[name]}")
    except ModuleNotFoundError as e:
      if e.name != f"m3jax.commands.{COMMANDS[name]}":
        raise
      continue
    p = sub.add_parser(name, help=(modules[name].__doc__ or "").strip().splitlines()[0]
                       if modules[name].__doc__ else None)
    modules[name].add_arguments(p)
  args = parser.parse_args(argv)
  return int(modules[args.command].run(args) or 0)
