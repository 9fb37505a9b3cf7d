"""LiveBank: references encoded on demand by the parameters it was last given (no disk)."""

import jax
import ml_dtypes
import numpy as np
import pytest

from m3jax.data.references import Reference
from m3jax.memory.encode import encode_references
from m3jax.memory.feeder import MemoryFeeder
from m3jax.memory.live_bank import LiveBank


def _refs(cfg):
  rng = np.random.default_rng(0)
  lengths = [cfg.memory.ref_len, 7, 12]
  return [
    Reference(f"r{i}", f"text {i}", tuple(int(t) for t in rng.integers(5, 90, n)))
    for i, n in enumerate(lengths)
  ]


def _expected(params, cfg, ref):
  tokens = np.zeros((1, cfg.memory.ref_len), np.int32)
  tokens[0, : len(ref.tokens)] = ref.tokens
  enc = encode_references(params, cfg, tokens, np.array([len(ref.tokens)], np.int32))
  return np.asarray(enc.keys_BxLxKxMxD[0]).astype(ml_dtypes.bfloat16), np.asarray(enc.mask_BxM[0])


@pytest.mark.integration
def test_reads_are_the_given_params_encodings_and_follow_new_params(tiny_cfg, tiny_params):
  refs = _refs(tiny_cfg)
  bank = LiveBank(tiny_cfg, refs, batch_size=2)
  with pytest.raises(RuntimeError, match="set_params"):
    bank.read(["r0"])
  bank.set_params(tiny_params)
  rows = bank.read(["r2", "r0", "r2"])
  assert rows.keys.dtype == ml_dtypes.bfloat16 and rows.keys.shape[0] == 3
  for got, ref in zip(rows.keys, [refs[2], refs[0], refs[2]]):
    np.testing.assert_allclose(
      np.float32(got), np.float32(_expected(tiny_params, tiny_cfg, ref)[0]), rtol=1e-2, atol=1e-2
    )
  np.testing.assert_array_equal(rows.mask[0], _expected(tiny_params, tiny_cfg, refs[2])[1])
  assert bank.encoded == 2  # only what was asked for, each once
  bank.read(["r0"])
  assert bank.encoded == 2  # cached while the params stay
  other = jax.tree_util.tree_map(lambda x: x * 1.5, tiny_params)
  bank.set_params(other)
  moved = bank.read(["r0"])
  assert bank.encoded == 3
  assert not np.array_equal(np.float32(moved.keys[0]), np.float32(rows.keys[1]))
  assert list(bank.contains(["r1", "nope"])) == [True, False] and len(bank) == 3
  with pytest.raises(KeyError, match="nope"):
    bank.read(["nope"])


def test_a_feeder_assembles_memories_from_it(tiny_cfg, tiny_params):
  refs = _refs(tiny_cfg)
  bank = LiveBank(tiny_cfg, refs)
  bank.set_params(tiny_params)
  feeder = MemoryFeeder(None, None, bank, tiny_cfg.memory.refs_per_chunk)
  r = tiny_cfg.memory.refs_per_chunk
  ids = np.full((2, 1, r), None, object)
  ids[0, 0, :2] = ["r1", "r0"]
  mem = feeder.assemble(ids)
  lay = bank.layout
  assert mem.keys_LxBxCxRxKxMxD.shape == (
    lay.num_layers,
    2,
    1,
    r,
    lay.kv_heads,
    lay.tokens,
    lay.head_dim,
  )
  mask = np.asarray(mem.mask_BxCxRxM)
  assert mask[0, 0, :2].any() and not mask[0, 0, 2:].any() and not mask[1].any()
  # No ids at all still assembles (an all-empty memory).
  empty = feeder.assemble(np.full((1, 1, r), None, object))
  assert not np.asarray(empty.mask_BxCxRxM).any()
  feeder.close()
