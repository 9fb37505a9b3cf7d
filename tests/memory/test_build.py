"""End to end: KB -> encode -> TensorStore bank -> ScaNN -> feeder -> model forward;
resume after a killed build; insert/delete through bank and index; anti-copy filter."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from m3jax.data.references import load_references
from m3jax.memory.build import BankConfig, build_bank, load_index, make_encoder
from m3jax.memory.encode import EncodedMemories, to_memory_kv
from m3jax.memory.overlap import overlap
from m3jax.memory.feeder import MemoryFeeder, anti_copy_filter
from m3jax.memory.retriever import NumpyRetriever, scann_available
from m3jax.memory.store import MemoryBank
from m3jax.model.transformer import Transformer
from tests.memory.helpers import write_kb

BANK = BankConfig(
  encode_batch_size=8,
  embedding_dim=32,
  pq_bytes_per_vector=4,
  pq_iters=5,
  index_kind="scann" if scann_available() else "numpy",
)


@pytest.fixture(scope="module")
def kb(tmp_path_factory):
  from tests.memory.helpers import WordTokenizer

  tok = WordTokenizer()
  path = write_kb(tmp_path_factory.mktemp("kb") / "kb.jsonl", 12)
  return tok, load_references(path, tok, ref_len=12)  # ~3 references per document


@pytest.fixture(scope="module")
def built(kb, tiny_cfg, tiny_params, tmp_path_factory):
  url = str(tmp_path_factory.mktemp("bank") / "bank")
  build_bank(tiny_params, tiny_cfg, kb[1], url, bank_cfg=BANK, progress=False)
  return url


@pytest.mark.integration
def test_round_trip_equals_in_memory_forward(kb, built, tiny_cfg, tiny_params):
  tok, refs = kb
  cfg = tiny_cfg
  bank = MemoryBank.open(built, model_cfg=cfg, checkpoint_step=0, require_complete=True)
  embedder, retriever = load_index(f"{built}/index")
  feeder = MemoryFeeder(embedder, retriever, bank, cfg.memory.refs_per_chunk)
  queries = [["capital of land3 is town3", "Visitors of land7 eat dish7"]]
  feeder.prefetch(queries)
  mem, ids = feeder.get()
  assert ids.shape == (1, 2, 5) and (ids != None).all()  # noqa: E711
  ref_emb = np.asarray(embedder.embed([r.text for r in refs]))
  exact, _ = NumpyRetriever([r.id for r in refs], ref_emb).search(embedder.embed(queries[0]), 5)
  # Same top-5 scores as exact search (references tied at the 5th score may swap).
  q_emb = np.asarray(embedder.embed(queries[0]))
  row_of = {r.id: j for j, r in enumerate(refs)}
  score = lambda q, i: float(q_emb[q] @ ref_emb[row_of[i]])
  for q in range(2):
    np.testing.assert_allclose(
      [score(q, i) for i in ids[0, q]], [score(q, i) for i in exact[q]], rtol=1e-6
    )
  assert any(i.startswith("doc3#") for i in ids[0, 0])
  assert any(i.startswith("doc7#") for i in ids[0, 1])

  # The same memories built directly in memory (bf16-rounded, as the bank stores them).
  k, v, m, t = make_encoder(tiny_params, cfg, 8)(refs)
  bf = lambda x: jnp.asarray(x.astype(ml_dtypes.bfloat16).astype(np.float32))
  enc = EncodedMemories(bf(k), bf(v), jnp.asarray(m), jnp.asarray(t))
  pos = {r.id: j for j, r in enumerate(refs)}
  idx = jnp.asarray([[[pos[i] for i in row] for row in ids[0]]])
  direct = to_memory_kv(enc, idx, jnp.ones(idx.shape, bool))
  ctx = jnp.asarray(
    np.random.default_rng(0).integers(8, 200, (1, 2 * cfg.memory.chunk_len)), jnp.int32
  )
  fwd = jax.jit(lambda mem: Transformer(cfg).apply({"params": tiny_params}, ctx, mem))
  np.testing.assert_array_equal(fwd(mem), fwd(direct))
  assert bank.cache.misses == len(set(ids.reshape(-1)))  # one read per unique memory
  feeder.close()


@pytest.mark.integration
@pytest.mark.parametrize("quantization", ["none", "pq"])
def test_killed_build_resumes_identically(kb, tiny_cfg, tiny_params, tmp_path, quantization):
  refs = kb[1]
  cfg = dataclasses.replace(BANK, quantization=quantization)

  def kill_after_two(batch, committed):
    if batch == 1:
      raise KeyboardInterrupt("killed")

  url = str(tmp_path / "resumed")
  with pytest.raises(KeyboardInterrupt):
    build_bank(
      tiny_params,
      tiny_cfg,
      refs,
      url,
      bank_cfg=cfg,
      progress=False,
      build_index=False,
      after_batch=kill_after_two,
    )
  half = MemoryBank.open(url)
  assert half.count == 16 and not half.complete
  seen = []
  resumed = build_bank(
    tiny_params,
    tiny_cfg,
    refs,
    url,
    bank_cfg=cfg,
    progress=False,
    build_index=False,
    after_batch=lambda b, n: seen.append(n),
  )
  assert seen[0] == 24 and seen[-1] == len(refs)  # no batch encoded twice
  clean = build_bank(
    tiny_params,
    tiny_cfg,
    refs,
    str(tmp_path / "clean"),
    bank_cfg=cfg,
    progress=False,
    build_index=False,
  )
  assert resumed.ids == clean.ids == [r.id for r in refs]
  assert resumed.complete and clean.complete
  a, b = resumed.read_arrays(), clean.read_arrays()
  for name in a:
    assert a[name].tobytes() == b[name].tobytes(), name
  if quantization == "pq":
    assert resumed.codebooks.tobytes() == clean.codebooks.tobytes()
  with pytest.raises(ValueError, match="not a prefix"):
    build_bank(tiny_params, tiny_cfg, refs[1:], url, bank_cfg=cfg, progress=False)


def test_insert_then_delete_through_bank_and_index(kb, built, tiny_cfg, tiny_params, tmp_path):
  tok, refs = kb
  bank = MemoryBank.open(built, model_cfg=tiny_cfg)
  embedder, retriever = load_index(f"{built}/index")
  feeder = MemoryFeeder(embedder, retriever, bank, 5)
  text = "dish2 metres town5 river1 bridges land9 dish2."  # words the embedder knows
  new = dataclasses.replace(refs[0], id="new#0", text=text, tokens=tuple(tok.encode(text)))
  bank.insert([new.id], *make_encoder(tiny_params, tiny_cfg, 8)([new]))
  retriever.insert([new.id], embedder.embed([new.text]))
  _, ids = feeder.fetch([[text]])
  assert ids[0, 0, 0] == "new#0"
  bank.delete(["new#0"])  # bank only: the feeder already skips it
  assert "new#0" not in feeder.fetch([[text]])[1]
  retriever.delete(["new#0"])
  assert "new#0" not in retriever.search(embedder.embed([new.text]), 50)[0]
  assert "new#0" not in MemoryBank.open(built).ids
  with pytest.raises(KeyError):
    bank.read(["new#0"])


def test_anti_copy_filter_drops_overlapping_references(kb, built, tiny_cfg):
  tok, refs = kb
  bank = MemoryBank.open(built)
  embedder, retriever = load_index(f"{built}/index")
  by_id = {r.id: r.tokens for r in refs}
  keep = anti_copy_filter(by_id.__getitem__, 2 / 3)
  question = refs[4].text
  plain = MemoryFeeder(embedder, retriever, bank, 5)
  filt = MemoryFeeder(embedder, retriever, bank, 5, keep=keep)
  q_tokens = [[tok.encode(question)]]
  _, with_copy = plain.fetch([[question]], q_tokens)
  _, without = filt.fetch([[question]], q_tokens)
  assert refs[4].id in with_copy
  assert refs[4].id not in without
  assert all(overlap(by_id[i], q_tokens[0][0]) <= 2 / 3 for i in without.reshape(-1) if i)
