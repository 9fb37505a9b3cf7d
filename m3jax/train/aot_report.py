"""What an AOT-compiled step needs per device: HBM, FLOPs, collectives; and whether it fits.

Bytes come from ``Compiled.memory_analysis()`` (per device): arguments (params,
optimizer state, batch), outputs, temporaries (activations, gradients in flight), the
aliased bytes that donated arguments share with outputs, and the program itself. The
peak a chip must hold is arguments + outputs − aliased + temporaries + code, the sum
MaxText's ``train_compile`` prints.

FLOPs per device: ``compiled_flops_per_device`` is the matmul FLOPs of the optimized
HLO with every loop body multiplied by its trip count (``m3jax.train.hlo_flops``;
recomputation under remat included), compared with the model FLOPs of SPEC App. A
(``m3jax.train.flops``) divided over the devices. ``cost_analysis()``'s figure (every op,
elementwise work included, but a ``while`` body counted once: one layer of a scanned
stack, one microbatch) is kept next to it.

Collectives: ``collectives`` counts each all-gather, reduce-scatter, all-reduce,
all-to-all and collective-permute instruction (async ``-start`` forms included, ``-done``
not) once where it appears in the HLO text; ``collectives_per_step`` how many run per
step (one in a scanned layer's body once per iteration).
"""

from __future__ import annotations

import re

from m3jax.train import hlo_flops

GiB = 1024**3
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_OP = re.compile(r"\s(" + "|".join(COLLECTIVES) + r")(-start)?\(")


class DoesNotFitError(ValueError):
  """The step needs more HBM per device than the chip has."""


def count_collectives(hlo_text: str) -> dict[str, int]:
  counts = dict.fromkeys(COLLECTIVES, 0)
  for match in _OP.finditer(hlo_text):
    counts[match.group(1)] += 1
  return counts


def memory_bytes(executable) -> dict[str, int]:
  ma = executable.memory_analysis()
  out = {
    "argument_bytes": int(ma.argument_size_in_bytes),
    "output_bytes": int(ma.output_size_in_bytes),
    "alias_bytes": int(ma.alias_size_in_bytes),
    "temp_bytes": int(ma.temp_size_in_bytes),
    "code_bytes": int(ma.generated_code_size_in_bytes),
  }
  out["total_bytes"] = (
    out["argument_bytes"]
    + out["output_bytes"]
    - out["alias_bytes"]
    + out["temp_bytes"]
    + out["code_bytes"]
  )
  return out


def compiled_cost(executable) -> dict[str, float]:
  cost = executable.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per device program
    cost = cost[0]
  return {
    "flops": float(cost.get("flops", 0.0)),
    "transcendentals": float(cost.get("transcendentals", 0.0)),
    "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
  }


def fit(memory: dict[str, int], hbm_bytes: int) -> dict:
  total = memory["total_bytes"]
  return {
    "hbm_bytes_per_device": hbm_bytes,
    "fits": total <= hbm_bytes,
    "used_fraction": total / hbm_bytes,
    "headroom_fraction": 1.0 - total / hbm_bytes,
    "over_bytes": max(0, total - hbm_bytes),
  }


def knobs(
  memory: dict[str, int],
  *,
  remat_policy: str | None,
  per_device_batch: int | None,
  mesh_shape: dict,
) -> list[str]:
  """What would shrink the largest parts of the footprint, biggest part first."""
  temp, args = memory["temp_bytes"], memory["argument_bytes"] + memory["output_bytes"]
  temp_advice = []
  if remat_policy != "full":
    temp_advice.append(
      f"rematerialize more (now remat_policy={remat_policy or 'none'}; "
      "--config.model.remat_policy=full, with --config.model.scan_layers=True)"
    )
  if per_device_batch and per_device_batch > 1:
    temp_advice.append(
      f"microbatch: lower --per-device-batch (now {per_device_batch}; more microbatches per step)"
    )
  tensor = mesh_shape.get("tensor", 1)
  temp_advice.append(
    f"split each layer's activations over a tensor axis: raise tensor in --mesh (now "
    f"tensor={tensor}; it must divide the KV heads)"
  )
  fsdp = mesh_shape.get("fsdp", 1)
  arg_advice = [
    f"shard the state over more devices: raise fsdp in --mesh (now "
    f"{'x'.join(str(v) for v in mesh_shape.values())}, fsdp={fsdp})"
  ]
  parts = [
    (temp, f"temporaries {temp / GiB:.1f} GiB", temp_advice),
    (args, f"arguments+outputs {args / GiB:.1f} GiB", arg_advice),
  ]
  parts.sort(key=lambda p: -p[0])
  return [f"{label}: " + "; or ".join(advice) for _, label, advice in parts if advice]


def check_fit(memory: dict[str, int], hbm_bytes: int, chip: str, **knob_args) -> None:
  """Raises DoesNotFitError (bytes over, and the knobs) when the step cannot fit."""
  over = memory["total_bytes"] - hbm_bytes
  if over <= 0:
    return
  advice = knobs(memory, **knob_args)
  raise DoesNotFitError(
    f"does not fit: needs {memory['total_bytes']:,} bytes "
    f"({memory['total_bytes'] / GiB:.2f} GiB) per device, {over:,} bytes "
    f"({over / GiB:.2f} GiB) over the {hbm_bytes / GiB:.0f} GiB HBM of a {chip} device. "
    + " | ".join(advice)
  )


def summarize(executable, *, model_flops_per_device: float, hbm_bytes: int) -> dict:
  """Memory, fit, FLOPs against the formula, and collective counts of one executable."""
  memory = memory_bytes(executable)
  cost = compiled_cost(executable)
  hlo = executable.as_text()
  counted = hlo_flops.analyze(hlo)
  ratio = lambda x: x / model_flops_per_device if model_flops_per_device else None
  return {
    "memory": memory,
    "fit": fit(memory, hbm_bytes),
    "flops": {
      # Matmul FLOPs of the optimized HLO, loop bodies × their trip counts.
      "compiled_flops_per_device": counted.flops,
      # XLA's cost_analysis: every op, but each loop body counted once.
      "cost_analysis_flops_per_device": cost["flops"],
      "formula_per_device": model_flops_per_device,
      "compiled_over_formula": ratio(counted.flops),
      "cost_analysis_over_formula": ratio(cost["flops"]),
      "loops": counted.loops,
      "unknown_trip_counts": counted.unknown_trip_counts,
      "kernels_without_flops_per_step": counted.opaque_kernels,
      "kernel_calls_per_step": counted.kernels,
      "kernel_flops_in_hlo_per_device": counted.kernel_flops,
      "transcendentals_per_device": cost["transcendentals"],
      "bytes_accessed_per_device": cost["bytes_accessed"],
    },
    "collectives": count_collectives(hlo),
    "collectives_per_step": counted.collectives,
  }
