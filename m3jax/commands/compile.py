"""Compile the real train or decode step for a TPU topology ahead of time (no TPU needed).

  .venv-tpu/bin/python -m m3jax compile --config configs/memory3.py:paper_2p4b \\
      --topology v5p:4x4x4 --stage continual [--mesh 1,64,1] [--per-device-batch 4] \\
      [--out-dir experiments/results] [--config.model.scan_layers=True ...]

``--stage`` is a stage of ``config.train.stages`` (warmup: no memory; continual: live
reference encoding with gradients) or ``decode``. Prints bytes per device against the
chip's HBM, compiled FLOPs against SPEC App. A's formula, compile time and collective
counts; with ``--out-dir`` writes ``aot_<topology>_<stage>.json`` there. Exits 1 with
the bytes over and the knobs to turn when the step does not fit. Needs libtpu: run it
with the TPU virtualenv's Python (``make tpu-venv``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
  from m3jax.commands.common import add_config_arguments

  add_config_arguments(parser, default="configs/memory3.py:paper_2p4b")
  parser.add_argument(
    "--topology", required=True, help="TPU slice, e.g. v5p:4x4x4 (v5p-128) or v5e:16x16 (v5e-256)"
  )
  parser.add_argument(
    "--stage",
    default=None,
    help="a stage name of config.train.stages, or 'decode' (default: the last stage)",
  )
  parser.add_argument(
    "--mesh",
    default=None,
    help="data,fsdp,tensor sizes (default for training: fsdp over what the model width "
    "divides, then tensor 2, 4, 8 until the step leaves --headroom of HBM free; for "
    "decode: tensor over KV heads)",
  )
  parser.add_argument(
    "--headroom",
    type=float,
    default=0.10,
    help="HBM fraction a default training mesh must leave free before the search stops",
  )
  parser.add_argument(
    "--hbm-gib",
    type=float,
    default=None,
    help="plan for this much HBM per device instead of the chip's (e.g. memory held by "
    "another process)",
  )
  parser.add_argument(
    "--per-device-batch",
    type=int,
    default=None,
    help="sequences per device per microbatch (default: config.train.microbatches)",
  )
  parser.add_argument("--decode-batch", type=int, default=32)
  parser.add_argument(
    "--decode-len",
    type=int,
    default=None,
    help="context tokens the decode cache holds (default: seq_len)",
  )
  parser.add_argument(
    "--out-dir", default=None, help="write aot_<topology>_<stage>.json into this directory"
  )
  parser.add_argument(
    "--hlo-out",
    default=None,
    help="also write the optimized HLO text (gzipped if the name ends in .gz) here",
  )


def _model_knobs(config) -> dict:
  m = config.model
  return {
    k: (m[k] if k in m else None)
    for k in ("scan_layers", "remat_policy", "attention_impl", "dtype", "param_dtype", "num_layers")
  }


def _version(package: str) -> str | None:
  from importlib import metadata

  try:
    return metadata.version(package)
  except metadata.PackageNotFoundError:
    return None


def _size(n: int) -> str:
  for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
    if n >= size:
      return f"{n / size:.2f} {unit}"
  return f"{n} B"


def _print(result: dict) -> None:
  from m3jax.train.aot_report import GiB

  mem, fit, flops = result["memory"], result["fit"], result["flops"]
  print(
    f"{result['topology']} ({result['devices']} devices, mesh {result['mesh']}) "
    f"{result['stage']}: lowered in {result['lower_s']:.1f} s, compiled in "
    f"{result['compile_s']:.1f} s ({result['compile_cpu_s']:.1f} CPU s)"
  )
  print("  per device: " + ", ".join(f"{k[:-6]} {_size(v)}" for k, v in mem.items()))
  print(
    f"  HBM {fit['hbm_bytes_per_device'] / GiB:.0f} GiB: {100 * fit['used_fraction']:.1f}% "
    f"used, headroom {100 * fit['headroom_fraction']:.1f}%"
  )
  ratio = flops["compiled_over_formula"]
  print(
    f"  FLOPs per device: compiled {flops['compiled_flops_per_device']:.4g} (matmuls, "
    f"loops × trip counts), App. A formula {flops['formula_per_device']:.4g} (ratio "
    f"{ratio:.3f}); with dense attention's masked half and remat recompute "
    f"{flops['accounted_per_device']:.4g} (ratio {flops['compiled_over_accounted']:.3f}); "
    f"cost_analysis {flops['cost_analysis_flops_per_device']:.4g} (loop bodies once)"
  )
  if flops["kernel_calls_from_masks_per_step"]:
    print(
      f"  Pallas attention kernels: {flops['kernel_calls_per_step']:.0f} calls per "
      f"step in the HLO ({flops['kernel_calls_from_masks_per_step']:.0f} expected), "
      f"{flops['kernel_flops_from_masks_per_device']:.4g} FLOPs per device from their tile "
      f"masks ({'in the HLO, their cost estimates' if flops['kernel_flops_in_hlo'] else 'added'}); matmuls + kernels {flops['compiled_with_kernels_per_device']:.4g} (ratio "
      f"{flops['compiled_with_kernels_over_formula']:.3f} to App. A)"
    )
  if flops["unknown_trip_counts"] or flops["kernels_without_flops_per_step"]:
    print(
      f"  not counted: {flops['unknown_trip_counts']} loops of unknown trip count (counted "
      f"once), {flops['kernels_without_flops_per_step']:.0f} Pallas kernel calls per step "
      "with no cost estimate"
    )
  if len(result.get("mesh_search", [])) > 1:
    print(
      "  meshes tried (data,fsdp,tensor: GiB per device): "
      + ", ".join(f"{m['mesh']}: {m['total_bytes'] / GiB:.2f}" for m in result["mesh_search"])
    )
  per_step = result["collectives_per_step"]
  print(
    "  collectives per step (in the HLO): "
    + ", ".join(f"{k} {per_step[k]:.0f} ({v})" for k, v in result["collectives"].items())
  )


def _write_text(path: str, text: str) -> None:
  import gzip

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "wt") as f:
    f.write(text)


def compile_and_report(config, args) -> dict:
  """Compiles the asked step; returns the JSON-ready result (raises on bad input)."""
  import jax

  from m3jax.model.config import model_config_from
  from m3jax.model.joint_attention import kernel_of
  from m3jax.train import aot, aot_report, flops
  from m3jax.train.loop import resolve_seq_len
  from m3jax.train.config import train_config_from

  cfg = aot.for_tpu(model_config_from(config.model))
  kernel = kernel_of(cfg.attention_impl)  # the Pallas attention kernel, or None (XLA)
  topo = aot.tpu_topology(args.topology)
  n = len(topo.devices)
  seq_len = resolve_seq_len(config)
  stages = {
    s.name: s
    for s in train_config_from(
      config.train, has_memory_layers=bool(cfg.memory.memory_layers)
    ).stages
  }
  stage_name = args.stage or list(stages)[-1]
  if stage_name != "decode" and stage_name not in stages:
    raise ValueError(f"--stage {stage_name!r} is not one of {list(stages) + ['decode']}")
  kernels = {"calls": 0.0, "flops": 0.0}  # no fused kernel (decode attends its cache with XLA)
  hbm_gib = getattr(args, "hbm_gib", None)
  headroom = float(getattr(args, "headroom", 0.10))
  hbm = int(hbm_gib * aot_report.GiB) if hbm_gib else topo.hbm_bytes_per_device
  mesh_search = []  # each training mesh tried: its bytes per device and headroom
  if stage_name == "decode":
    batch = args.decode_batch
    shape = aot.parse_mesh(args.mesh) if args.mesh else aot.default_decode_mesh(cfg, n, batch)
    mesh = aot.make_mesh_on(topo.devices, shape, what="decode")
    max_len = args.decode_len or seq_len
    out = aot.compile_decode_step(cfg, mesh, config.sharding.rules, batch=batch, max_len=max_len)
    formula = flops.decode_step_flops(cfg, batch, out.details["key_slots"])
    formula_parts = {"total": formula}
    extras = {}
    per_device_batch = batch // aot.data_parallel(mesh)
  else:
    stage = stages[stage_name]
    batch = int(config.train.batch_size)
    shapes = [aot.parse_mesh(args.mesh)] if args.mesh else aot.train_mesh_candidates(cfg, n)
    best = None  # the first mesh that leaves the headroom, else the smallest footprint
    for shape in shapes:
      mesh = aot.make_mesh_on(topo.devices, shape, what="train")
      if args.per_device_batch is None:
        microbatches = int(config.train.get("microbatches", 1))
        aot.microbatches_for(batch, mesh, None)  # the batch must divide the mesh
      else:
        microbatches = aot.microbatches_for(batch, mesh, args.per_device_batch)
      out = aot.compile_train_step(
        config, cfg, stage, mesh, seq_len=seq_len, microbatches=microbatches
      )
      total = aot_report.memory_bytes(out.executable)["total_bytes"]
      left = 1.0 - total / hbm
      mesh_search.append({"mesh": list(shape), "total_bytes": total, "headroom_fraction": left})
      if best is None or total < best[0]:
        best = (total, mesh, microbatches, out)
      if left >= headroom:
        break
    assert best is not None  # shapes is never empty
    _, mesh, microbatches, out = best
    stage_kw = dict(use_memory=stage.use_memory, encode_grad=stage.encode_grad)
    formula_parts = flops.train_step_flops(cfg, seq_len, batch, **stage_kw)
    # What XLA also counts, accounted for (see m3jax.train.flops).
    remat = config.model.get("remat_policy", "none")
    # A fused kernel (splash, flash) skips masked tiles and recomputes inside itself; its
    # FLOPs are not XLA matmuls but counted from its tile masks instead.
    fused = kernel is not None
    # The live encoder's short references run XLA attention even then
    # (joint_attention.impl_for_short_causal): XLA counts them, as it does dense layers.
    enc_xla = not flops.encoder_on_kernel(cfg)
    enc_refs = seq_len // cfg.memory.chunk_len if stage.use_memory and stage.encode_grad else 0
    extras = {
      "dense_attention_masked_half": flops.dense_attention_extra(
        cfg, seq_len, batch, **stage_kw, context=not fused, encoder=enc_xla
      ),
      "remat_recompute": flops.remat_extra(
        cfg, seq_len, batch, remat, fused_attention=fused, encoder_refs=enc_refs * enc_xla
      ),
    }
    kernels = flops.attention_kernels(
      cfg, seq_len, batch, **stage_kw, remat=remat, microbatches=microbatches
    )
    per_device_batch = out.details["per_device_batch"]
  if getattr(args, "hlo_out", None):
    _write_text(args.hlo_out, out.executable.as_text())
  summary = aot_report.summarize(
    out.executable,
    model_flops_per_device=formula_parts["total"] / n,
    hbm_bytes=hbm,
  )
  summary["flops"]["formula_per_step"] = formula_parts
  accounted = (formula_parts["total"] + sum(extras.values())) / n
  # Fused kernels: XLA's matmuls hold none of their FLOPs. A kernel with a cost estimate
  # (flash) is counted from it in the HLO, one without (splash) is added from its tile
  # masks (m3jax.train.flops.attention_kernels); the tests check the calls against the HLO.
  in_hlo = kernel is not None and flops.KERNEL_COST_IN_HLO[kernel]
  with_kernels = summary["flops"]["compiled_flops_per_device"] + (
    0.0 if in_hlo else kernels["flops"] / n
  )
  summary["flops"].update(
    extras_per_step=extras,
    accounted_per_device=accounted,
    kernel_calls_from_masks_per_step=kernels["calls"],
    kernel_flops_from_masks_per_device=kernels["flops"] / n,
    kernel_flops_in_hlo=in_hlo,
    compiled_with_kernels_per_device=with_kernels,
    compiled_with_kernels_over_formula=with_kernels / summary["flops"]["formula_per_device"],
    compiled_over_accounted=with_kernels / accounted,
  )
  summary["flops"]["ideal_step_s_at_peak"] = with_kernels / topo.peak_flops_per_device
  return {
    "topology": topo.name,
    "generation": topo.generation,
    "chips": topo.chips,
    "devices": n,
    "hbm_bytes_per_device": hbm,
    "chip_hbm_bytes_per_device": topo.hbm_bytes_per_device,
    "mesh_search": mesh_search,
    "peak_bf16_flops_per_device": topo.peak_flops_per_device,
    "config": args.config,
    "overrides": list(args.config_overrides),
    "model": {**_model_knobs(config), "attention_impl_compiled": cfg.attention_impl},
    "stage": stage_name,
    "mesh": {k: int(v) for k, v in mesh.shape.items()},
    "per_device_batch": per_device_batch,
    "details": out.details,
    **out.timing,
    **summary,
    "machine": {
      "cpu_count": os.cpu_count(),
      "jax": jax.__version__,
      "libtpu": _version("libtpu"),
      "load_average_1m": os.getloadavg()[0],
    },
  }


def run(args) -> int:
  # Host-side arrays (PRNG keys, constants) go to the CPU; only the compile targets TPU.
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from m3jax.commands.common import config_from_args
  from m3jax.train import aot_report

  try:
    config = config_from_args(args)
    result = compile_and_report(config, args)
  except (ValueError, RuntimeError) as e:
    if getattr(args, "debug", False):
      raise
    print(f"compile: {e}", file=sys.stderr)
    return 2
  _print(result)
  if args.out_dir:
    os.makedirs(args.out_dir, exist_ok=True)
    name = f"aot_{result['topology'].replace(':', '_')}_{result['stage']}.json"
    path = os.path.join(args.out_dir, name)
    with open(path, "w") as f:
      json.dump(result, f, indent=2, sort_keys=True)
    print(f"wrote {path}")
  try:
    aot_report.check_fit(
      result["memory"],
      result["hbm_bytes_per_device"],
      f"TPU {result['generation']}",
      mesh_shape=result["mesh"],
      remat_policy=result["model"]["remat_policy"],
      per_device_batch=result["per_device_batch"],
    )
  except aot_report.DoesNotFitError as e:
    print(f"compile: {e}", file=sys.stderr)
    return 1
  return 0
