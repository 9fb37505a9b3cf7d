"""MC scoring == a naive per-choice loop; RAG and memory share retrieved ids; EM plumbing."""

import jax.numpy as jnp
import numpy as np
import pytest

from m3jax import task
from m3jax.evaluate import qa
from m3jax.inference import memory_sources
from m3jax.inference.generate import ChunkQuery, chunk_query_tokens
from m3jax.model.memory_kv import MemoryKV
from m3jax.model.transformer import Transformer
from tests.evaluate import world
from tests.inference.fakes import FakeBank, tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg, params = tiny_model()
  vocab, refs, bank, feeder = world.build(cfg, params, tmp_path_factory.mktemp("b") / "bank")
  return cfg, params, vocab, refs, bank, feeder


def _naive_ll(cfg, params, prompt, answer, bank):
  """One choice at a time: full forward, memory per chunk by the scoring rule."""
  L = cfg.memory.chunk_len
  seq = np.concatenate([prompt, answer])
  n_prompt = -(-len(prompt) // L)
  mem = None
  if bank is not None:
    ids = [
      bank.ids_for(chunk_query_tokens(prompt, len(prompt), min(c, n_prompt - 1), L))
      for c in range(-(-len(seq) // L))
    ]
    m = bank.memory_for_ids(np.stack(ids))
    mem = MemoryKV(
      jnp.swapaxes(m.keys_LxBxCxRxKxMxD, 1, 2),
      jnp.swapaxes(m.values_LxBxCxRxKxMxD, 1, 2),
      jnp.swapaxes(m.mask_BxCxRxM, 0, 1),
    )
  logits = Transformer(cfg).apply({"params": params}, jnp.asarray(seq[None]), mem)[0]
  logp = np.asarray(
    logits
    - jnp.log(jnp.sum(jnp.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True))
    - logits.max(-1, keepdims=True)
  )
  return sum(logp[t - 1, seq[t]] for t in range(len(prompt), len(seq)))


@pytest.mark.integration
@pytest.mark.parametrize("with_memory", [False, True])
def test_choice_scores_equal_naive_loop(with_memory):
  cfg, params = tiny_model()
  rng = np.random.default_rng(0)
  prompts = [np.array([cfg.bos_id] + list(rng.integers(5, 500, n)), np.int32) for n in (6, 20)]
  choices = [
    [rng.integers(5, 500, k).astype(np.int32) for k in (1, 3, 12)],
    [rng.integers(5, 500, k).astype(np.int32) for k in (2, 5)],
  ]
  bank = FakeBank(cfg) if with_memory else None
  got = qa.choice_log_likelihoods(cfg, params, prompts, choices, bank, batch_size=3)
  for q in range(2):
    want = [_naive_ll(cfg, params, prompts[q], c, bank) for c in choices[q]]
    # float32 sums over <= 12 tokens of log-probs ~ -6: 1e-4 absolute is ample.
    np.testing.assert_allclose(got[q], want, atol=1e-4, rtol=1e-5)


def test_rag_and_memory_use_the_same_ids_and_rag_format(setup):
  cfg, params, vocab, refs, bank, feeder = setup
  source = memory_sources.RetrievedMemory(feeder, vocab)
  items = world.qa_items()[:4]
  text_of = {r.id: r.text for r in refs}
  conds = qa.make_conditions(
    vocab,
    cfg.memory.chunk_len,
    retrieved=source,
    feeder=feeder,
    ref_text=text_of.__getitem__,
    ref_pool=list(text_of),
    names=["memory", "rag"],
  )
  m_texts, m_fn, m_ids = conds["memory"](items)
  r_texts, r_fn, r_ids = conds["rag"](items)
  assert r_fn is None and m_fn is source
  np.testing.assert_array_equal(m_ids, r_ids)
  # The generator's own retrieval for the prompt's first chunk returns those ids too.
  toks = [qa.encode_prompt(vocab, t) for t in m_texts]
  _, ids = source(
    [
      ChunkQuery(i, 0, chunk_query_tokens(t, len(t), 0, cfg.memory.chunk_len))
      for i, t in enumerate(toks)
    ]
  )
  np.testing.assert_array_equal(ids, m_ids)
  lines = r_texts[0].split("\n")
  kept = [i for i in r_ids[0] if i is not None]
  assert lines[0] == task.RAG_HEADER_REFERENCES and lines[-2] == task.RAG_HEADER_QUESTION
  assert lines[1:-2] == [text_of[i] for i in kept] and lines[-1] == m_texts[0]
  assert items[0]["gold_ref_id"] in kept  # the retrieval itself works


@pytest.mark.integration
def test_evaluate_qa_runs_every_condition(setup):
  cfg, params, vocab, refs, bank, feeder = setup
  source = memory_sources.RetrievedMemory(feeder, vocab)
  conds = qa.make_conditions(
    vocab,
    cfg.memory.chunk_len,
    retrieved=source,
    feeder=feeder,
    ref_text={r.id: r.text for r in refs}.__getitem__,
    ref_pool=[r.id for r in refs],
  )
  out = qa.evaluate_qa(
    cfg, params, vocab, world.qa_items()[:5], conds, max_new_tokens=4, batch_size=4, progress=False
  )
  assert set(out["exact_match"]) == set(qa.CONDITIONS) == set(out["multiple_choice"])
  for v in out["multiple_choice"].values():
    assert 0.0 <= v <= 1.0
  assert len(out["retrieved_ids"]["memory"]) == 5
  for cond, by_attr in out["multiple_choice_by_attribute"].items():
    assert set(by_attr) == {"job"}
    n = sum(v["count"] for v in by_attr.values())
    mean = sum(v["accuracy"] * v["count"] for v in by_attr.values()) / n
    assert abs(mean - out["multiple_choice"][cond]) < 1e-9  # a partition of the items
  assert out["retrieved_ids"]["memory"] == out["retrieved_ids"]["rag"]


def test_by_attribute_groups_mc_hits_and_skips_items_without_one():
  items = [
    {"attribute": "color"},
    {"attribute": "year"},
    {"attribute": "color"},
    {"question": "no attribute"},
    {"attribute": "color"},
  ]
  preds = [
    {"mc_correct": True},
    {"mc_correct": False},
    {"mc_correct": False},
    {"mc_correct": True},
    {},
  ]  # the last has no choices
  assert qa.by_attribute(items, preds) == {
    "color": {"accuracy": 0.5, "count": 2},
    "year": {"accuracy": 0.0, "count": 1},
  }
  assert qa.by_attribute(items[3:4], preds[3:4]) == {}


def test_answer_normalization_and_errors():
  assert qa.normalize_answer("  The Baker. ") == "baker"
  assert qa.first_answer(" baker\nQ: next") == " baker"
  from m3jax.data.vocab import ByteVocab

  with pytest.raises(ValueError, match="exceeds the context budget"):
    qa.encode_prompt(ByteVocab(), "x" * 100, max_len=50)
  with pytest.raises(ValueError, match="no QA items"):
    qa.evaluate_qa(None, None, ByteVocab(), [], {})


class _CharVocab:
  """One token per character: an answer of n characters is n + 1 tokens with its space."""

  bos_id = 1

  def encode(self, text):
    return [ord(ch) for ch in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


class _Oracle:
  """A generator that knows every answer: each row generates " <answer>\\n" cut at the
  budget it is given, so exact match measures the budget alone."""

  def __init__(self, answers):
    self.answers, self.budgets = answers, []

  def generate(self, toks, max_new_tokens, memory_fn=None):
    self.budgets.append(max_new_tokens)
    rows = [[ord(ch) for ch in f" {a}\n"][:max_new_tokens] for a in self.answers[: len(toks)]]
    return type("Result", (), {"tokens": rows})()


def test_answer_token_budget_fits_the_longest_answer_and_its_break():
  vocab = _CharVocab()
  items = [{"answer": "ab"}, {"answer": "abcdef"}]  # 3 and 7 tokens with the space
  assert qa.answer_token_budget(vocab, items, 0) == (8, 0)
  assert qa.answer_token_budget(vocab, items, 8) == (8, 0)
  assert qa.answer_token_budget(vocab, items, 7) == (7, 1)  # no room for the break
  assert qa.answer_token_budget(vocab, items, 3) == (3, 2)
  with pytest.raises(ValueError, match="0 for auto"):
    qa.answer_token_budget(vocab, items, -1)


@pytest.mark.parametrize("budget, exact", [(0, 1.0), (31, 1.0), (12, 0.5)])
def test_exact_match_is_never_cut_off_by_an_auto_budget(budget, exact):
  """Answers longer than a fixed budget cannot match; the auto budget holds them all."""
  cfg, params = tiny_model()
  answers = ["short", "a long invented two-word name"]  # 6 and 30 tokens with the space
  items = [{"question": f"q{i}", "answer": a} for i, a in enumerate(answers)]
  gen = _Oracle(answers)
  conds = {"no_memory": lambda part: ([it["question"] for it in part], None, None)}
  out = qa.evaluate_qa(
    cfg,
    params,
    _CharVocab(),
    items,
    conds,
    max_new_tokens=budget,
    batch_size=2,
    generator=gen,
    progress=False,
  )
  assert out["exact_match"]["no_memory"] == exact
  assert gen.budgets == [out["max_new_tokens"]] == [budget or 31]
  assert out["answers_over_budget"] == (1 if exact < 1 else 0)
