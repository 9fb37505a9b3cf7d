"""Training batches: the contract, the leakage filter, resume-after-crash, sharding, BYO."""

import collections
import json

import numpy as np
import pytest

from m3jax.data import pipeline, pretrieval, sources
from m3jax.memory import overlap
from tests.data.conftest import tiny_data_cfg

B = 4


def _it(cfg, model_cfg, **kw):
  kw.setdefault("batch_size", B)
  kw.setdefault("with_references", True)
  return pipeline.make_train_iterator(cfg, model_cfg, **kw)


def test_batch_contract(tiny_data, tiny_model_cfg):
  cfg, _ = tiny_data
  it = _it(cfg, tiny_model_cfg)
  batch = next(it)
  T, C, N = (
    cfg.seq_len,
    cfg.seq_len // tiny_model_cfg.memory.chunk_len,
    tiny_model_cfg.memory.ref_len,
  )
  want = dict(
    inputs=((B, T), np.int32),
    targets=((B, T), np.int32),
    loss_mask=((B, T), np.float32),
    ref_tokens=((B, C, N), np.int32),
    ref_lengths=((B, C), np.int32),
  )
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == want
  assert (batch["inputs"][:, 0] == tiny_model_cfg.bos_id).all()
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  lengths = batch["ref_lengths"]
  assert ((0 <= lengths) & (lengths <= N)).all() and (lengths > 0).mean() > 0.5
  pos = np.arange(N)
  assert (batch["ref_tokens"][pos >= lengths[..., None]] == 0).all()
  assert (batch["ref_tokens"][pos < lengths[..., None]] >= 5).all()
  no_refs = next(_it(cfg, tiny_model_cfg, with_references=False))
  assert set(no_refs) == {"inputs", "targets", "loss_mask"}


@pytest.mark.parametrize("query", ["own", "previous"])
def test_no_reference_leaks(tmp_path, tiny_data, tiny_model_cfg, query):
  cfg, _ = tiny_data
  cfg = tiny_data_cfg(cfg.data_dir, train_query=query)
  it = _it(cfg, tiny_model_cfg, batch_size=16)
  for _ in range(4):
    batch = next(it)
    for b in range(16):
      for c in range(batch["ref_lengths"].shape[1]):
        n = batch["ref_lengths"][b, c]
        if n:
          assert overlap.overlap(batch["targets"][b], batch["ref_tokens"][b, c, :n]) <= 0.9


def test_leak_filter_skips_to_next_candidate():
  seq = np.arange(10, 60)
  refs = np.zeros((3, 8), np.int32)
  refs[0, :5] = [20, 21, 22, 23, 24]  # fully inside the sequence: leaks
  refs[1, :4] = [1, 2, 20, 3]  # 1/4 overlap: fine
  lengths = np.array([5, 4, 0])
  got = pretrieval.filter_leaks(seq, np.array([[0, 1], [0, 0], [2, 1]]), refs, lengths, 0.9)
  assert got.tolist() == [1, -1, 1]


def test_resume_reproduces_stream(tiny_data, tiny_model_cfg):
  cfg, _ = tiny_data
  it = _it(cfg, tiny_model_cfg)
  steps = it.steps_per_epoch + 3  # crosses an epoch boundary
  ref = [next(it) for _ in range(steps)]
  fresh = _it(cfg, tiny_model_cfg)
  for _ in range(5):
    next(fresh)
  saved = json.loads(json.dumps(fresh.state()))  # survives a JSON checkpoint
  resumed = _it(cfg, tiny_model_cfg)
  resumed.restore(saved)
  for want in ref[5:]:
    got = next(resumed)
    for k in want:
      np.testing.assert_array_equal(got[k], want[k])
  # A new epoch is a new order.
  assert not np.array_equal(ref[0]["inputs"], ref[it.steps_per_epoch]["inputs"])


def test_host_shards_partition_global_batch(tiny_data, tiny_model_cfg):
  cfg, _ = tiny_data
  whole = next(_it(cfg, tiny_model_cfg, batch_size=8))
  parts = [
    next(_it(cfg, tiny_model_cfg, batch_size=8, process_index=p, process_count=4)) for p in range(4)
  ]
  for k in whole:
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
  with pytest.raises(ValueError, match="divisible"):
    _it(cfg, tiny_model_cfg, batch_size=6, process_count=4)


def test_valid_split_and_bad_seq_len(tiny_data, tiny_model_cfg):
  cfg, _ = tiny_data
  it = _it(cfg, tiny_model_cfg, split="valid", batch_size=2)
  a, b = next(it), next(_it(cfg, tiny_model_cfg, split="valid", batch_size=2))
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  with pytest.raises(ValueError, match="multiple of"):
    _it(cfg, tiny_model_cfg, seq_len=cfg.seq_len + 3)


