"""A written world's three BYO files as the loader and the QA split see them (the world
generators' tests: experiments/make_world_*.py)."""

from m3jax.data import cloze, qa_split, sources


def assert_loadable(out, refs: list, train: list, qa: list, num_refs: int) -> list:
  """The loader accepts ``out``'s files (the QA against the reference ids), they hold what
  the generator returned, no training text asks a question (so data.user_qa_train="auto"
  splits the QA file) and both halves of the split exist. Returns the loaded QA items."""
  got = sources.read_jsonl(str(out / "references.jsonl"), "references")
  assert len(got) == len(refs) == num_refs
  assert len(sources.read_jsonl(str(out / "train.jsonl"), "train_text")) == len(train)
  ids = {r["id"] for r in got}
  items = sources.read_jsonl(str(out / "qa.jsonl"), "qa", ref_ids=ids)  # raises if invalid
  assert len(items) == len(qa) > 0
  assert all(set(r) == {"id", "text"} for r in refs)
  assert all(set(d) == {"text"} for d in train)
  assert not cloze.text_has_questions(str(out / "train.jsonl"))
  trained, evaluated = qa_split.split_by_reference(items, 0.5, 0)
  assert trained and evaluated
  return items
