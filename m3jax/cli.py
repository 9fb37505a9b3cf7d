"""``python -m m3jax <command>``: a thin dispatcher; each command lives in m3jax/commands/.

Errors (a bad config value, a missing file, a refused resume) print as one line without
a traceback and exit with status 2; ``--debug`` (anywhere on the line) shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command name -> module under m3jax.commands exposing add_arguments(parser) and run(args).
COMMANDS = {
  "demo": "demo",
  "prepare": "prepare",
  "train": "train",
  "build-memory": "build_memory",
  "storage": "storage",
  "generate": "generate",
  "eval": "evaluate",
  "sweep": "sweep",
  "compile": "compile",
  "reproduce": "reproduce",
}
_OVERRIDE = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(other args, ``--config.a.b=v`` overrides); ``--config.a.b v`` is joined with ``=``."""
  rest, overrides, i = [], [], 0
  while i < len(argv):
    a = argv[i]
    if a.startswith(_OVERRIDE):
      if "=" not in a and i + 1 < len(argv):
        a, i = f"{a}={argv[i + 1]}", i + 1
      overrides.append(a)
    else:
      rest.append(a)
    i += 1
  return rest, overrides


def _summary(module) -> str | None:
  doc = (module.__doc__ or "").strip()
  return doc.splitlines()[0] if doc else None


def main(argv=None) -> int:
  if argv is None:  # run as a program: huge pages for XLA:CPU's buffers (run/hugepages.py)
    from m3jax.run.hugepages import reexec_with_hugepages

    reexec_with_hugepages()
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  argv = [a for a in argv if a != "--debug"]
  argv, overrides = split_overrides(argv)
  parser = argparse.ArgumentParser(
    prog="python -m m3jax",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
  sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
  names = [argv[0]] if argv and argv[0] in COMMANDS else list(COMMANDS)  # fast start-up
  modules = {}
  for name in names:
    modules[name] = importlib.import_module(f"m3jax.commands.{COMMANDS[name]}")
    p = sub.add_parser(
      name,
      help=_summary(modules[name]),
      description=modules[name].__doc__,
      formatter_class=_HelpFormatter,
    )
    modules[name].add_arguments(p)
  args = parser.parse_args(argv)
  args.config_overrides = overrides
  args.debug = debug
  from m3jax.train.preempted import PREEMPTED_EXIT, TrainingPreempted

  try:
    return int(modules[args.command].run(args) or 0)
  except TrainingPreempted as e:
    print(f"m3jax {args.command}: {e}", file=sys.stderr)
    return PREEMPTED_EXIT
  except (ValueError, KeyError, FileNotFoundError, FileExistsError, OSError) as e:
    if debug:
      raise
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    print(f"m3jax {args.command}: error: {msg} (--debug shows the traceback)", file=sys.stderr)
    return 2


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
  """Shows each flag's default and keeps the command's docstring as written."""
