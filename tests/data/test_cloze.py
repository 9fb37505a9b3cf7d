"""m3jax.data.cloze: knowledge-base cloze rows. Each item gaps one value of a fully swapped
reference and scores only that value; no original value reaches the text; the batch
stays a valid memory-stage batch; rows are a function of the seed."""

import numpy as np
import pytest

from m3jax.data import cloze
from m3jax.data.counterfactual import WordSwapper

Q, GAP, A, PAD, BOS = [20, 21], [22], [23, 24], 0, 3
TEMPLATE = (10, 11, 12)  # in every reference: template words


def _kb(n=30, length=9):
  """References "10 <name> 11 <v1> 12 <v2> <v2'> 10 <name>": the name occurs twice (never
  a gap), each value once; values are ids >= 100, unique to their reference."""
  rng = np.random.default_rng(0)
  refs = np.zeros((n, 12), np.int32)
  lengths = np.full(n, length, np.int32)
  for i in range(n):
    name, v1, v2, v3 = 100 + 4 * i + np.arange(4)
    refs[i, :length] = [10, name, 11, v1, 12, v2, v3, 10, name]
  lengths[rng.integers(n)] = 0  # an empty slot is never drawn
  return refs, lengths


def _builder(refs, lengths):
  starts = np.ones(400, bool)  # every token is a word (the byte-vocabulary case)
  words = WordSwapper(refs, lengths, starts, template_df=0.5)
  return cloze.KBCloze(refs, lengths, words, Q, GAP, A, PAD)


def test_an_item_gaps_one_swapped_value_and_scores_only_it():
  refs, lengths = _kb()
  kb = _builder(refs, lengths)
  rng = np.random.default_rng(1)
  ref = refs[3, : lengths[3]]
  tokens, mask, swapped = kb.item(ref, rng, chunk_len=24)
  assert tokens.shape == mask.shape == (24,)
  # Template words stay, every value is a fresh word.
  np.testing.assert_array_equal(swapped[[0, 2, 4, 7]], ref[[0, 2, 4, 7]])
  assert not set(swapped[[1, 3, 5, 6, 8]].tolist()) & set(ref.tolist())
  assert swapped[1] == swapped[8]  # consistent: the name is one word, twice
  scored = np.flatnonzero(mask)
  assert len(scored) == 1
  answer = tokens[scored[0]]
  assert answer in swapped and (swapped == answer).sum() == 1  # a value once in the ref
  assert answer != swapped[1]  # never the repeated name
  text = tokens[: scored[0]].tolist()
  assert text[:2] == Q and text[-2:] == A and GAP[0] in text
  assert answer not in text  # the gap: the context does not hold the answer
  assert (tokens[scored[0] + 1 :] == PAD).all()


def test_an_item_that_does_not_fit_or_has_no_single_value_is_none():
  refs, lengths = _kb()
  kb = _builder(refs, lengths)
  assert kb.item(refs[0, : lengths[0] or 9], np.random.default_rng(0), chunk_len=10) is None
  only_name = np.array([10, 150, 11, 150], np.int32)  # its one value occurs twice
  assert kb.item(only_name, np.random.default_rng(0), chunk_len=24) is None


def test_every_value_of_the_drawn_reference_is_replaced():
  """No item restates its reference's facts: each value (the name included) is swapped.
  Replacements are other references' value words drawn at random, so a row pairs names
  and values by chance, never by the knowledge base's facts."""
  refs, lengths = _kb()
  kb = _builder(refs, lengths)
  rng = np.random.default_rng(2)
  for n in np.flatnonzero(lengths):
    ref = refs[n, : lengths[n]]
    made = kb.item(ref, rng, chunk_len=24)
    assert made is not None
    tokens, _, swapped = made
    values = set(ref.tolist()) - set(TEMPLATE)
    assert not set(swapped.tolist()) & values
    assert not set(tokens.tolist()) & values


