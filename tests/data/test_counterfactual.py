"""Counterfactual memory augmentation, the units: swaps are consistent, injective and fresh;
word spans, pools and answer values (in the pipeline: test_counterfactual_pipeline.py)."""

import numpy as np
import pytest

from m3jax.data import counterfactual, qa_values
from m3jax.data.vocab import NUM_SPECIAL

V = 64


def _world():
  # Row: "<s> 10 11 20 30 40 41" ; refs of its two chunks hold 20, 30 (shared) and 50.
  targets_T = np.array([10, 11, 20, 30, 40, 41, 10, 20], np.int32)
  refs_CxN = np.array([[4, 10, 20, 30, 0, 0], [4, 10, 50, 20, 99 % V, 0]], np.int32)
  lengths_C = np.array([4, 5], np.int32)
  return targets_T, refs_CxN, lengths_C


def test_stop_mask_holds_specials_and_most_frequent_reference_tokens():
  refs = np.array([[7, 7, 7, 8, 9, 0], [7, 8, 12, 0, 0, 0]], np.int32)
  lengths = np.array([5, 3], np.int32)
  stop = counterfactual.stop_token_mask(refs, lengths, V, num_stop=2)
  assert stop[:NUM_SPECIAL].all()
  # counted by hand: 7 x4, 8 x2, 9 x1, 12 x1 (padding zeros beyond the lengths ignored)
  assert stop[7] and stop[8] and not stop[9] and not stop[12]
  w = counterfactual.replacement_weights(refs, lengths, stop)
  np.testing.assert_allclose(w[[9, 12]], [0.5, 0.5])
  assert w.sum() == pytest.approx(1.0)


def test_rate_one_swaps_every_shared_token_consistently_in_row_and_references():
  targets, refs, lengths = _world()
  stop = np.zeros(V, bool)
  stop[:NUM_SPECIAL] = True
  weights = np.ones(V) / (V - NUM_SPECIAL)
  weights[:NUM_SPECIAL] = 0
  new_t, new_r = counterfactual.swap_row(
    targets, refs, lengths, stop, weights, 1.0, np.random.default_rng(0)
  )
  shared = {10, 20, 30}  # in the row and in a reference; 11, 40, 41 are row-only, 50 ref-only
  mapping = {}
  for old, new in zip(targets, new_t):
    mapping.setdefault(int(old), int(new))
    assert mapping[int(old)] == int(new), "a token must map to one replacement everywhere"
  for c in range(2):
    for old, new in zip(refs[c, : lengths[c]], new_r[c, : lengths[c]]):
      if int(old) in mapping:
        assert mapping[int(old)] == int(new), "the reference must swap as the row does"
      else:
        assert int(old) == int(new)
  for tok in shared:
    assert mapping[tok] != tok
  for tok in (11, 40, 41):
    assert mapping[tok] == tok
  assert new_r[1, 2] == 50 and new_r[0, 0] == 4  # ref-only and special untouched
  np.testing.assert_array_equal(new_r[0, 4:], refs[0, 4:])  # padding untouched
  fresh = [mapping[t] for t in shared]
  assert len(set(fresh)) == len(fresh), "injective"
  old_tokens = set(targets.tolist()) | set(refs[refs > 0].tolist())
  assert not set(fresh) & old_tokens, "replacements are tokens the row and refs do not hold"
  assert min(fresh) >= NUM_SPECIAL


def test_rate_zero_and_stop_tokens_leave_the_row_alone():
  targets, refs, lengths = _world()
  stop = np.zeros(V, bool)
  stop[:NUM_SPECIAL] = True
  weights = np.ones(V) / V
  t0, r0 = counterfactual.swap_row(
    targets, refs, lengths, stop, weights, 0.0, np.random.default_rng(0)
  )
  np.testing.assert_array_equal(t0, targets)
  np.testing.assert_array_equal(r0, refs)
  stop[[10, 20, 30]] = True
  t1, r1 = counterfactual.swap_row(
    targets, refs, lengths, stop, weights, 1.0, np.random.default_rng(0)
  )
  np.testing.assert_array_equal(t1, targets)
  np.testing.assert_array_equal(r1, refs)


