"""RAG reads the retrieved references that fit its prompt budget (eval.rag_max_tokens):
by default the rows the model was trained on, so no RAG prompt reaches positions the
model never attended to."""

import numpy as np
import pytest

from m3jax.evaluate import evaluation, qa
from m3jax.evaluate.report import EvalConfig
from m3jax.inference import memory_sources, rag
from tests.evaluate import world
from tests.inference.fakes import tiny_model


def _words(text: str) -> int:
  return len(text.split())


def test_the_longest_ranked_prefix_that_fits_and_never_none():
  rng = np.random.default_rng(0)
  for _ in range(200):
    refs = [" ".join(["w"] * int(n)) for n in rng.integers(1, 12, size=rng.integers(1, 6))]
    prompt = "Q: who A:"
    budget = int(rng.integers(1, 60))
    # Naive: every prefix length, the largest whose whole prompt is within the budget.
    sizes = [k for k in range(1, len(refs) + 1) if _words(rag.rag_text(refs[:k], prompt)) <= budget]
    want = max(sizes, default=1)
    assert rag.references_that_fit(refs, prompt, _words, budget) == want
  assert rag.references_that_fit(["a b", "c"], "q", _words, None) == 2  # no budget
  assert rag.references_that_fit([], "q", _words, 3) == 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg, params = tiny_model()
  vocab, refs, bank, feeder = world.build(cfg, params, tmp_path_factory.mktemp("b") / "bank")
  return cfg, vocab, refs, feeder


def test_the_rag_condition_reads_only_what_fits(setup):
  cfg, vocab, refs, feeder = setup
  items = world.qa_items()[:6]
  source = memory_sources.RetrievedMemory(feeder, vocab)
  text_of = {r.id: r.text for r in refs}
  kw = dict(retrieved=source, feeder=feeder, ref_text=text_of.__getitem__, names=["rag"])
  full_texts, _, full_ids = qa.make_conditions(vocab, cfg.memory.chunk_len, **kw)["rag"](items)
  assert cfg.memory.refs_per_chunk >= 3 and all(
    len(r) == cfg.memory.refs_per_chunk for r in full_ids
  )
  # A budget that holds exactly the first two retrieved references of item 0.
  first = [i for i in full_ids[0] if i is not None]
  question = qa.qa_prompt(items[0]["question"])
  budget = len(qa.encode_prompt(vocab, rag.rag_text([text_of[i] for i in first[:2]], question)))
  cond = qa.make_conditions(vocab, cfg.memory.chunk_len, rag_max_tokens=budget, **kw)["rag"]
  texts, fn, ids = cond(items)
  assert fn is None
  for it, text, row, full in zip(items, texts, ids, full_ids):
    read = [i for i in row if i is not None]
    assert read == [i for i in full if i is not None][: len(read)] and len(read) >= 1
    assert text == rag.rag_text([text_of[i] for i in read], qa.qa_prompt(it["question"]))
    assert len(qa.encode_prompt(vocab, text)) <= budget or len(read) == 1
    if len(read) < len(full):  # one more reference would not have fit
      more = [i for i in full if i is not None][: len(read) + 1]
      longer = rag.rag_text([text_of[i] for i in more], qa.qa_prompt(it["question"]))
      assert len(qa.encode_prompt(vocab, longer)) > budget
  assert [i for i in ids[0] if i is not None] == first[:2]


def test_the_default_budget_is_the_trained_rows_less_the_answer(setup):
  _, vocab, _, _ = setup
  items = world.qa_items()
  answer = max(len(vocab.encode(" " + it["answer"])) for it in items) + 1
  assert evaluation.rag_prompt_budget(EvalConfig(), 256, vocab, items) == 256 - answer
  assert evaluation.rag_prompt_budget(EvalConfig(), None, vocab, items) is None
  assert evaluation.rag_prompt_budget(EvalConfig(rag_max_tokens=-1), 256, vocab, items) is None
  assert evaluation.rag_prompt_budget(EvalConfig(rag_max_tokens=90), 256, vocab, items) == 90
  with pytest.raises(ValueError, match="eval.rag_max_tokens"):
    EvalConfig(rag_max_tokens=-2)


def test_the_table_says_how_many_references_rag_read():
  from m3jax.evaluate.report import table

  assert "rag: 1.500 retrieved references read per question, those that fit a 250-token" in (
    table({"rag_refs_read": 1.5, "rag_prompt_budget": 250})
  )
  assert "every one (no budget)" in table({"rag_refs_read": 5.0, "rag_prompt_budget": None})
  assert "rag:" not in table({"qa_exact_match": {"rag": 0.5}})
