"""The task layer: one scorer, one loss, one memory arranger, one QA format."""

import jax.numpy as jnp
import numpy as np
import pytest

from m3jax import task
from m3jax.model.transformer import Transformer
from tests.inference.fakes import FakeBank, tiny_model


def test_gather_memory_retrieves_each_distinct_query_once():
  cfg, _ = tiny_model()
  bank = FakeBank(cfg)
  a = task.ChunkQuery(0, 0, np.array([5, 6, 7]))
  b = task.ChunkQuery(1, 0, np.array([8, 9]))
  got = task.gather_memory(bank, [[a, a, None], [None, b, a]])
  assert len(bank.calls) == 1 and bank.calls[0] == [a, b]
  np.testing.assert_array_equal(got.index_BxC, [[1, 1, 0], [0, 2, 1]])
  want = bank.memory_for_ids(np.stack([bank.ids_for(a.tokens), bank.ids_for(b.tokens)]))
  for (i, j), n in {(0, 0): 0, (0, 1): 0, (1, 1): 1, (1, 2): 0}.items():
    np.testing.assert_array_equal(
      got.memory.keys_LxBxCxRxKxMxD[:, i, j], want.keys_LxBxCxRxKxMxD[:, n, 0]
    )
    np.testing.assert_array_equal(got.memory.mask_BxCxRxM[i, j], want.mask_BxCxRxM[n, 0])
  assert not got.memory.mask_BxCxRxM[0, 2].any() and not got.memory.mask_BxCxRxM[1, 0].any()
  assert task.gather_memory(bank, [[None, None]]) is None


@pytest.mark.integration
def test_span_logprob_and_loss_against_a_float64_reference():
  cfg, params = tiny_model(init_std=0.02)
  rng = np.random.default_rng(0)
  tokens = rng.integers(5, cfg.vocab_size, (3, 2 * cfg.memory.chunk_len)).astype(np.int32)
  start, end = np.array([1, 4, 10]), np.array([32, 20, 11])
  logits = np.asarray(Transformer(cfg).apply({"params": params}, jnp.asarray(tokens)), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
  logp -= logits.max(-1, keepdims=True)
  tok = np.take_along_axis(logp[:, :-1], tokens[:, 1:, None], -1)[..., 0]  # [B, T-1]
  want = [tok[i, s - 1 : e - 1].sum() for i, (s, e) in enumerate(zip(start, end))]
  got = task.LMTask.of(cfg).span_logprob(
    params, jnp.asarray(tokens), jnp.asarray(start), jnp.asarray(end), None
  )
  np.testing.assert_allclose(got, want, rtol=1e-5)  # float32 sums of ~30 terms
  mask = np.zeros(tokens.shape, np.float32)
  mask[:, :-1] = 1
  loss, aux = task.cross_entropy(
    jnp.asarray(logits[:, :], jnp.float32),
    jnp.asarray(np.concatenate([tokens[:, 1:], tokens[:, :1]], 1)),
    jnp.asarray(mask),
  )
  assert float(aux["tokens"]) == tok.size
  assert float(loss) == pytest.approx(-tok.mean(), rel=1e-5)
  # Weights (data.memory_swap_loss_weight): the loss is the weighted mean, aux "ce" and
  # "tokens" stay the plain mean and count of the weight > 0 tokens.
  w = mask.copy()
  w[0, 3:9], w[1, :4] = 3.0, 0.0
  w_pad = w[:, :-1]  # the weights of tok's positions
  loss_w, aux_w = task.cross_entropy(
    jnp.asarray(logits, jnp.float32),
    jnp.asarray(np.concatenate([tokens[:, 1:], tokens[:, :1]], 1)),
    jnp.asarray(w),
  )
  assert float(loss_w) == pytest.approx(-(tok * w_pad).sum() / w_pad.sum(), rel=1e-5)
  assert float(aux_w["ce"]) == pytest.approx(-tok[w_pad > 0].mean(), rel=1e-5)
  assert float(aux_w["tokens"]) == (w_pad > 0).sum()
  assert task.LMTask.of(cfg) is task.LMTask.of(cfg)


def test_one_qa_format():
  from m3jax.data import synthetic
  from m3jax.evaluate import qa

  assert qa.qa_prompt is task.qa_prompt and synthetic.qa_text is task.qa_text
  assert task.qa_text("Who?", "Zorblat") == "Q: Who? A: Zorblat"