def test_swap_batch_rebuilds_inputs_from_swapped_targets():
  targets, refs, lengths = _world()
  batch = dict(
    inputs=np.concatenate([[3], targets[:-1]])[None].astype(np.int32),
    targets=targets[None],
    loss_mask=np.ones((1, targets.size), np.float32),
    ref_tokens=refs[None],
    ref_lengths=lengths[None],
  )
  stop = np.zeros(V, bool)
  stop[:NUM_SPECIAL] = True
  weights = np.where(stop, 0.0, 1.0)
  out = counterfactual.swap_batch(
    batch, stop, weights / weights.sum(), 1.0, np.random.default_rng(1), 3
  )
  assert out["inputs"][0, 0] == 3
  np.testing.assert_array_equal(out["inputs"][0, 1:], out["targets"][0, :-1])
  assert not np.array_equal(out["targets"], batch["targets"])
  np.testing.assert_array_equal(batch["targets"][0], targets)  # caller's batch not mutated


def test_config_rejects_rates_outside_unit_interval():
  from m3jax.data.config import data_config_from
  from tests.data.conftest import tiny_data_cfg

  with pytest.raises(ValueError, match="memory_swap_rate"):
    data_config_from(tiny_data_cfg("/tmp/x", memory_swap_rate=1.5))


# ------------------------------------------------------------------------- whole words
# Tokens 10-29 begin a word, 30-49 continue one. Template word (10,) is in every reference.
STARTS_V = np.zeros(V, bool)
STARTS_V[:NUM_SPECIAL] = True
STARTS_V[10:30] = True


def test_word_spans_cut_at_word_starts():
  tokens = np.array([31, 12, 13, 30, 31, 14, 30], np.int32)  # a tail, then 3 words
  assert counterfactual.word_spans(tokens, STARTS_V) == [(0, 1), (1, 2), (2, 5), (5, 7)]
  assert counterfactual.word_spans(np.array([], np.int32), STARTS_V) == []


# Token 40 is punctuation: a word of its own that also ends the word before it.
CODES_V = STARTS_V.astype(np.int8)
CODES_V[40] = counterfactual.PUNCTUATION


def test_word_spans_make_punctuation_a_word_of_its_own():
  # "12 30 ." "13" "." "31": the piece after punctuation begins a word though it is a
  # continuation piece ("(1842" would otherwise be one word).
  tokens = np.array([12, 30, 40, 13, 40, 31, 32], np.int32)
  assert counterfactual.word_spans(tokens, CODES_V) == [(0, 2), (2, 3), (3, 4), (4, 5), (5, 7)]
  assert counterfactual.word_spans(tokens, STARTS_V) == [(0, 3), (3, 7)]


def test_a_value_that_ends_a_sentence_in_the_reference_is_swapped():
  # The reference says "10 21 30 ." (the value, then a full stop), the row "10 21 30 13":
  # one value word, shared, so swapped in both; the full stop is a template word.
  refs = [[10, 20, 40], [10, 21, 30, 40], [10, 22, 23, 31, 40], [10, 24, 40], [10, 25, 32, 40]]
  n = max(map(len, refs))
  kb = np.array([r + [0] * (n - len(r)) for r in refs], np.int32)
  lengths = np.array([len(r) for r in refs], np.int32)
  swapper = counterfactual.WordSwapper(kb, lengths, CODES_V, template_df=0.5)
  assert (40,) in swapper.template and swapper.is_value((21, 30))
  row = np.array([10, 21, 30, 13], np.int32)
  new_t, new_r = swapper.swap_row(row, kb[1:2], lengths[1:2], 1.0, np.random.default_rng(0))
  assert tuple(new_t[1:3]) != (21, 30) and tuple(new_r[0, 1:3]) == tuple(new_t[1:3])
  assert new_r[0, 3] == 40 and new_t[3] == 13
  # Without punctuation codes "21 30 ." is another word than "21 30": nothing is shared.
  plain = counterfactual.WordSwapper(kb, lengths, STARTS_V, template_df=0.5)
  same_t, _ = plain.swap_row(row, kb[1:2], lengths[1:2], 1.0, np.random.default_rng(0))
  np.testing.assert_array_equal(same_t, row)


