"""The counterfactual swap inside the training pipeline: deterministic and resumable,
punctuation, readable-only and answer-value options, loss weights on exactly the swapped
targets (the units are in test_counterfactual.py)."""

import numpy as np
import pytest

from m3jax.data import counterfactual


@pytest.mark.parametrize("unit", ["word", "token"])
def test_pipeline_swaps_training_rows_deterministically_and_resumes(
  tiny_data, tiny_model_cfg, unit
):
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import tiny_data_cfg

  base_cfg, _ = tiny_data

  def make(rate, split="train"):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=rate, memory_swap_unit=unit)
    return make_train_iterator(cfg, tiny_model_cfg, split=split, batch_size=4, with_references=True)

  plain, swapped = make(0.0), make(1.0)
  b0, b1 = next(plain), next(swapped)
  assert not np.array_equal(b0["targets"], b1["targets"]), "rate 1 must change some tokens"
  np.testing.assert_array_equal(b0["ref_lengths"], b1["ref_lengths"])
  np.testing.assert_array_equal(b1["inputs"][:, 1:], b1["targets"][:, :-1])
  # Resume: the second batch of a fresh iterator restored to step 1 equals the original's.
  expected = next(swapped)
  again = make(1.0)
  again.restore({"epoch": 0, "step": 1})
  got = next(again)
  for key in ("targets", "ref_tokens"):
    np.testing.assert_array_equal(got[key], expected[key])
  # Held-out text is never swapped.
  v0, v1 = next(make(0.0, "valid")), next(make(1.0, "valid"))
  np.testing.assert_array_equal(v0["targets"], v1["targets"])
  # Stage 1 (no references): nothing to swap, the stream is the plain one.
  cfg1 = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=1.0, memory_swap_unit=unit)
  cfg0 = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=0.0, memory_swap_unit=unit)
  n1 = next(make_train_iterator(cfg1, tiny_model_cfg, batch_size=4, with_references=False))
  n0 = next(make_train_iterator(cfg0, tiny_model_cfg, batch_size=4, with_references=False))
  assert set(n1) == {"inputs", "targets", "loss_mask"}
  np.testing.assert_array_equal(n1["targets"], n0["targets"])


def test_pipeline_swaps_values_before_punctuation_only_when_asked(tiny_data, tiny_model_cfg):
  """data.memory_swap_split_punctuation reaches the swapper: the tiny world's prose ends
  sentences with values ("... 1850."), which split punctuation makes shareable, so more
  positions swap, and none of them is a punctuation piece (a template word of its own)."""
  from m3jax.data.config import data_config_from
  from m3jax.data.pipeline import make_train_iterator
  from m3jax.data.prepare import load_vocab
  from tests.data.conftest import tiny_data_cfg

  base_cfg, paths = tiny_data
  codes_V = counterfactual.word_boundary_codes(
    load_vocab(data_config_from(base_cfg), paths), split_punctuation=True
  )

  def first(rate, split_punctuation):
    cfg = tiny_data_cfg(
      base_cfg.data_dir,
      memory_swap_rate=rate,
      memory_swap_split_punctuation=split_punctuation,
    )
    it = make_train_iterator(cfg, tiny_model_cfg, batch_size=8, with_references=True)
    return np.concatenate([next(it)["targets"] for _ in range(4)])

  plain = first(0.0, False)
  np.testing.assert_array_equal(plain, first(0.0, True))
  joined, split = plain != first(1.0, False), plain != first(1.0, True)
  assert split.sum() > joined.sum()
  punctuation = codes_V[plain] == counterfactual.PUNCTUATION
  assert punctuation.any() and not (split & punctuation).any()


def _unreadable_swaps(plain, swapped, chunk_len, window) -> int:
  """Swapped target positions whose new token no reference their chunk reads holds."""
  n = 0
  changed = np.argwhere(plain["targets"] != swapped["targets"])
  for b, t in changed:
    c = t // chunk_len
    visible = swapped["ref_tokens"][b, max(0, c - window + 1) : c + 1]
    n += int(swapped["targets"][b, t] not in visible)
  return n