def test_each_chunk_reads_the_reference_its_answer_is_in():
  refs, lengths = _kb()
  kb = _builder(refs, lengths)
  row = kb.row(num_chunks=4, chunk_len=24, ref_len=12, rng=np.random.default_rng(3))
  targets, mask = row["targets"].reshape(4, 24), row["loss_mask"].reshape(4, 24)
  assert row["ref_tokens"].shape == (4, 12) and (row["ref_lengths"] == 9).all()
  for c in range(4):
    answer = targets[c][mask[c] > 0]
    ref = row["ref_tokens"][c, : row["ref_lengths"][c]]
    assert len(answer) == 1 and answer[0] in ref
    for other in range(4):  # fresh words: no other chunk's memory holds it
      if other != c:
        assert answer[0] not in row["ref_tokens"][other]


def _batch(b=4, chunks=2, chunk_len=24, ref_len=12):
  t = chunks * chunk_len
  targets = np.arange(b * t, dtype=np.int32).reshape(b, t) % 50 + 30
  inputs = np.concatenate([np.full((b, 1), BOS, np.int32), targets[:, :-1]], 1)
  return dict(
    inputs=inputs,
    targets=targets,
    loss_mask=np.ones((b, t), np.float32),
    ref_tokens=np.ones((b, chunks, ref_len), np.int32),
    ref_lengths=np.full((b, chunks), ref_len, np.int32),
  )


def test_replace_rows_keeps_the_batch_contract_and_is_seeded():
  refs, lengths = _kb()
  kb = _builder(refs, lengths)
  batch = _batch()
  assert kb.replace_rows(batch, 0.0, np.random.default_rng(0), BOS, 24) is batch
  out = kb.replace_rows(batch, 1.0, np.random.default_rng(4), BOS, 24)
  again = kb.replace_rows(batch, 1.0, np.random.default_rng(4), BOS, 24)
  for k in batch:
    assert out[k].shape == batch[k].shape and out[k].dtype == batch[k].dtype
    np.testing.assert_array_equal(out[k], again[k])
  np.testing.assert_array_equal(out["inputs"][:, 1:], out["targets"][:, :-1])
  assert (out["inputs"][:, 0] == BOS).all()
  assert out["loss_mask"].sum() == 4 * 2  # one scored answer token per chunk
  np.testing.assert_array_equal(batch["loss_mask"], 1.0)  # the input batch is untouched
  with pytest.raises(ValueError, match="rate"):
    kb.replace_rows(batch, 1.5, np.random.default_rng(0), BOS, 24)


def test_an_empty_knowledge_base_is_an_error():
  refs, _ = _kb()
  lengths = np.zeros(len(refs), np.int32)
  words = WordSwapper(*_kb(), np.ones(400, bool), template_df=0.5)
  with pytest.raises(ValueError, match="no reference"):
    cloze.KBCloze(refs, lengths, words, Q, GAP, A, PAD)


