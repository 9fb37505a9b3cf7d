"""seqio Tasks and a Mixture over the prepared JSONL files (seqio imported lazily).

Registered per data directory (``prepare_data`` must have run); names are
``{prefix}_{role}`` with roles:

  pretrain_synthetic, pretrain_real, pretrain_user   {"targets"} text, split train/validation
  references                                         {"targets"} KB reference text (+ "id")
  qa_eval                                            {"inputs": "Q: … A:", "targets": answer}
  pretrain (Mixture)                                 the pretrain tasks, rate = document count

The model training path does not need seqio (the GPU machine lacks it): it reads the same
files through :mod:`m3jax.data.pipeline`. These tasks exist for inspection, evaluation
tooling and interoperability with the T5X/seqio ecosystem.
"""

from __future__ import annotations

from m3jax.data import sources
from m3jax.data.config import data_config_from
from m3jax.data.prepare import DataPaths, prepare_data
from m3jax.data.synthetic import qa_prompt

SOURCES = ("synthetic", "real", "user")


def _dataset_fn(records: list[dict], keys: tuple[str, ...]):
  import tensorflow as tf

  def fn(split, shuffle_files, seed=None):
    del shuffle_files, seed
    rows = records.get(split, []) if isinstance(records, dict) else records
    return tf.data.Dataset.from_tensor_slices({k: [r[k] for r in rows] for k in keys})
  return fn


def seqio_vocabulary(data_cfg, paths: DataPaths):
  import seqio
  cfg = data_config_from(data_cfg)
  if cfg.vocab_kind == "byte":
    raise ValueError("seqio tasks need the SentencePiece vocabulary (data.vocab_kind)")
  return seqio.SentencePieceVocabulary(paths.vocab_model)


def _register(name: str, task_fn):
  import seqio
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return task_fn()


def register_tasks(data_cfg, prefix: str = "m3jax") -> dict[str, str]:
  """Registers (or re-registers) every task; returns role -> seqio name."""
  import seqio
  cfg = data_config_from(data_cfg)
  paths = prepare_data(cfg)
  vocab = seqio_vocabulary(cfg, paths)
  text_feature = {"targets": seqio.Feature(vocab, add_eos=True)}
  tokenize = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos]
  train = sources.read_jsonl(paths.train_text)
  valid = sources.read_jsonl(paths.valid_text)
  names, rates = {}, {}
  for src in SOURCES:
    split = {"train": [dict(targets=r["text"]) for r in train if r.get("source") == src],
             "validation": [dict(targets=r["text"]) for r in valid if r.get("source") == src]}
    if not split["train"]:
      continue
    name = f"{prefix}_pretrain_{src}"
    _register(name, lambda: seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(_dataset_fn(split, ("targets",)),
                                              splits=("train", "validation")),
        preprocessors=tokenize, output_features=text_feature))
    names[f"pretrain_{src}"] = name
    rates[name] = float(len(split["train"]))
  refs = [dict(id=r["id"], targets=r["text"]) for r in sources.read_jsonl(paths.references)]
  name = f"{prefix}_references"
  _register(name, lambda: seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(_dataset_fn(refs, ("id", "targets")),
                                            splits=("train",)),
      preprocessors=tokenize, output_features=text_feature))
  names["references"] = name
  qa = [dict(inputs=qa_prompt(q["question"]), targets=q["answer"])
        for q in sources.read_jsonl(paths.qa_eval)]
  if qa:
    name = f"{prefix}_qa_eval"
    qa_features = {"inputs": seqio.Feature(vocab, add_eos=False),
                   "targets": seqio.Feature(vocab, add_eos=True)}
    _register(name, lambda: seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(_dataset_fn(qa, ("inputs", "targets")),
                                              splits=("validation",)),
        preprocessors=tokenize, output_features=qa_features))
    names["qa_eval"] = name
  mix = f"{prefix}_pretrain"
  if mix in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(mix)
  seqio.MixtureRegistry.add(mix, list(rates.items()))
  names["pretrain"] = mix
  return names