def _write(path, lines):
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def test_bring_your_own_files(tmp_path, tiny_model_cfg):
  refs = [
    json.dumps({"id": f"u{i}", "text": f"Widget{i} | color = {c} | size = {i}"})
    for i, c in enumerate(["red", "blue", "green", "gold"] * 3)
  ]
  text = [
    json.dumps(
      {
        "text": f"The Widget{i} is painted in a nice shade. It is size {i}."
        " " * 2 + "Nothing else is known about it at all."
      }
    )
    for i in range(12)
  ]
  qa = [
    json.dumps({"question": "What color is Widget1?", "answer": "blue", "choices": ["red", "blue"]})
  ]
  cfg = tiny_data_cfg(tmp_path / "d", synthetic=False, real_text=False, vocab_kind="byte")
  cfg.user_files.references = _write(tmp_path / "refs.jsonl", refs)
  cfg.user_files.train_text = _write(tmp_path / "text.jsonl", text * 8)
  cfg.user_files.qa = _write(tmp_path / "qa.jsonl", qa)
  it = _it(cfg, tiny_model_cfg, batch_size=2)
  batch = next(it)
  assert batch["ref_tokens"].shape[:2] == (2, cfg.seq_len // tiny_model_cfg.memory.chunk_len)
  paths = pipeline.data_paths(cfg)
  assert [r["id"] for r in sources.read_jsonl(paths.references)] == [f"u{i}" for i in range(12)]
  assert sources.read_jsonl(paths.qa_eval)[0]["answer"] == "blue"


def test_bad_user_files_name_file_and_line(tmp_path, tiny_model_cfg):
  cfg = tiny_data_cfg(tmp_path / "d", synthetic=False, real_text=False, vocab_kind="byte")
  cfg.user_files.references = str(tmp_path / "missing.jsonl")
  cfg.user_files.train_text = _write(tmp_path / "t.jsonl", ['{"text": "ok"}'])
  with pytest.raises(FileNotFoundError, match="missing.jsonl"):
    pipeline.prepare_data(cfg)
  cfg.user_files.references = _write(
    tmp_path / "r.jsonl", ['{"id": "a", "text": "x"}', '{"id": "b", "text": ']
  )
  with pytest.raises(ValueError, match=r"r\.jsonl:2: malformed JSON"):
    pipeline.prepare_data(cfg)
  cfg.user_files.references = _write(tmp_path / "r2.jsonl", ['{"id": "a"}'])
  with pytest.raises(ValueError, match=r"r2\.jsonl:1: .*'text'"):
    pipeline.prepare_data(cfg)
  cfg.user_files.references = _write(tmp_path / "r3.jsonl", ['{"id": "a", "text": "x"}'] * 2)
  with pytest.raises(ValueError, match="duplicate reference id"):
    pipeline.prepare_data(cfg)


def test_config_rejects_unknown_keys_and_small_model_vocab(tiny_data, tiny_model_cfg):
  import dataclasses
  from m3jax.data.config import data_config_from

  cfg, _ = tiny_data
  bad = cfg.to_dict()
  bad["vocab_sise"] = 3
  with pytest.raises(ValueError, match="vocab_sise.*valid keys"):
    data_config_from(bad)
  small = dataclasses.replace(tiny_model_cfg, vocab_size=300)
  with pytest.raises(ValueError, match="model.vocab_size"):
    _it(cfg, small)


def test_query_ranges_match_inputs_and_are_causal(tiny_data, tiny_model_cfg):
  cfg, paths = tiny_data
  L, T = tiny_model_cfg.memory.chunk_len, cfg.seq_len
  stream = np.load(paths.tokens("train"))
  it = _it(cfg, tiny_model_cfg, shuffle=False, batch_size=2)
  batch = next(it)
  own = pretrieval.chunk_ranges(2, T, L, "own")
  prev = pretrieval.chunk_ranges(2, T, L, "previous")
  for s in range(2):
    for c in range(T // L):
      a, b = own[s, c]
      chunk = batch["inputs"][s, c * L : (c + 1) * L]
      np.testing.assert_array_equal(stream[a:b], chunk[1:] if c == 0 else chunk)
      pa, pb = prev[s, c]
      assert pb <= a + (c == 0) and pb - pa <= L  # strictly before the chunk's tokens
  assert prev[0, 0, 1] - prev[0, 0, 0] == 0  # the very first chunk has no query


def test_prepare_and_pretrieval_are_cached(tiny_data, tiny_model_cfg):
  import glob
  import os

  cfg, paths = tiny_data
  _it(cfg, tiny_model_cfg)
  stamps = {
    p: os.path.getmtime(p)
    for p in [paths.manifest, paths.vocab_model] + glob.glob(paths.data_dir + "/pretrieval-*")
  }
  pipeline.prepare_for_training(cfg, tiny_model_cfg)
  _it(cfg, tiny_model_cfg)
  assert {p: os.path.getmtime(p) for p in stamps} == stamps


def test_runs_sharing_a_data_dir_build_it_once(tmp_path, tiny_data, tiny_model_cfg, monkeypatch):
  """Two runs started together on one data directory: the second waits on the first's
  lock and then reads what it wrote, instead of racing it file by file (two trainings
  once crashed on each other's ``train.jsonl.tmp``)."""
  import os
  import subprocess
  import sys

  from m3jax.data import prepare

  cfg, paths = tiny_data
  pipeline.prepare_for_training(cfg, tiny_model_cfg)  # the files the other run will write
  shared = tmp_path / "shared"
  # The other run: takes the lock, then (slowly) writes the prepared files, manifest last.
  other = subprocess.Popen(
    [
      sys.executable,
      "-c",
      "import os, shutil, sys, time\n"
      "from m3jax.data.prepare import exclusive\n"
      "src, dst = sys.argv[1:]\n"
      "with exclusive(dst):\n"
      "  print('locked', flush=True)\n"
      "  time.sleep(1.0)\n"
      "  names = sorted(os.listdir(src), key=lambda n: n == 'manifest.json')\n"
      "  for n in names:\n"
      "    if n != '.lock': shutil.copy(os.path.join(src, n), os.path.join(dst, n))\n",
      paths.data_dir,
      str(shared),
    ],
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert other.stdout.readline().strip() == "locked"

    def built_twice(*args, **kwargs):
      raise AssertionError("built files another run was building")

    monkeypatch.setattr(prepare, "_build_sources", built_twice)
    monkeypatch.setattr(pretrieval, "_build", built_twice)
    got = pipeline.prepare_for_training(tiny_data_cfg(shared), tiny_model_cfg)
  finally:
    assert other.wait(timeout=60) == 0
  assert got.data_dir == str(shared)
  assert os.path.exists(got.manifest)


def test_memory_module_embedder_also_works(tmp_path, tiny_model_cfg):
  """Any m3jax.memory.embedders name plugs in (here the projected TF-IDF)."""
  cfg = tiny_data_cfg(
    tmp_path / "d",
    embedder="tfidf",
    real_text=False,
    **{"world.num_entities": 40, "world.filler_docs": 5},
  )
  batch = next(_it(cfg, tiny_model_cfg, batch_size=2))
  assert (batch["ref_lengths"] > 0).any()


def test_training_time_knobs_leave_the_data_hash_alone(tmp_path):
  # Swaps, cloze, context and repetition rows are drawn while training: changing them
  # reuses the prepared data (same content-addressed folder); a data knob (the
  # vocabulary) does not.
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import sources_key
  from tests.data.conftest import tiny_data_cfg

  key = lambda **kw: sources_key(data_config_from(tiny_data_cfg(tmp_path, **kw)))
  base = key()
  assert base == key(
    memory_swap_rate=0.5,
    memory_swap_readable=True,
    memory_swap_pool="slot",
    memory_swap_loss_weight=3.0,
  )
  assert base == key(kb_cloze="on", kb_cloze_rate=0.5)
  assert base == key(context_ref_rate=0.2)
  assert base == key(memory_distractor_rate=0.2)
  assert base == key(repeat_rate=0.3, repeat_spans=(4, 16))
  assert base != key(vocab_size=256)


def test_order_seed_reorders_the_rows_and_keeps_the_data(tiny_data, tiny_model_cfg):
  # data.order_seed changes which rows come first (and the swap draws), not the world or
  # the prepared files: an epoch holds the same rows in another order, under the same hash.
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import sources_key

  cfg, _ = tiny_data
  assert cfg.order_seed == -1  # follows data.seed by default

  def epoch(order_seed):
    c = cfg.copy_and_resolve_references()
    c.order_seed = order_seed
    it = _it(c, tiny_model_cfg, with_references=False)
    batches = [next(it)["inputs"] for _ in range(it.steps_per_epoch)]
    return batches, sources_key(data_config_from(c)), it.num_seqs % B

  base, key, left_out = epoch(-1)
  same, same_key, _ = epoch(cfg.seed)
  other, other_key, _ = epoch(cfg.seed + 1)
  assert key == same_key == other_key
  np.testing.assert_array_equal(np.concatenate(base), np.concatenate(same))
  assert not np.array_equal(base[0], other[0])
  # The same rows, reordered: only the few an epoch leaves out (num_seqs % B) may differ.
  rows = lambda batches: collections.Counter(map(bytes, np.concatenate(batches)))
  assert sum((rows(base) - rows(other)).values()) <= left_out
