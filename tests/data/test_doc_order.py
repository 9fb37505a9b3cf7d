"""m3jax.data.doc_order: look-alike references grouped, and training documents ordered by
the group of the reference they are most like (data.doc_order="similar")."""

import json

import numpy as np
import pytest

from m3jax.data import doc_order, sparse_embedder

KINDS = {
  "river": "The {n} River flows over gravel beds and runs many kilometres to the sea.",
  "comet": "Comet {n} shows a silver tail and returns every twenty years near dawn.",
}
NAMES = [f"{a}{b}" for a in ("Bar", "Kel", "Mor", "Tis") for b in ("ov", "un", "ax", "ep")]


def _world():
  """8 references of each kind (each with its own name), and two documents per reference
  that repeat the kind's words and the name, in an order that alternates kinds."""
  refs, kind_of = [], []
  for i, name in enumerate(NAMES):
    kind = list(KINDS)[i % 2]
    refs.append(KINDS[kind].format(n=name))
    kind_of.append(kind)
  docs, doc_kind = [], []
  for rep in ("Travellers say", "Old books say"):
    for i, name in enumerate(NAMES):
      words = "river flows kilometres" if kind_of[i] == "river" else "comet tail returns"
      docs.append(f"{rep} that {name} {words}.")
      doc_kind.append(kind_of[i])
  embedder = sparse_embedder.make("sparse_tfidf", 1)
  embedder.fit(refs)
  return embedder, refs, kind_of, docs, doc_kind


def test_groups_are_look_alikes_of_at_most_size():
  embedder, refs, kind_of, _, _ = _world()
  emb = sparse_embedder.embed_references(embedder, refs)
  group = doc_order.reference_groups(embedder, refs, emb, 4, np.random.default_rng(0))
  assert group.shape == (len(refs),) and (group >= 0).all()
  sizes = np.bincount(group)
  assert sizes.max() <= 4 and sizes.sum() == len(refs)
  for g in np.unique(group):
    assert len({kind_of[i] for i in np.flatnonzero(group == g)}) == 1, "a group mixes kinds"
  assert len(np.unique(group)) == 4  # 8 of each kind fill two groups of 4 each
  with pytest.raises(ValueError, match="size"):
    doc_order.reference_groups(embedder, refs, emb, 0, np.random.default_rng(0))


def test_nearest_is_best_first_and_minus_one_without_a_shared_word():
  embedder, refs, _, _, _ = _world()
  emb = sparse_embedder.embed_references(embedder, refs)
  top = doc_order.nearest(embedder, [refs[5], "zzz qqq"], emb, 3)
  assert top[0, 0] == 5 and len(set(top[0].tolist())) == 3
  assert (top[1] == -1).all()


def test_similar_order_puts_a_groups_documents_together():
  embedder, refs, _, docs, doc_kind = _world()
  docs = docs + ["zzz qqq"]  # shares no word with any reference: a group of its own
  doc_kind = doc_kind + ["none"]
  order = doc_order.similar_order(embedder, docs, refs, 4, seed=0)
  assert sorted(order.tolist()) == list(range(len(docs)))
  kinds = [doc_kind[i] for i in order]
  changes = sum(a != b for a, b in zip(kinds, kinds[1:]))
  # Four groups of one kind each and the lone document: at most 4 changes of kind along
  # the stream (as given, the kinds alternate: 32 changes).
  assert changes <= 4, kinds
  given = sum(a != b for a, b in zip(doc_kind, doc_kind[1:]))
  assert given >= 30
  np.testing.assert_array_equal(order, doc_order.similar_order(embedder, docs, refs, 4, seed=0))
  assert not np.array_equal(order, doc_order.similar_order(embedder, docs, refs, 4, seed=1))


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line)["text"] for line in f if line.strip()]


def test_prepared_stream_is_the_same_documents_reordered(tmp_path, tiny_data):
  """Through prepare_data on the tiny world: the training documents are those of the
  as-given run in another order, the vocabulary is the same file, and the data hash (the
  prepared folder) differs."""
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import prepare_data, sources_key
  from tests.data.conftest import tiny_data_cfg

  given_cfg, given = tiny_data
  cfg = tiny_data_cfg(tmp_path / "similar", doc_order="similar", doc_group_size=4)
  paths = prepare_data(cfg)
  a, b = _jsonl(given.train_text), _jsonl(paths.train_text)
  assert sorted(a) == sorted(b) and a != b
  with open(given.vocab_model, "rb") as f, open(paths.vocab_model, "rb") as g:
    assert f.read() == g.read()
  assert sources_key(data_config_from(cfg)) != sources_key(data_config_from(given_cfg))
  with pytest.raises(ValueError, match="doc_order"):
    data_config_from(tiny_data_cfg(tmp_path / "bad", doc_order="sorted"))