def _word_kb():
  # Six references: the template word (10,) in each; values of 1, 2 and 3 pieces.
  refs = [
    [10, 20, 21, 30],  # 20 ; 21 30
    [10, 22, 23, 31],  # 22 ; 23 31
    [10, 24, 25, 32, 33],  # 24 ; 25 32 33
    [10, 26, 27, 34],  # 26 ; 27 34
    [10, 28, 29, 35, 36],  # 28 ; 29 35 36
    [10, 11, 12, 37],  # 11 ; 12 37
  ]
  n = max(map(len, refs))
  tokens = np.array([r + [0] * (n - len(r)) for r in refs], np.int32)
  return tokens, np.array([len(r) for r in refs], np.int32)


def test_word_swapper_replaces_whole_shared_value_words_by_same_length_words():
  kb_tokens, kb_lengths = _word_kb()
  swapper = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, template_df=0.5)
  assert swapper.template == {(10,)}
  # Row: "10 | 20 | 21 30 | 13 | 24" + the references of its two chunks (refs 0 and 2).
  targets = np.array([10, 20, 21, 30, 13, 24, 21, 30], np.int32)
  refs = kb_tokens[[0, 2], :5].copy()
  lengths = kb_lengths[[0, 2]]
  new_t, new_r = swapper.swap_row(targets, refs, lengths, 1.0, np.random.default_rng(0))
  assert new_t.shape == targets.shape
  # Template word and row-only word stay; shared value words all change, as whole words.
  assert new_t[0] == 10 and new_t[4] == 13 and (new_r[:, 0] == 10).all()
  old_words = counterfactual.word_spans(targets, STARTS_V)
  new_words = counterfactual.word_spans(new_t, STARTS_V)
  assert old_words == new_words, "word boundaries are kept"
  table = {}
  for s, e in old_words:
    old, new = tuple(targets[s:e]), tuple(new_t[s:e])
    assert table.setdefault(old, new) == new, "one replacement per word, everywhere"
  for shared in ((20,), (21, 30), (24,)):
    new = table[shared]
    assert new != shared and len(new) == len(shared)
    # a value word of the knowledge base, which neither the row nor its references hold
    kb_words = {
      tuple(r[s:e])
      for r, n in zip(kb_tokens, kb_lengths)
      for s, e in counterfactual.word_spans(r[:n], STARTS_V)
    }
    assert new in kb_words and new != (10,)
    assert new not in {tuple(targets[s:e]) for s, e in old_words}
  assert len({table[w] for w in ((20,), (24,))}) == 2, "injective"
  # The references swap as the row does; their other words and padding stay.
  for c in range(2):
    for s, e in counterfactual.word_spans(refs[c, : lengths[c]], STARTS_V):
      old = tuple(refs[c, s:e])
      assert tuple(new_r[c, s:e]) == table.get(old, old)
  np.testing.assert_array_equal(new_r[0, 4:], refs[0, 4:])
  # Rate zero: nothing changes.
  t0, r0 = swapper.swap_row(targets, refs, lengths, 0.0, np.random.default_rng(0))
  np.testing.assert_array_equal(t0, targets)
  np.testing.assert_array_equal(r0, refs)


def _swapped_words(swapper, targets, refs, lengths, **where):
  new_t, _ = swapper.swap_row(targets, refs, lengths, 1.0, np.random.default_rng(0), **where)
  return {
    tuple(targets[s:e])
    for s, e in counterfactual.word_spans(targets, STARTS_V)
    if tuple(new_t[s:e]) != tuple(targets[s:e])
  }


