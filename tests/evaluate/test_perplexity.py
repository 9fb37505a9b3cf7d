"""Perplexity with memory is causal: retrieval never sees the tokens it scores."""

import numpy as np
import pytest

from m3jax.evaluate import perplexity as ppl
from tests.inference.fakes import FakeBank, tiny_model


def _sequences(cfg, lengths):
  """Rows whose every position holds a distinct token id, so a query's tokens name the
  positions they were read from."""
  seqs, nxt = [], 5
  for n in lengths:
    seqs.append(np.arange(nxt, nxt + n, dtype=np.int32))
    nxt += n
  assert nxt < cfg.vocab_size
  return seqs


@pytest.mark.integration
def test_causal_perplexity_never_retrieves_with_scored_tokens():
  cfg, params = tiny_model(init_std=0.02)
  L = cfg.memory.chunk_len
  seqs = _sequences(cfg, [3 * L, 2 * L + 5, L - 3, 3 * L])
  where = {int(t): (r, p) for r, s in enumerate(seqs) for p, t in enumerate(s)}
  bank = FakeBank(cfg)
  ppl.perplexity(cfg, params, seqs, bank, batch_size=2)
  queries = [q for call in bank.calls for q in call]
  served = {(q.row, q.chunk) for q in queries}
  # Every chunk after the first gets a query; the first chunk of every row gets none.
  expect = {(r, c) for r, s in enumerate(seqs) for c in range(1, -(-len(s) // L))}
  assert served == expect
  for q in queries:
    rows, pos = zip(*(where[int(t)] for t in q.tokens))
    assert set(rows) == {q.row}
    assert max(pos) < q.chunk * L, (q.row, q.chunk, max(pos))
    assert list(pos) == list(range((q.chunk - 1) * L, q.chunk * L))  # all of chunk c-1


@pytest.mark.integration
def test_own_text_oracle_reads_the_scored_chunk_and_differs():
  cfg, params = tiny_model(init_std=0.02)
  L = cfg.memory.chunk_len
  seqs = _sequences(cfg, [3 * L, 2 * L])
  bank = FakeBank(cfg)
  oracle = ppl.perplexity(cfg, params, seqs, bank, retrieval="own_text")
  q = [q for call in bank.calls for q in call]
  assert {(x.row, x.chunk) for x in q} == {(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)}
  assert all(np.array_equal(x.tokens, seqs[x.row][x.chunk * L : (x.chunk + 1) * L]) for x in q)
  causal = ppl.perplexity(cfg, params, seqs, FakeBank(cfg))
  plain = ppl.perplexity(cfg, params, seqs)
  assert len({round(oracle, 6), round(causal, 6), round(plain, 6)}) == 3
  with pytest.raises(ValueError, match="retrieval"):
    ppl.perplexity(cfg, params, seqs, bank, retrieval="future")


def test_causal_memory_only_changes_chunks_after_the_first():
  """Chunk 0 reads no memory: its token NLLs equal the memory-free model's exactly."""
  cfg, params = tiny_model(init_std=0.02)
  L = cfg.memory.chunk_len
  one_chunk = _sequences(cfg, [L, L - 7])
  assert ppl.perplexity(cfg, params, one_chunk, FakeBank(cfg)) == pytest.approx(
    ppl.perplexity(cfg, params, one_chunk), rel=1e-6
  )
