"""Flags and config resolution shared by the commands (``--config``, ``--workdir``).

A command's config is, in order: ``--config path.py:variant`` when given, else the
workdir's recorded ``config.json`` (``train`` writes it), else the command's default
spec; then the ``--config.a.b=v`` overrides (collected by ``m3jax.cli``); then, for a
command that builds a run (not one that loads a trained model), the ``*_fit`` fields
applied to the knowledge base (``m3jax.run.knowledge_fit``: ``ref_len``, smeared keys).
"""

from __future__ import annotations

import argparse

OVERRIDES_HELP = (
  "Any config field can be overridden with --config.KEY=VALUE, e.g. "
  "--config.model.num_layers=8, --config.train.stages.continual.steps=100 "
  "(stages by name), --config.train.total_steps=50 (rescales every stage)."
)


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
  parser.add_argument(
    "--config",
    default=None,
    help="config spec path.py:variant (a get_config(variant) file). Default: the "
    f"--workdir's recorded config.json when there is one, else {default}. " + OVERRIDES_HELP,
  )
  parser.set_defaults(default_config=default, config_overrides=[])


def add_bank_arguments(parser: argparse.ArgumentParser, *, bank: bool = True) -> None:
  """``--bank`` (an existing bank to use) and ``--allow-stale-bank``, for the commands that
  open a trained workdir's bank."""
  if bank:
    parser.add_argument(
      "--bank",
      default=None,
      help="an existing bank (directory or TensorStore URL); default: the "
      "workdir's bank of its last checkpoint, built when missing",
    )
  parser.add_argument(
    "--allow-stale-bank",
    action="store_true",
    help="use a bank built with other weights or another tokenizer "
    "(its memories are stale; normally refused)",
  )


def config_from_args(args, *, workdir: str | None = None, fixed_model: bool = False):
  """The locked config of this command (see the module doc).

  ``fixed_model``: the command loads a trained workdir, so an override (or a --config)
  that changes the model is an error.
  """
  from m3jax.run.config import load_config, with_serving_defaults
  from m3jax.train import workdir as run_workdir

  overrides = list(getattr(args, "config_overrides", []) or [])
  saved = run_workdir.saved_config(workdir) if workdir else None
  if args.config:
    config = load_config(args.config, overrides)
  elif saved is not None:
    config = load_config(with_serving_defaults(saved), overrides)
  elif args.default_config:
    config = load_config(args.default_config, overrides)
  else:
    raise FileNotFoundError(
      f"{workdir}: no config.json (train this workdir first with "
      "python -m m3jax train, or give --config)"
    )
  if fixed_model and saved is not None:
    run_workdir.check_same_model(saved, config, workdir)
  elif not fixed_model:
    from m3jax.run.knowledge_fit import fit_to_knowledge_base

    config = fit_to_knowledge_base(config)  # the *_fit fields, before anything is built
  return config