def test_pipeline_swaps_only_readable_values_when_asked(tiny_data, tiny_model_cfg):
  from m3jax.data.config import data_config_from
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import tiny_data_cfg

  base_cfg, _ = tiny_data
  mem = tiny_model_cfg.memory

  def first(rate, readable=False):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=rate, memory_swap_readable=readable)
    return next(make_train_iterator(cfg, tiny_model_cfg, batch_size=8, with_references=True))

  plain = first(0.0)
  anywhere, readable = first(1.0), first(1.0, readable=True)
  # The default swaps values of any reference of the row, some where no memory has them;
  # readable swaps some values, each where its chunk's references hold it.
  assert _unreadable_swaps(plain, anywhere, mem.chunk_len, mem.refs_per_chunk) > 0
  assert (plain["targets"] != readable["targets"]).any()
  assert _unreadable_swaps(plain, readable, mem.chunk_len, mem.refs_per_chunk) == 0
  token_unit = tiny_data_cfg(base_cfg.data_dir, memory_swap_readable=True, memory_swap_unit="token")
  with pytest.raises(ValueError, match="memory_swap_unit='word'"):
    data_config_from(token_unit)


def test_readable_swap_under_similar_windows_takes_own_reference_values(tiny_data, tiny_model_cfg):
  # A "similar" window (StageSpec.memory_window) reads the chunk's own reference, not the
  # previous chunks': a readable swap then takes only values that reference holds.
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import tiny_data_cfg

  base_cfg, _ = tiny_data
  mem = tiny_model_cfg.memory

  def first(rate, window):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=rate, memory_swap_readable=True)
    it = make_train_iterator(
      cfg, tiny_model_cfg, batch_size=8, with_references=True, memory_window=window
    )
    return next(it)

  def not_in_own_reference(swapped) -> int:
    """Swapped words (runs of changed targets) that their first token's chunk's own
    reference does not hold (the swap's rule: a word is read where it starts)."""
    n = 0
    changed = plain["targets"] != swapped["targets"]
    for b, t in np.argwhere(changed):
      if t > 0 and changed[b, t - 1]:
        continue  # not a word's first token
      end = t
      while end + 1 < changed.shape[1] and changed[b, end + 1]:
        end += 1
      own = swapped["ref_tokens"][b, t // mem.chunk_len]
      n += int(not np.isin(swapped["targets"][b, t : end + 1], own).all())
    return n

  plain, chunks, similar = first(0.0, "chunks"), first(1.0, "chunks"), first(1.0, "similar")
  # The paper's window swaps some values that only an earlier chunk's reference holds.
  assert not_in_own_reference(chunks) > 0
  assert (plain["targets"] != similar["targets"]).any()
  assert not_in_own_reference(similar) == 0


def test_pipeline_weights_exactly_the_swapped_targets(tiny_data, tiny_model_cfg):
  from m3jax.data.config import data_config_from
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import tiny_data_cfg

  base_cfg, _ = tiny_data

  def first(rate, weight=1.0):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=rate, memory_swap_loss_weight=weight)
    return next(make_train_iterator(cfg, tiny_model_cfg, batch_size=8, with_references=True))

  plain, swapped, weighted = first(0.0), first(1.0), first(1.0, weight=3.0)
  # The weight changes the loss mask only: the same swaps, the same rows.
  for key in ("inputs", "targets", "ref_tokens", "ref_lengths"):
    np.testing.assert_array_equal(weighted[key], swapped[key])
  changed = plain["targets"] != swapped["targets"]
  assert changed.any()
  expected = np.where(changed, 3.0, 1.0).astype(np.float32)  # every row token is real here
  np.testing.assert_array_equal(weighted["loss_mask"], expected)
  np.testing.assert_array_equal(swapped["loss_mask"], np.ones_like(expected))
  bad = tiny_data_cfg(base_cfg.data_dir, memory_swap_loss_weight=0.0)
  with pytest.raises(ValueError, match="memory_swap_loss_weight"):
    data_config_from(bad)


