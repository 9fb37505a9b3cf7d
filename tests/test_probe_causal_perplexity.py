"""experiments/probe_causal_perplexity.py: per-chunk losses that add up to the reported
perplexities, and chunks grouped by whether the causal retrieval matches the own-text one."""

import math

import numpy as np
import pytest

from experiments import probe_causal_perplexity as probe
from m3jax.evaluate import perplexity as ppl
from tests.inference.fakes import FakeBank, tiny_model


def test_chunk_losses_add_up_to_each_reported_perplexity():
  cfg, params = tiny_model(init_std=0.02)
  L = cfg.memory.chunk_len
  rng = np.random.default_rng(0)
  seqs = [rng.integers(5, cfg.vocab_size, n).astype(np.int32) for n in (3 * L, 2 * L + 5, 3 * L)]
  nll, count, _ = probe.chunk_losses(cfg, params, seqs, FakeBank(cfg), batch_size=2)
  assert count.sum() == sum(len(s) - 1 for s in seqs)  # every scored token once
  want = {
    "no_memory": ppl.perplexity(cfg, params, seqs),
    "causal": ppl.perplexity(cfg, params, seqs, FakeBank(cfg)),
    "own_text": ppl.perplexity(cfg, params, seqs, FakeBank(cfg), retrieval="own_text"),
  }
  for k, name in enumerate(probe.CONDITIONS):
    # float32 log-probs summed per chunk instead of per row: equal to float32 rounding.
    assert nll[..., k].sum() / count.sum() == pytest.approx(math.log(want[name]), rel=1e-5)


def test_a_chunk_is_same_when_the_previous_chunk_retrieves_its_own_reference():
  cfg, params = tiny_model(init_std=0.02)
  L = cfg.memory.chunk_len
  a, b = np.arange(10, 10 + L, dtype=np.int32), np.arange(100, 100 + L, dtype=np.int32)
  bank = FakeBank(cfg)
  assert bank.ids_for(a)[0] != bank.ids_for(b)[0]  # the fake retrieves them apart
  # Chunk 1 repeats chunk 0 (its causal query is its own text); chunk 2 is new text.
  _, _, same = probe.chunk_losses(cfg, params, [np.concatenate([a, a, b])], bank)
  assert same.tolist() == [[False, True, False]]


def test_summarize_groups_chunks_from_the_second_on():
  nll = np.zeros((1, 3, 3))
  nll[0, 0] = [9.0, 9.0, 9.0]  # chunk 0: left out of every group
  nll[0, 1] = [2.0, 1.0, 1.0]  # same reference: memory helps
  nll[0, 2] = [2.0, 4.0, 1.0]  # another reference: the causal memory hurts
  count = np.array([[3, 2, 2]])
  same = np.array([[False, True, False]])
  got = probe.summarize(nll, count, same)
  assert got["same"] == {"chunks": 1, "tokens": 2, "no_memory": 1.0, "causal": 0.5, "own_text": 0.5}
  assert got["other"]["causal"] == 2.0 and got["other"]["no_memory"] == 1.0
  assert got["all_chunks_from_1"]["tokens"] == 4 and got["all_chunks_from_1"]["causal"] == 1.25
  assert got["share_same"] == 0.5