def test_readable_swap_leaves_values_their_chunk_cannot_read():
  kb_tokens, kb_lengths = _word_kb()
  swapper = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, template_df=0.5)
  # Chunks of 4 tokens; chunk 0 reads reference 0 (20 ; 21 30), chunk 1 reference 2
  # (24 ; 25 32 33). Chunk 0 holds 20 (its own reference's) and 24 (only chunk 1's
  # reference: no chunk before it can read it); chunk 1 holds 21 30 (chunk 0's reference).
  refs, lengths = kb_tokens[[0, 2], :5].copy(), kb_lengths[[0, 2]]
  row = np.array([10, 20, 24, 13, 10, 21, 30, 13], np.int32)
  assert _swapped_words(swapper, row, refs, lengths) == {(20,), (24,), (21, 30)}
  assert _swapped_words(swapper, row, refs, lengths, chunk_len=4, window=1) == {(20,)}
  # With R = 2 chunk 1 also reads chunk 0's reference.
  assert _swapped_words(swapper, row, refs, lengths, chunk_len=4, window=2) == {
    (20,),
    (21, 30),
  }
  # A word is swapped everywhere or nowhere: 20 also in chunk 1, which (R = 1) cannot read it.
  row[7] = 20
  assert _swapped_words(swapper, row, refs, lengths, chunk_len=4, window=1) == set()


def test_word_boundary_codes_split_sentencepiece_text_into_its_words(tiny_data):
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab

  cfg, paths = tiny_data
  vocab = load_vocab(data_config_from(cfg), paths)
  split_V = counterfactual.word_boundary_codes(vocab, split_punctuation=True)
  text = "the founded year 1850 and Zorblatt"
  tokens = np.array(vocab.encode(text), np.int32)
  words = [vocab.decode(tokens[s:e]) for s, e in counterfactual.word_spans(tokens, split_V)]
  assert words == text.split()
  # Punctuation is a word of its own: the value is the same word before a full stop.
  text = "Zorblatt was founded in 1850. In 1850, Zorblatt grew."
  tokens = np.array(vocab.encode(text), np.int32)
  words = [vocab.decode(tokens[s:e]) for s, e in counterfactual.word_spans(tokens, split_V)]
  assert words == "Zorblatt was founded in 1850 . In 1850 , Zorblatt grew .".split()
  # data.memory_swap_split_punctuation=False: words run on through their punctuation.
  joined_V = counterfactual.word_boundary_codes(vocab, split_punctuation=False)
  words = [vocab.decode(tokens[s:e]) for s, e in counterfactual.word_spans(tokens, joined_V)]
  assert words == text.split()


def test_word_swapper_rejects_a_world_of_template_words_only():
  kb_tokens = np.array([[10, 11], [10, 11]], np.int32)
  with pytest.raises(ValueError, match="memory_swap_template_df"):
    counterfactual.WordSwapper(kb_tokens, np.array([2, 2]), STARTS_V, template_df=0.5)


def test_slot_pool_replaces_a_value_by_one_seen_after_the_same_template_words():
  # Two slots, each named by its template word: "10 v" (colours 14..17) and "11 v"
  # (places 20..23); every value is one piece, so the length pool would mix the two.
  refs, rng_kb = [], np.random.default_rng(1)
  for _ in range(40):
    refs.append([10, int(rng_kb.integers(14, 18)), 11, int(rng_kb.integers(20, 24))])
  kb_tokens, kb_lengths = np.array(refs, np.int32), np.full(len(refs), 4, np.int32)
  slot = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="slot")
  length = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="length")
  assert slot.template == {(10,), (11,)}
  targets = np.array([10, 14, 11, 20, 12, 14], np.int32)
  ref = np.array([[10, 14, 11, 20]], np.int32)
  mixed = 0
  for seed in range(50):
    t, r = slot.swap_row(targets, ref, np.array([4]), 1.0, np.random.default_rng(seed))
    assert 14 <= t[1] < 18 and t[1] != 14 and t[5] == t[1] == r[0, 1], "a colour for a colour"
    assert 20 <= t[3] < 24 and t[3] != 20 and t[3] == r[0, 3], "a place for a place"
    t, _ = length.swap_row(targets, ref, np.array([4]), 1.0, np.random.default_rng(seed))
    mixed += not 14 <= t[1] < 18
  assert mixed > 0, "the length pool draws across slots (what the slot pool prevents)"
  # "mixed" draws the pool per swapped word: both kinds of replacement occur, and a
  # swap stays consistent in the row and its reference.
  both = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="mixed")
  in_slot = 0
  for seed in range(200):
    t, r = both.swap_row(targets, ref, np.array([4]), 1.0, np.random.default_rng(seed))
    assert t[1] != 14 and t[5] == t[1] == r[0, 1] and t[3] == r[0, 3]
    in_slot += 14 <= t[1] < 18
  # A colour for the colour: always from the slot pool, and from the length pool with
  # probability about 1/2 (3 unused colours among 6 unused one-piece values), so about
  # 0.75 x 200 = 150 (sd 6) for "mixed", 200 for "slot", about 100 for "length".
  assert 130 <= in_slot <= 170, in_slot