def test_pipeline_ramps_the_swap_weight_and_resumes_on_the_ramp(tiny_data, tiny_model_cfg):
  """data.memory_swap_loss_ramp: the k-th swapped batch weighs its swapped targets
  start + (weight - start) * k / ramp, then weight; the ramp's clock is in the iterator
  state, so a resumed run weighs as the original did, and a stage-1 (no references)
  state starts the ramp at its first step."""
  from m3jax.data.config import data_config_from
  from m3jax.data.pipeline import make_train_iterator
  from tests.data.conftest import tiny_data_cfg

  base_cfg, _ = tiny_data

  def make(rate=1.0, refs=True, **kw):
    cfg = tiny_data_cfg(base_cfg.data_dir, memory_swap_rate=rate, memory_swap_loss_weight=5.0, **kw)
    return make_train_iterator(cfg, tiny_model_cfg, batch_size=8, with_references=refs)

  ramped = make(memory_swap_loss_ramp=4, memory_swap_loss_weight_start=2.0)
  plain = make(rate=0.0)
  weights_by_batch = [2.0, 2.75, 3.5, 4.25, 5.0, 5.0]  # 2 + 3k/4, written out
  states = []
  for want in weights_by_batch:
    states.append(ramped.state())
    b, p = next(ramped), next(plain)
    changed = b["targets"] != p["targets"]
    assert changed.any()
    np.testing.assert_array_equal(b["loss_mask"], np.where(changed, want, 1.0))
  # Resume on the ramp (batch 2: weight 3.5) and a state from before the ramp existed.
  again = make(memory_swap_loss_ramp=4, memory_swap_loss_weight_start=2.0)
  again.restore(states[2])
  assert states[2]["swap_batches"] == 2
  b, p = next(again), make(rate=0.0)
  p.restore(states[2])
  changed = b["targets"] != next(p)["targets"]
  np.testing.assert_array_equal(b["loss_mask"], np.where(changed, 3.5, 1.0))
  old = make(memory_swap_loss_ramp=4, memory_swap_loss_weight_start=2.0)
  old.restore({"epoch": 0, "step": 3})
  assert old.swap_weight(old.swap_batches) == 2.0
  # Stage 1 draws no swapped batch: the state it hands to stage 2 starts the ramp.
  stage1 = make(refs=False, memory_swap_loss_ramp=4, memory_swap_loss_weight_start=2.0)
  for _ in range(3):
    next(stage1)
  assert stage1.state() == {"epoch": 0, "step": 3, "swap_batches": 0}
  for key, value in (("memory_swap_loss_ramp", -1), ("memory_swap_loss_weight_start", 0.0)):
    with pytest.raises(ValueError, match=key):
      data_config_from(tiny_data_cfg(base_cfg.data_dir, **{key: value}))


def test_pipeline_swaps_a_few_option_attribute_only_with_answer_values(tmp_path, tiny_model_cfg):
  """A user world whose one attribute has 4 values (each in a quarter of the references):
  by frequency alone the colours are template words and no training row's colour is ever
  swapped; data.memory_swap_answer_values names them values (the training questions'
  answers), and then they are."""
  import json

  from m3jax.data import prepare
  from m3jax.data.pipeline import make_train_iterator
  from m3jax.data.vocab import load_vocab
  from tests.data.conftest import tiny_data_cfg

  colors = ["red", "blue", "green", "gold"]
  syl = ["ka", "lo", "mir", "tev", "sun", "dra", "pol", "gai", "ren", "vos"]
  names = [syl[i % 10] + syl[i // 10 % 10] + syl[i * 7 % 10] for i in range(120)]
  files = {
    "references": [
      dict(id=f"r{i}", text=f"{n} is painted {colors[i % 4]}.") for i, n in enumerate(names)
    ],
    "train_text": [dict(text=f"Some prose about the weather on day {i}.") for i in range(60)],
    "qa": [
      dict(
        question=f"What color is {n}?", answer=colors[i % 4], choices=colors, gold_ref_id=f"r{i}"
      )
      for i, n in enumerate(names)
    ],
  }

  def cfg(**overrides):
    c = tiny_data_cfg(tmp_path / "data", synthetic=False, real_text=False, **overrides)
    c.memory_swap_split_punctuation = True
    for name, records in files.items():
      path = tmp_path / f"{name}.jsonl"
      path.write_text("".join(json.dumps(r) + "\n" for r in records))
      c.user_files[name] = str(path)
    return c

  paths = prepare.prepare_data(cfg())
  vocab = load_vocab("sentencepiece", paths.vocab_model)

  def rows(rate, values):
    c = cfg(memory_swap_rate=rate, memory_swap_answer_values=values)
    it = make_train_iterator(c, tiny_model_cfg, batch_size=8, with_references=True)
    return np.concatenate([next(it)["targets"] for _ in range(4)])

  def colour_swaps(plain, swapped):  # (occurrences of a colour word, how many changed)
    seen = changed = 0
    for a, b in zip(plain, swapped):
      for color in colors:
        ids = vocab.encode(" " + color)
        for s in range(len(a) - len(ids) + 1):
          if a[s : s + len(ids)].tolist() == ids:
            seen += 1
            changed += b[s : s + len(ids)].tolist() != ids
    return seen, changed

  plain = rows(0.0, False)
  seen, changed = colour_swaps(plain, rows(1.0, False))
  assert seen > 50 and changed == 0
  seen, changed = colour_swaps(plain, rows(1.0, True))
  assert changed > seen // 2
