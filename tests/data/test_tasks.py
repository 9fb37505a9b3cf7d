"""seqio Tasks/Mixture over the prepared files load and yield tokenized examples."""

import pytest

from m3jax.data import vocab as vocab_lib


def test_tasks_load(tiny_data):
  seqio = pytest.importorskip("seqio")
  from m3jax.data import tasks
  cfg, paths = tiny_data
  names = tasks.register_tasks(cfg, prefix="m3jax_test")
  assert {"pretrain_synthetic", "pretrain_real", "references", "qa_eval",
          "pretrain"} <= set(names)
  sp = vocab_lib.SentencePieceVocab(paths.vocab_model)
  for role, name in names.items():
    provider = seqio.get_mixture_or_task(name)
    split = "train" if "train" in provider.splits else "validation"
    lengths = {"targets": 64} if role == "pretrain" else None
    ds = provider.get_dataset(lengths, split=split, shuffle=False, seed=0)
    examples = list(ds.take(3).as_numpy_iterator())
    assert len(examples) == 3, role
    for ex in examples:
      assert ex["targets"][-1] == sp.eos_id or role == "pretrain"
      if "targets_pretokenized" in ex:
        assert list(ex["targets"][:-1]) == sp.encode(ex["targets_pretokenized"].decode())
  # Re-registering is idempotent (a notebook re-running the cell).
  assert tasks.register_tasks(cfg, prefix="m3jax_test") == names
