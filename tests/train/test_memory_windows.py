"""Training memory windows (StageSpec.memory_window): the "similar" window against a
naive loop, its invariants, and the train step with it."""

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from m3jax.model.config import model_config_from
from m3jax.model.transformer import Transformer
from m3jax.train.config import train_config_from
from m3jax.train.memory_batch import memory_from_batch, similar_windows
from m3jax.train.stages import StageSpec
from tests.train.conftest import tiny_config


def _batch(seed=0, b=3, c=4, n=10, vocab=12):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, vocab, size=(b, c, n)).astype(np.int32)
  lengths = rng.integers(3, n + 1, size=(b, c)).astype(np.int32)
  lengths[0, 2] = 0  # a chunk without a reference
  lengths[1, 3] = 0
  tokens[2, 1], lengths[2, 1] = tokens[0, 1], lengths[0, 1]  # the same reference twice
  tokens[1, 0], lengths[1, 0] = tokens[0, 1], lengths[0, 1]  # and a third time
  tokens[2, 2, : lengths[0, 3]] = tokens[0, 3, : lengths[0, 3]]  # equal but for padding
  lengths[2, 2] = lengths[0, 3]
  for bi in range(b):  # padding holds junk: it must never count
    for ci in range(c):
      tokens[bi, ci, lengths[bi, ci] :] = rng.integers(1, vocab, size=n - lengths[bi, ci])
  return tokens, lengths


def _naive(tokens, lengths, r):
  b, c, _ = tokens.shape
  refs = [tuple(tokens[i // c, i % c, : lengths[i // c, i % c]]) for i in range(b * c)]

  def cos(x, y):
    cx, cy = Counter(x), Counter(y)
    dot = sum(cx[k] * cy[k] for k in cx)
    return dot / np.sqrt(sum(v * v for v in cx.values()) * sum(v * v for v in cy.values()))

  ids = np.zeros((b * c, r), np.int64)
  mask = np.zeros((b * c, r), bool)
  for i, own in enumerate(refs):
    ids[i, 0] = i
    if not own:
      continue
    mask[i, 0] = True
    cands = [
      j for j, ref in enumerate(refs) if ref and ref != own and refs.index(ref) == j
    ]  # other references, first copy only
    ranked = sorted(cands, key=lambda j: (-cos(own, refs[j]), j))[: r - 1]
    for slot, j in enumerate(ranked, start=1):
      ids[i, slot], mask[i, slot] = j, True
  return ids.reshape(b, c, r), mask.reshape(b, c, r)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_similar_windows_match_a_naive_loop(seed):
  tokens, lengths = _batch(seed)
  r = 4
  ids, mask = similar_windows(jnp.asarray(tokens), jnp.asarray(lengths), r)
  want_ids, want_mask = _naive(tokens, lengths, r)
  np.testing.assert_array_equal(np.asarray(mask), want_mask)
  np.testing.assert_array_equal(
    np.where(want_mask, np.asarray(ids), -1), np.where(want_mask, want_ids, -1)
  )


def test_similar_windows_hold_distinct_references_and_own_first():
  tokens, lengths = _batch(3, b=4, c=4, vocab=6)  # small vocabulary: many near-ties
  b, c, _ = tokens.shape
  r = 5
  ids, mask = map(np.asarray, similar_windows(jnp.asarray(tokens), jnp.asarray(lengths), r))
  flat = [tuple(tokens[i // c, i % c, : lengths[i // c, i % c]]) for i in range(b * c)]
  for bi in range(b):
    for ci in range(c):
      own = flat[bi * c + ci]
      if not own:
        assert not mask[bi, ci].any(), "a chunk without a reference reads nothing"
        continue
      assert mask[bi, ci, 0] and ids[bi, ci, 0] == bi * c + ci
      read = [flat[j] for j, m in zip(ids[bi, ci], mask[bi, ci]) if m]
      assert all(read), "never an empty reference"
      assert len(set(read)) == len(read), f"a reference twice in chunk {(bi, ci)}'s window"
      distinct_others = len({ref for ref in flat if ref and ref != own})
      assert len(read) == 1 + min(r - 1, distinct_others)


def test_stage_rejects_an_unknown_window():
  with pytest.raises(ValueError, match="memory_window='nearest'"):
    StageSpec(name="continual", steps=1, peak_lr=1e-3, memory_window="nearest")


def test_memory_from_batch_reads_the_similar_window():
  # Each window slot holds the encoding of the reference similar_windows names: the same
  # keys as the paper window's slot that reads that reference.
  config = tiny_config()
  cfg = model_config_from(config.model)
  params = Transformer(cfg).init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  params = jax.tree_util.tree_map(
    lambda x: x.unbox() if hasattr(x, "unbox") else x, params, is_leaf=lambda x: hasattr(x, "unbox")
  )
  rng = np.random.default_rng(0)
  b, c, n = 2, 3, cfg.memory.ref_len
  tokens = jnp.asarray(rng.integers(5, cfg.vocab_size, size=(b, c, n)), jnp.int32)
  lengths = jnp.asarray(rng.integers(4, n + 1, size=(b, c)), jnp.int32)
  paper = memory_from_batch(params, cfg, tokens, lengths, window="chunks")
  similar = memory_from_batch(params, cfg, tokens, lengths, window="similar")
  ids, mask = map(np.asarray, similar_windows(tokens, lengths, cfg.memory.refs_per_chunk))
  # The paper window's last slot of chunk (bi, ci) is that chunk's own reference.
  own_k = np.asarray(paper.keys_LxBxCxRxKxMxD)[:, :, :, -1]  # [L, B, C, K, M, D]
  sim_k = np.asarray(similar.keys_LxBxCxRxKxMxD)
  for bi in range(b):
    for ci in range(c):
      for slot in range(cfg.memory.refs_per_chunk):
        if mask[bi, ci, slot]:
          src = ids[bi, ci, slot]
          np.testing.assert_array_equal(sim_k[:, bi, ci, slot], own_k[:, src // c, src % c])
  assert not np.asarray(similar.mask_BxCxRxM)[~mask].any()


def test_train_step_runs_with_similar_windows():
  from m3jax import sharding
  from m3jax.train.optimizer import make_optimizer
  from m3jax.train.state import create_train_state
  from m3jax.train.step import make_train_step
  from tests.train.test_step import _batch_iter

  config = tiny_config(shallow=True)
  cfg = model_config_from(config.model)
  stage = train_config_from(config.train).stages[1]
  stage = stage.__class__(**{**stage.__dict__, "memory_window": "similar"})
  mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  tx = make_optimizer(config.train)
  with sharding.activate(mesh, config.sharding.rules):
    state, shardings = create_train_state(cfg, tx, mesh, config.sharding.rules, jax.random.key(0))
    step = make_train_step(
      cfg, stage, tx, mesh=mesh, rules=config.sharding.rules, state_shardings=shardings
    )
    it = _batch_iter(config, stage)
    _, metrics = step(state, next(it), np.float32(1e-3))
  assert np.isfinite(float(metrics["loss"]))
