"""Value kinds are inferred from the answers alone; per-kind accuracy partitions the items."""

from m3jax.evaluate import kinds


def _items(attr, answers):
  return [
    {"attribute": attr, "answer": a, "question": f"{attr} {i}?"} for i, a in enumerate(answers)
  ]


def test_value_kinds_from_answers():
  items = (
    _items("born", ["1921", "1850", "1921", "2,000"])
    + _items("founder", ["Zorblat", "Quenby", "Drimo", "Feltra", "Zorblat"])
    + _items("color", ["red", "blue", "red", "red", "blue", "green"])
    + [{"question": "no attribute", "answer": "x"}]
  )
  assert kinds.value_kinds(items) == {"born": "number", "founder": "name", "color": "closed_list"}
  # An explicit value_kind wins; a sample is classified with the whole file's kinds.
  tagged = [dict(items[0], value_kind="name")] + items[1:]
  assert kinds.item_kinds(tagged)[0] == "name"
  sample = items[9:11]  # two distinct colors look like names on their own ...
  assert kinds.item_kinds(sample) == ["name", "name"]
  assert kinds.item_kinds(sample, kinds.value_kinds(items)) == ["closed_list"] * 2


def test_by_kind_counts_each_item_once():
  items = _items("born", ["1921", "1850"]) + _items("color", ["red", "red", "red"])
  preds = [
    {"correct": True, "mc_correct": True},
    {"correct": False, "mc_correct": True},
    {"correct": False, "mc_correct": False},
    {"correct": True, "mc_correct": True},
    {"correct": False},
  ]  # the last has no choices
  got = kinds.by_kind(items, preds)
  assert got == {
    "number": {"exact_match": 0.5, "multiple_choice": 1.0, "count": 2},
    "closed_list": {"exact_match": 1 / 3, "multiple_choice": 0.5, "count": 3},
  }
