"""Few-shot QA: demonstrations never give away the asked fact, and never steer retrieval."""

import numpy as np
import pytest

from m3jax.evaluate import fewshot, qa
from m3jax.inference import memory_sources
from m3jax.task import ChunkQuery, chunk_query_tokens
from tests.evaluate import world
from tests.inference.fakes import tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  cfg, params = tiny_model()
  vocab, refs, bank, feeder = world.build(cfg, params, tmp_path_factory.mktemp("b") / "bank")
  return cfg, params, vocab, refs, bank, feeder


def test_demonstrations_are_about_other_references_and_deterministic():
  items = world.qa_items()
  got = fewshot.demonstrations(items, items, 3, seed=1)
  for it, prefix in zip(items, got):
    lines = prefix.splitlines()
    assert len(lines) == 3
    for line in lines:
      q, a = line.rsplit(" A: ", 1)
      demo = next(p for p in items if qa.qa_prompt(p["question"]) == q + " A:")
      assert a == demo["answer"] and demo["gold_ref_id"] != it["gold_ref_id"]
  # The draw depends on the question, not on the batch the item is evaluated in.
  assert fewshot.demonstrations(items[5:7], items, 3, seed=1) == got[5:7]
  assert fewshot.demonstrations(items, items, 0) == [""] * len(items)
  with pytest.raises(ValueError, match="eval.few_shot"):
    fewshot.demonstrations(items[:1], items[:2], 3)


def test_few_shot_prompts_keep_the_question_retrieval(setup):
  cfg, params, vocab, refs, bank, feeder = setup
  items = world.qa_items()[:6]
  source = memory_sources.RetrievedMemory(feeder, vocab)
  text_of = {r.id: r.text for r in refs}
  kw = dict(
    retrieved=source,
    feeder=feeder,
    ref_text=text_of.__getitem__,
    ref_pool=list(text_of),
    names=["memory", "rag"],
  )
  demos = lambda batch: fewshot.demonstrations(batch, world.qa_items(), 4)
  few = qa.make_conditions(vocab, cfg.memory.chunk_len, demos=demos, **kw)
  f_texts, f_fn, f_ids = few["memory"](items)
  # Prompts end with the question after the demonstrations, and span several chunks.
  questions = [qa.qa_prompt(it["question"]) for it in items]
  for q, f, d in zip(questions, f_texts, demos(items)):
    assert f == d + q
    assert len(qa.encode_prompt(vocab, f)) > cfg.memory.chunk_len
  # The ids are those of one query made of the whole question (not of any demonstration).
  z_ids = source.retrieve_ids(
    [ChunkQuery(i, 0, qa.encode_prompt(vocab, q)) for i, q in enumerate(questions)]
  )
  assert [row[0] for row in z_ids] == [it["gold_ref_id"] for it in items]
  np.testing.assert_array_equal(f_ids, z_ids)
  # Every chunk of the prompt (and any decoded chunk) retrieves what the question does.
  toks = [qa.encode_prompt(vocab, t) for t in f_texts]
  L = cfg.memory.chunk_len
  queries = [
    ChunkQuery(i, c, chunk_query_tokens(t, len(t), c, L))
    for i, t in enumerate(toks)
    for c in range(-(-len(t) // L))
  ]
  _, ids = f_fn(queries)
  np.testing.assert_array_equal(ids, z_ids[[q.row for q in queries]])
  # RAG: header1 + refs + header2 + demonstrations + question, with the same ids.
  r_texts, r_fn, r_ids = few["rag"](items)
  np.testing.assert_array_equal(r_ids, z_ids)
  assert r_fn is None and all(t.endswith(f) for t, f in zip(r_texts, f_texts))