def test_pieces_pool_recombines_pieces_position_by_position_into_new_words():
  # Four 3-piece values (a word start, then two continuation pieces) after template word 10.
  words = [(14, 30, 40), (15, 31, 41), (16, 32, 42), (17, 33, 43)]
  rng_kb = np.random.default_rng(2)
  kb_tokens = np.array([[10, *words[int(rng_kb.integers(4))]] for _ in range(40)], np.int32)
  kb_lengths = np.full(40, 4, np.int32)
  pieces = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="pieces")
  length = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="length")
  targets = np.array([10, 14, 30, 40, 12, 14, 30, 40], np.int32)
  ref = np.array([[10, 14, 30, 40]], np.int32)
  new_words = 0
  for seed in range(200):
    t, r = pieces.swap_row(targets, ref, np.array([4]), 1.0, np.random.default_rng(seed))
    w = tuple(t[1:4].tolist())
    assert w == tuple(t[5:8].tolist()) == tuple(r[0, 1:4].tolist()), "consistent"
    assert w != (14, 30, 40)
    # piece i of the replacement is an i-th piece of a value word: boundaries are kept
    assert 14 <= w[0] <= 17 and 30 <= w[1] <= 33 and 40 <= w[2] <= 43, w
    new_words += w not in words
    t, _ = length.swap_row(targets, ref, np.array([4]), 1.0, np.random.default_rng(seed))
    assert tuple(t[1:4].tolist()) in words[1:], "the length pool draws knowledge-base words"
  # 64 recombinations, 4 of them knowledge-base words and one the swapped word itself:
  # about 60/63 of the replacements are new (200 draws: mean 190, sd 3).
  assert new_words >= 175, new_words


def test_slot_pool_falls_back_to_the_length_pool_for_a_slot_with_one_value():
  kb_tokens = np.array([[10, 20, 11, 24], [10, 21, 11, 0], [10, 22, 13, 25], [10, 23, 13, 26]])
  kb_lengths = np.array([4, 3, 4, 4])
  swapper = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.4, pool="slot")
  assert swapper.template == {(10,), (11,), (13,)}
  # (24,) is the only value ever seen after 11: it is swapped with another length-1 word.
  t, _ = swapper.swap_row(
    np.array([11, 24], np.int32), kb_tokens[:1], np.array([4]), 1.0, np.random.default_rng(0)
  )
  assert t[1] != 24
  with pytest.raises(ValueError, match="swap pool"):
    counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="type")


def test_answer_value_words_are_the_answers_words_no_question_says():
  # Word-start tokens 10-29, continuations 30+. "What is the ..." asks; answers name values.
  lexicon = {"what": [10], "is": [11], "the": [12], "legs": [13], "six": [14], "diving": [15]}
  lexicon |= {"bell": [16, 30], "x": [17]}

  def encode(text):
    return [t for w in text.split() for t in lexicon[w]]

  items = [
    dict(question="what is the legs x", answer="six"),
    dict(question="what is the x", answer=" the   diving bell "),
  ]
  words = qa_values.answer_value_words(items, encode, STARTS_V)
  assert words == {(14,), (15,), (16, 30)}  # "the" is asked, so a template word


