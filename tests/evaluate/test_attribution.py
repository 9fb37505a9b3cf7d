"""Per-reference attention mass sums to the model's own memory mass."""

import pytest
import jax.numpy as jnp
import numpy as np

from m3jax.evaluate.attribution import attribute, reference_mass
from m3jax.model.memory_kv import MemoryKV
from tests.inference.fakes import FakeBank, tiny_model


@pytest.mark.integration
def test_reference_mass_sums_to_model_memory_mass():
  cfg, params = tiny_model()
  bank = FakeBank(cfg)
  m = bank.memory_for_ids(np.array([[0, 1, 2, 3, -1], [4, 5, 6, 7, 8]]))  # [L, C=2, 1, …]
  mem = MemoryKV(
    jnp.swapaxes(m.keys_LxBxCxRxKxMxD, 1, 2),
    jnp.swapaxes(m.values_LxBxCxRxKxMxD, 1, 2),
    jnp.swapaxes(m.mask_BxCxRxM, 0, 1),
  )
  tokens = jnp.asarray(np.random.default_rng(0).integers(5, 500, (1, 27)), jnp.int32)
  per_ref, total = reference_mass(cfg, params, tokens, mem)
  # float32 softmax probabilities: sums agree to ~1e-6.
  np.testing.assert_allclose(per_ref.sum(-1), total, atol=2e-5)
  assert float(per_ref[:, 0, :16, :, 4].max()) == 0.0  # the empty slot gets nothing
  out = attribute(
    cfg,
    params,
    np.asarray(tokens[0, :20]),
    np.asarray(tokens[0, 20:]),
    mem,
    ["a", "b", "c", "d", "e"],
  )
  assert len(out["mass_by_layer"]) == cfg.memory.num_memory_layers
  # attribute() pads to whole chunks before its jitted pass; causal attention makes the
  # padding invisible: the mass at the answer-predicting positions 19..25 is the
  # unpadded forward's (float32: ~1e-6).
  np.testing.assert_allclose(
    out["mass_by_layer"], np.asarray(total[:, 0, 19:26].mean(axis=(1, 2))), atol=1e-5
  )
  assert [s for _, s in out["references"]] == sorted(
    (s for _, s in out["references"]), reverse=True
  )
