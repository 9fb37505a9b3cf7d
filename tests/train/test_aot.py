"""AOT compilation for TPU topologies: the tiny stage-2 step on v5e:2x2, and clear errors.

The compile runs in a subprocess with the TPU virtualenv's Python (.venv-tpu, created by
``make test`` through ``make tpu-venv``), so libtpu never loads into the CPU test run.
The rest (meshes, batch arithmetic, fit verdicts, HLO counting) runs here on CPU.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from configs import memory3
from m3jax import sharding
from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer
from m3jax.train import aot, aot_report, flops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TPU_PYTHON = os.path.join(ROOT, ".venv-tpu", "bin", "python")


def _tpu_python() -> str:
  if not os.path.exists(TPU_PYTHON):
    pytest.skip(
      f"no TPU virtualenv at {TPU_PYTHON}: `make tpu-venv` did not install "
      "jax[tpu]/libtpu here (libtpu wheels exist for Linux x86_64/aarch64 only)"
    )
  probe = subprocess.run([TPU_PYTHON, "-c", "import libtpu"], capture_output=True, text=True)
  if probe.returncode:
    pytest.skip(f"libtpu does not import in {TPU_PYTHON}: {probe.stderr.strip()[-300:]}")
  return TPU_PYTHON


def _compile(*args, timeout=600):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS")}
  env["PYTHONPATH"] = ROOT
  return subprocess.run(
    [_tpu_python(), "-m", "m3jax", "compile", *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def _compile_tiny_stage2(out_dir, *extra):
  """(process, JSON result) of compiling the tiny config's stage 2 for v5e:2x2."""
  stage = ("--stage", "continual", "--out-dir", str(out_dir))
  proc = _compile("--config", "configs/memory3.py:tiny", "--topology", "v5e:2x2", *stage, *extra)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  with open(out_dir / "aot_v5e_2x2_continual.json") as f:
    return proc, json.load(f)


