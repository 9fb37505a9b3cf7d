"""What a memory bank's manifest says, and whether it still fits the model that opens it.

The manifest (``bankfiles.MANIFEST``, written last by every edit) records the row layout,
the quantization, what the memories were encoded with (model config, weights, tokenizer:
fingerprints, and the checkpoint step) and the committed counts. ``new_manifest`` is the
manifest of an empty bank; ``stale_problems`` lists, in words, every way a bank was built
for something other than the model, weights or tokenizer now reading it. Both are pure:
the bank (``m3jax.memory.store``) reads and writes the file.
"""

from __future__ import annotations

import dataclasses

from m3jax.memory import bankfiles
from m3jax.memory.fingerprint import model_fingerprint
from m3jax.memory.layout import BankLayout


def new_manifest(
  layout: BankLayout,
  *,
  packed_rows: bool,
  model_cfg=None,
  checkpoint_step: int = 0,
  params_fingerprint: str | None = None,
  tokenizer_fingerprint: str | None = None,
  pq_rel_mse: float | None = None,
) -> dict:
  """The manifest of a new, empty, incomplete bank (format 3, or 2 with one array per
  field when ``packed_rows`` is False)."""
  return {
    "spec_version": bankfiles.SPEC_VERSION if packed_rows else 2,
    "id_array": True,
    "complete": False,
    "layout": dataclasses.asdict(layout),
    "dtype": "uint8" if layout.pq_subspaces else "bfloat16",
    "quantization": (
      {"kind": "pq", "bytes_per_vector": layout.pq_subspaces, "relative_mse": pq_rel_mse}
      if layout.pq_subspaces
      else {"kind": "none"}
    ),
    "checkpoint_step": int(checkpoint_step),
    "model_fingerprint": model_fingerprint(model_cfg) if model_cfg is not None else None,
    "params_fingerprint": params_fingerprint,
    "tokenizer_fingerprint": tokenizer_fingerprint,
    "count": 0,
    "num_deleted": 0,
    "text_bytes": 0,
    "sorted_count": 0,
    "rowindex_generation": 0,
  }


def stale_problems(
  manifest: dict,
  *,
  model_cfg=None,
  pq_subspaces: int | None = None,
  checkpoint_step: int | None = None,
  params_fingerprint: str | None = None,
  tokenizer_fingerprint: str | None = None,
) -> list[str]:
  """Why the bank's memories do not belong to this reader, one phrase each ("has layout
  … but …"), empty when they do. What is not given is not checked. The weights are
  compared by fingerprint when given (a step alone cannot tell two stages apart), else
  by checkpoint step; ``pq_subspaces`` None means the bank's own quantization."""
  problems = []
  if model_cfg is not None:
    want = BankLayout.from_model(
      model_cfg, manifest["layout"]["pq_subspaces"] if pq_subspaces is None else pq_subspaces
    )
    have = BankLayout(**manifest["layout"])
    if want != have:
      problems.append(f"has layout {have} but the model config needs {want}")
    fp = model_fingerprint(model_cfg)
    if manifest.get("model_fingerprint") not in (None, fp):
      problems.append(
        f"was built for model fingerprint {manifest['model_fingerprint']} "
        f"but the model config has {fp}"
      )
  for what, got, key in (
    ("checkpoint weights", params_fingerprint, "params_fingerprint"),
    ("tokenizer", tokenizer_fingerprint, "tokenizer_fingerprint"),
  ):
    if got is not None and manifest[key] != got:
      problems.append(
        f"was built with {what} of fingerprint {manifest[key]}, this run's "
        f"{what} have fingerprint {got}"
      )
  if (
    params_fingerprint is None
    and checkpoint_step is not None
    and manifest["checkpoint_step"] != checkpoint_step
  ):
    problems.append(
      f"was encoded at checkpoint step {manifest['checkpoint_step']} but the "
      f"model is at step {checkpoint_step}"
    )
  return problems