def test_pipeline_cloze_rows_in_training_only_and_resumable(tiny_data, tiny_model_cfg):
  """Through make_train_iterator on the tiny world: rate 1 turns every training row into
  cloze items (a few scored tokens per chunk, each in its chunk's memory), a restored
  iterator builds the same rows, and held-out batches are never touched."""
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import assert_resumable_and_training_only, tiny_data_cfg

  base_cfg, _ = tiny_data
  chunk = tiny_model_cfg.memory.chunk_len

  def make(rate, split="train"):
    cfg = tiny_data_cfg(base_cfg.data_dir, kb_cloze="on", kb_cloze_rate=rate)
    return make_train_iterator(cfg, tiny_model_cfg, split=split, batch_size=4, with_references=True)

  it = make(1.0)
  batch = next(it)
  mask = batch["loss_mask"]
  b, t = mask.shape
  per_chunk = mask.reshape(b, t // chunk, chunk).sum(-1)
  assert (per_chunk[batch["ref_lengths"] > 0] >= 1).all()  # each read chunk scores its gap
  assert mask.sum() < 0.25 * mask.size  # only the answers are scored
  for row, c in zip(*np.nonzero(batch["ref_lengths"])):
    scored = batch["targets"][row, c * chunk : (c + 1) * chunk][
      mask[row, c * chunk : (c + 1) * chunk] > 0
    ]
    assert np.isin(scored, batch["ref_tokens"][row, c]).all()
  assert_resumable_and_training_only(make)
  assert (next(make(1.0, "valid"))["loss_mask"] == 1).all()


def test_config_rejects_a_cloze_rate_outside_the_unit_interval():
  from m3jax.data.config import data_config_from
  from tests.data.conftest import tiny_data_cfg

  with pytest.raises(ValueError, match="kb_cloze_rate"):
    data_config_from(tiny_data_cfg("/tmp/x", kb_cloze_rate=-0.1))


def test_auto_mode_uses_cloze_rows_only_for_text_without_questions(tmp_path):
  import json

  prose = tmp_path / "prose.jsonl"
  prose.write_text("\n".join(json.dumps({"text": t}) for t in ["A ship sails.", "Q is a letter."]))
  asks = tmp_path / "asks.jsonl"
  asks.write_text(json.dumps({"text": "Q: Who commands it? A: Vos"}) + "\n")
  assert not cloze.text_has_questions(str(prose)) and cloze.text_has_questions(str(asks))
  assert cloze.effective_rate("auto", 0.25, str(prose)) == 0.25
  assert cloze.effective_rate("auto", 0.25, str(asks)) == 0.0
  assert cloze.effective_rate("on", 0.25, str(asks)) == 0.25
  assert cloze.effective_rate("off", 0.25, str(prose)) == 0.0
  with pytest.raises(ValueError, match="kb_cloze"):
    cloze.effective_rate("sometimes", 0.25, str(prose))


def test_the_tiny_world_shows_questions_so_auto_adds_no_cloze_rows(tiny_data, tiny_model_cfg):
  from m3jax.data.pipeline import make_train_iterator

  cfg, paths = tiny_data
  assert cloze.text_has_questions(paths.train_text)
  it = make_train_iterator(cfg, tiny_model_cfg, batch_size=4, with_references=True)
  assert it.cloze_rate == 0.0 and (next(it)["loss_mask"] == 1).all()


def test_a_window_keeps_a_few_words_each_side_and_often_one_side_only():
  refs, lengths = _kb()
  starts = np.ones(400, bool)
  words = WordSwapper(refs, lengths, starts, template_df=0.5)
  kb = cloze.KBCloze(refs, lengths, words, Q, GAP, A, PAD, window=2)
  rng = np.random.default_rng(0)
  seen = set()
  for n in range(200):
    ref = refs[n % 29 + 1, :9]
    made = kb.item(ref, rng, chunk_len=24)
    if made is None:
      continue
    tokens, mask, swapped = made
    scored = int(np.flatnonzero(mask)[0])
    text = tokens[len(Q) : scored - len(A)].tolist()
    gap = text.index(GAP[0])
    before, after = text[:gap], text[gap + 1 :]
    where = int(np.flatnonzero(swapped == tokens[scored])[0])  # the answer's place
    # A contiguous piece of the swapped reference around the answer, <= 2 words a side
    # (every token is a word here), never cut in the middle of the reference's order.
    assert len(before) <= 2 and len(after) <= 2
    assert before == swapped[where - len(before) : where].tolist()
    assert after == swapped[where + 1 : where + 1 + len(after)].tolist()
    full_before, full_after = min(2, where), min(2, len(swapped) - where - 1)
    seen.add((len(before) == full_before, len(after) == full_after))
  # Both sides, before only and after only all occur (the values sit mid-reference).
  assert {(True, True), (True, False), (False, True)} <= seen
  with pytest.raises(ValueError, match="kb_cloze_window"):
    cloze.KBCloze(refs, lengths, words, Q, GAP, A, PAD, window=-1)