@pytest.mark.integration
def test_tiny_stage2_on_v5e_2x2_matches_app_a_flops(tmp_path):
  proc, result = _compile_tiny_stage2(tmp_path)
  assert result["devices"] == 4 and result["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert result["details"]["use_memory"] and result["details"]["encode_grad"]
  # The formula, computed here from the config (tiny: batch 8 x 64 tokens, 4 devices).
  cfg = model_config_from(memory3.get_config("tiny").model)
  expected = flops.train_step_flops(cfg, 64, 8, use_memory=True, encode_grad=True)["total"] / 4
  assert result["flops"]["formula_per_device"] == pytest.approx(expected)
  # The compiled matmuls (HLO dots and convolutions, loops × trip counts) against App. A:
  # measured 1.003× for this shape (XLA:TPU does not spend matmuls on the masked half).
  compiled = result["flops"]["compiled_flops_per_device"]
  assert abs(compiled / expected - 1) < 0.05, (compiled, expected)
  extra = flops.dense_attention_extra(cfg, 64, 8, use_memory=True, encode_grad=True) / 4
  assert result["flops"]["accounted_per_device"] == pytest.approx(expected + extra)
  mem = result["memory"]
  assert mem["total_bytes"] == (
    mem["argument_bytes"]
    + mem["output_bytes"]
    - mem["alias_bytes"]
    + mem["temp_bytes"]
    + mem["code_bytes"]
  )
  assert mem["alias_bytes"] > 0  # the train state is donated
  assert result["fit"]["fits"] and result["hbm_bytes_per_device"] == 16 * 1024**3
  assert result["collectives"]["all-gather"] > 0  # FSDP gathers the sharded params
  assert "compiled in" in proc.stdout


def _compile_tiny_stage2_on_kernel(out_dir, impl, remat):
  """The tiny stage-2 step, scanned, on a Pallas kernel, one sequence per device."""
  proc, result = _compile_tiny_stage2(
    out_dir,
    "--per-device-batch",
    "1",
    f"--config.model.attention_impl={impl}",
    "--config.model.scan_layers=True",
    f"--config.model.remat_policy={remat}",
  )
  assert result["model"]["attention_impl_compiled"] == impl
  return proc, result


@pytest.mark.integration
@pytest.mark.parametrize("remat", ["dots_except_attention", "none"])
def test_tiny_stage2_with_the_splash_kernel_compiles_for_v5e(tmp_path, remat):
  """The library's Pallas kernel lowers and compiles for the topology; its FLOPs are
  outside the matmul count, and the report says how many calls that is."""
  proc, result = _compile_tiny_stage2_on_kernel(tmp_path, "splash", remat)
  got = result["flops"]
  # The kernel calls the HLO holds (trip counts included) are the ones the tile-mask count
  # expects: a forward, a dq and a dkv call per layer and encoder layer, per microbatch.
  assert got["kernels_without_flops_per_step"] == got["kernel_calls_from_masks_per_step"] > 0
  assert got["kernel_calls_per_step"] == got["kernel_calls_from_masks_per_step"]
  # A forward, a dq and a dkv call per layer and microbatch, and the forward again under
  # a remat policy (none saves a Pallas call's outputs).
  layers, micro = result["model"]["num_layers"], 8 // (4 * 1)  # batch / (devices x 1 per device)
  per_layer = 3 if remat == "none" else 4
  assert got["kernel_calls_from_masks_per_step"] == layers * per_layer * micro
  assert got["compiled_with_kernels_per_device"] == pytest.approx(
    got["compiled_flops_per_device"] + got["kernel_flops_from_masks_per_device"]
  )
  # The live encoder's short references run XLA attention, not the kernel: its dense
  # extra is accounted, the training forward's is not (the kernel skips masked tiles).
  cfg = model_config_from(memory3.get_config("tiny").model)
  encoder_only = flops.dense_attention_extra(
    cfg, 64, 8, use_memory=True, encode_grad=True, context=False, encoder=True
  )
  assert result["flops"]["extras_per_step"]["dense_attention_masked_half"] == encoder_only > 0
  assert "Pallas kernel calls" in proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
  "remat,per_layer", [("dots_attention_out", 2), ("dots_except_attention", 3)]
)
def test_tiny_stage2_with_the_flash_kernel_counts_its_cost_estimates(tmp_path, remat, per_layer):
  """m3jax's own kernel compiles for the topology with one fused backward call per layer;
  its FLOPs are in the HLO (its cost estimates) and equal the tile-mask count; under
  dots_attention_out its forward is not run again (2 calls per layer, not 3)."""
  _, result = _compile_tiny_stage2_on_kernel(tmp_path, "flash", remat)
  got = result["flops"]
  layers, micro = result["model"]["num_layers"], 8 // (4 * 1)
  assert got["kernel_calls_per_step"] == got["kernel_calls_from_masks_per_step"]
  assert got["kernel_calls_per_step"] == layers * per_layer * micro
  assert got["kernels_without_flops_per_step"] == 0 and got["kernel_flops_in_hlo"]
  assert got["kernel_flops_in_hlo_per_device"] == pytest.approx(
    got["kernel_flops_from_masks_per_device"]
  )
  assert got["compiled_with_kernels_per_device"] == got["compiled_flops_per_device"]


def test_topology_libtpu_rejects_is_a_clear_error():
  proc = _compile("--config", "configs/memory3.py:tiny", "--topology", "v5e:3x3", timeout=300)
  assert proc.returncode == 2
  assert "libtpu does not know the TPU topology 'v5e:3x3'" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_unknown_topology_name_fails_before_libtpu():
  for name in ("bogus", "v9:2x2", "v5p-128"):
    with pytest.raises(ValueError, match="unknown TPU topology"):
      aot.tpu_topology(name)


def test_parse_mesh():
  assert aot.parse_mesh("1,64,1") == (1, 64, 1)
  assert aot.parse_mesh("2x-1x4") == (2, -1, 4)
  for bad in ("1,64", "a,b,c", "1,0,4"):
    with pytest.raises(ValueError, match="--mesh"):
      aot.parse_mesh(bad)


