"""A run's config fitted to its knowledge base, once, before anything is built.

Each fit reads the prepared data: ``model.memory.ref_len`` (and the tokens kept per head)
from the lengths of the knowledge base's lines (m3jax.run.reference_length), then
``model.smeared_keys`` from the word before each training answer (m3jax.run.key_smearing).
The data is located and prepared once for both (locating it hashes the user's files).
Every command that builds a run calls :func:`fit_to_knowledge_base`
(m3jax.commands.common.config_from_args, m3jax.run.sweep); the workdir then records the
fitted config, so a command that loads it reads the same model.
"""

from __future__ import annotations

import ml_collections

from m3jax.run.key_smearing import fit_smeared_keys
from m3jax.run.reference_length import fit_ref_len, prepared_paths


def fit_to_knowledge_base(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` with every ``*_fit`` field applied (unchanged, and no data prepared, when
  none is set)."""
  model = config.model
  if not (model.memory.get("ref_len_fit", 0.0) or model.get("smeared_keys_fit", 0.0)):
    return config
  paths = prepared_paths(config)
  return fit_smeared_keys(fit_ref_len(config, paths), paths)