def test_a_few_option_value_that_an_answer_names_is_swapped_despite_its_frequency():
  # Ten references "10 v 11": v is 20 in five of them (df 0.5, over template_df 0.3), so
  # frequency alone calls it a template word and it is never swapped.
  refs = [[10, 20 if i % 2 else 21 + i, 11] for i in range(10)]
  kb = np.array(refs, np.int32)
  lengths = np.full(10, 3, np.int32)
  row = np.array([10, 20, 11, 13], np.int32)
  by_frequency = counterfactual.WordSwapper(kb, lengths, STARTS_V, template_df=0.3)
  assert (20,) in by_frequency.template
  same, _ = by_frequency.swap_row(row, kb[1:2], lengths[1:2], 1.0, np.random.default_rng(0))
  np.testing.assert_array_equal(same, row)
  named = counterfactual.WordSwapper(kb, lengths, STARTS_V, template_df=0.3, values={(20,)})
  assert named.template == {(10,), (11,)}
  new_t, new_r = named.swap_row(row, kb[1:2], lengths[1:2], 1.0, np.random.default_rng(0))
  assert new_t[1] != 20 and new_r[0, 1] == new_t[1]
  assert (new_t[[0, 2, 3]] == row[[0, 2, 3]]).all()


def test_closed_list_options_are_the_answers_of_few_option_attributes():
  # "bed" has 2 options over 4 questions (closed list); "who" 4 names over 4 (names);
  # "year" digits (numbers). Word-start tokens 10-29; "what is the ..." asks.
  lexicon = {"what": [10], "is": [11], "the": [12], "bed": [13], "who": [14], "year": [15]}
  lexicon |= {"silt": [20], "clay": [21], "ann": [22], "bo": [23], "cy": [24], "di": [25]}
  lexicon |= {"1842": [26, 30], "1901": [26, 31], "x": [17]}

  def encode(text):
    return [t for w in text.split() for t in lexicon[w]]

  items = [dict(question="what is the bed x", answer=a, attribute="bed") for a in ("silt",) * 3]
  items += [dict(question="what is the bed x", answer="clay", attribute="bed")]
  items += [dict(question="who x", answer=a, attribute="who") for a in ("ann", "bo", "cy", "di")]
  items += [dict(question="what year x", answer=a, attribute="year") for a in ("1842", "1901")]
  items += [dict(question="what is the x", answer="the silt")]  # no attribute: not read
  options = qa_values.closed_list_options(items, encode, STARTS_V)
  assert options == {(20,): "bed", (21,): "bed"}


def test_attribute_pool_replaces_a_closed_list_value_by_another_of_its_options():
  # One template word 10 before every value. Options of "bed": 14..17; of "tail": 18..21;
  # names 22..29 (not options). Every value is one piece, so the length pool mixes them.
  rng_kb = np.random.default_rng(3)
  refs = [
    [10, int(rng_kb.integers(14, 18)), 10, int(rng_kb.integers(18, 22)), 10, 22 + i % 8]
    for i in range(40)
  ]
  kb_tokens, kb_lengths = np.array(refs, np.int32), np.full(40, 6, np.int32)
  options = {(t,): "bed" for t in range(14, 18)} | {(t,): "tail" for t in range(18, 22)}
  attr = counterfactual.WordSwapper(
    kb_tokens, kb_lengths, STARTS_V, 0.5, pool="attribute", options=options
  )
  length = counterfactual.WordSwapper(kb_tokens, kb_lengths, STARTS_V, 0.5, pool="length")
  targets = np.array([10, 14, 10, 18, 10, 22, 14], np.int32)
  ref = np.array([[10, 14, 10, 18, 10, 22]], np.int32)
  crossed, names = 0, set()
  for seed in range(100):
    t, r = attr.swap_row(targets, ref, np.array([6]), 1.0, np.random.default_rng(seed))
    assert 14 <= t[1] < 18 and t[1] != 14 and t[6] == t[1] == r[0, 1], "a bed for a bed"
    assert 18 <= t[3] < 22 and t[3] != 18 and t[3] == r[0, 3], "a tail for a tail"
    names.add(int(t[5]))
    t, _ = length.swap_row(targets, ref, np.array([6]), 1.0, np.random.default_rng(seed))
    crossed += not 14 <= t[1] < 18
  assert crossed > 0, "the length pool draws across attributes (what this pool prevents)"
  assert any(not 22 <= n < 30 for n in names), "a non-option draws from every value word"