def test_mesh_that_does_not_divide_devices():
  with pytest.raises(ValueError, match=r"train mesh \(3, 1, 1\).*multiply to 8"):
    aot.make_mesh_on(jax.devices(), (3, 1, 1), what="train")
  with pytest.raises(ValueError, match="do not divide the 8 devices"):
    aot.make_mesh_on(jax.devices(), (3, -1, 1), what="train")


def test_batch_that_does_not_divide_the_mesh():
  mesh = sharding.make_mesh((2, 4, 1))
  assert aot.microbatches_for(2048, mesh, None) == 1
  assert aot.microbatches_for(2048, mesh, 4) == 64  # 2048 / (4 x 8)
  with pytest.raises(ValueError, match="batch_size=12 does not divide over the 8"):
    aot.microbatches_for(12, mesh, None)
  with pytest.raises(ValueError, match="--per-device-batch 3 .* pick a divisor of 256"):
    aot.microbatches_for(2048, mesh, 3)


def test_default_meshes_for_the_paper_shape():
  cfg = model_config_from(memory3.get_config("paper_2p4b").model)
  assert aot.default_train_mesh(cfg, 64) == (1, 64, 1)
  assert aot.default_train_mesh(cfg, 256) == (2, 128, 1)  # 3200 is not a multiple of 256
  assert aot.default_decode_mesh(cfg, 64, 32) == (8, 1, 8)
  assert aot.default_decode_mesh(cfg, 256, 32) == (32, 1, 8)
  # Without --mesh, compile tries tensor 2, 4, 8 (KV heads 8) after the default.
  assert aot.train_mesh_candidates(cfg, 256) == [(2, 128, 1), (1, 128, 2), (1, 64, 4), (1, 32, 8)]
  tiny = model_config_from(memory3.get_config("tiny").model)  # 2 KV heads
  assert aot.train_mesh_candidates(tiny, 4) == [(1, 4, 1), (1, 2, 2)]


@pytest.mark.integration
def test_mesh_search_tries_tensor_parallel_meshes_until_one_fits(tmp_path):
  """With no --mesh, a step that leaves too little HBM free is recompiled with tensor
  parallelism; here an HBM budget of 1 KiB makes every mesh fail, so both tiny meshes
  are tried, the smaller footprint is reported, and the exit status says it does not fit."""
  budget = ("--stage", "continual", "--out-dir", str(tmp_path), "--hbm-gib", str(1 / 1024**2))
  proc = _compile("--config", "configs/memory3.py:tiny", "--topology", "v5e:2x2", *budget)
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert "does not fit" in proc.stderr and "meshes tried" in proc.stdout
  with open(tmp_path / "aot_v5e_2x2_continual.json") as f:
    result = json.load(f)
  tried = result["mesh_search"]
  assert [m["mesh"] for m in tried] == [[1, 4, 1], [1, 2, 2]]
  best = min(tried, key=lambda m: m["total_bytes"])
  assert result["memory"]["total_bytes"] == best["total_bytes"]
  assert list(result["mesh"].values()) == best["mesh"]
  assert (
    result["hbm_bytes_per_device"] == 1024 and result["chip_hbm_bytes_per_device"] == 16 * 1024**3
  )


def test_auto_attention_compiles_the_kernel_a_tpu_run_uses():
  cfg = model_config_from(memory3.get_config("paper_2p4b").model)
  assert cfg.attention_impl == "auto" and aot.for_tpu(cfg).attention_impl == "flash"
  dense = model_config_from(memory3.get_config("tiny").model)
  assert aot.for_tpu(dense) is dense  # an explicit impl is kept


def test_train_state_of_a_splash_model_builds_under_an_fsdp_mesh():
  """The init's one-row dummy batch never reaches the kernel (whose shard_map would need
  the batch to divide the mesh); the state is the dense model's."""
  import dataclasses

  from m3jax.train.optimizer import make_optimizer
  from m3jax.train.state import abstract_state

  config = memory3.get_config("tiny")
  dense = model_config_from(config.model)
  splash = dataclasses.replace(dense, attention_impl="splash_interpret")
  mesh = sharding.make_mesh((1, 4, 1), devices=jax.devices()[:4])
  tx = make_optimizer(config.train)
  got = abstract_state(splash, tx, mesh, config.sharding.rules)
  want = abstract_state(dense, tx, mesh, config.sharding.rules)
  spec = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype, x.sharding.spec), t)
  assert spec(got) == spec(want)


def test_count_collectives():
  hlo = """
  %all-gather.1 = f32[64,8]{1,0} all-gather(f32[16,8]{1,0} %p), channel_id=1
  %ags = (f32[4]{0}, f32[16]{0}) all-gather-start(f32[4]{0} %x), channel_id=2
  %agd = f32[16]{0} all-gather-done((f32[4]{0}, f32[16]{0}) %ags)
  %rs = f32[4]{0} reduce-scatter(f32[16]{0} %g), dimensions={0}
  %ar = f32[] all-reduce(f32[] %l), to_apply=%add
  %ars = f32[] all-reduce-start(f32[] %l2), to_apply=%add
  %ard = f32[] all-reduce-done(f32[] %ars)
  %fusion = f32[4] fusion(f32[4] %all-gather.1), kind=kLoop
  """
  counts = aot_report.count_collectives(hlo)
  assert counts["all-gather"] == 2 and counts["reduce-scatter"] == 1
  assert counts["all-reduce"] == 2 and counts["all-to-all"] == 0


def _does_not_fit(memory, **knob_args) -> str:
  with pytest.raises(aot_report.DoesNotFitError) as err:
    aot_report.check_fit(memory, 95 * aot_report.GiB, "TPU v5p", **knob_args)
  return str(err.value)


def test_fit_verdict_names_bytes_and_knobs():
  gib = aot_report.GiB
  memory = {
    "argument_bytes": 30 * gib,
    "output_bytes": 30 * gib,
    "alias_bytes": 30 * gib,
    "temp_bytes": 80 * gib,
    "code_bytes": 0,
  }
  memory["total_bytes"] = 110 * gib
  msg = _does_not_fit(
    memory,
    remat_policy="none",
    per_device_batch=8,
    mesh_shape={"data": 1, "fsdp": 64, "tensor": 1},
  )
  assert f"{15 * gib:,} bytes" in msg and "(15.00 GiB) over the 95 GiB" in msg
  assert "remat_policy=full" in msg and "--per-device-batch (now 8" in msg
  assert msg.index("temporaries") < msg.index("raise fsdp")  # the biggest part first
  # Already fully rematerialized, one sequence per device: the tensor axis is what is left
  # (the fsdp advice alone would be wrong when the state is a small part of the bytes).
  msg = _does_not_fit(
    memory,
    remat_policy="full",
    per_device_batch=1,
    mesh_shape={"data": 1, "fsdp": 64, "tensor": 1},
  )
  assert "remat_policy=full" not in msg and "--per-device-batch" not in msg
  assert msg.index("raise tensor in --mesh (now tensor=1") < msg.index("raise fsdp")
  aot_report.check_fit(
    {**memory, "total_bytes": 94 * gib},
    95 * gib,
    "TPU v5p",
    remat_policy="none",
    per_device_batch=8,
    mesh_shape={},
  )
  verdict = aot_report.fit({**memory, "total_bytes": 76 * gib}, 95 * gib)
  assert verdict["fits"] and verdict["headroom_fraction"] == pytest.approx(0.2)


@pytest.mark.integration
def test_decode_formula_agrees_with_xla_on_cpu():
  """decode_step_flops against XLA:CPU's count of the real decode step (tiny shape)."""
  cfg = model_config_from(memory3.get_config("tiny").model)
  model = Transformer(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  batch, max_len = 4, 256
  cache = model.apply({"params": params}, batch, max_len, method=Transformer.init_cache)
  step = jax.jit(lambda p, t, c: model.apply({"params": p}, t, c, method=Transformer.step))
  cost = step.lower(params, jnp.zeros((batch, 1), jnp.int32), cache).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  slots = cache.k_LxBxSxKxD.shape[2]
  expected = flops.decode_step_flops(cfg, batch, slots)
  # XLA:CPU adds softmax, RoPE and norm work on top of the matmuls: a few percent here.
  assert abs(cost["flops"] / expected - 1) < 0.15, (cost["flops"], expected)


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
