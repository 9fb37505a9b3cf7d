"""A trained workdir loaded for evaluation, generation and probes.

``load_trained_run(config, workdir)`` prepares the data (a no-op when prepared), restores
the last stage's params (``m3jax.train.checkpoint.restore_params``, the one parameter
loader) and opens (or builds) the bank of that checkpoint. ``m3jax eval``, ``generate``,
the demo and the probes start from it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from m3jax.data.kb import kb_references  # noqa: F401 (re-exported: demo, eval, build-memory)


@dataclasses.dataclass
class TrainedRun:
  """A trained workdir ready to evaluate: its data, last params, and their bank + index."""

  cfg: Any
  paths: Any
  vocab: Any
  params: Any
  step: int
  refs: list
  bank: Any
  embedder: Any
  retriever: Any
  seq_len: int | None = None  # the rows it was trained on (data.seq_len): RAG's budget


def evaluate_run(run: TrainedRun, ev, **kwargs) -> dict:
  """``evaluation.evaluate_all`` on a trained run's pieces (keyword options pass through),
  with the tokens per head its memories were read with (``bank.tokens_per_head``)."""
  from m3jax.evaluate import evaluation

  res = evaluation.evaluate_all(
    run.cfg,
    run.params,
    run.vocab,
    run.paths,
    run.refs,
    run.bank,
    run.embedder,
    run.retriever,
    ev,
    **{"trained_tokens": run.seq_len, **kwargs},
  )
  res["memory_tokens_per_head"] = run.cfg.memory.tokens_per_head
  return res


def last_stage_dir(config, workdir: str) -> str:
  from m3jax.model.config import model_config_from
  from m3jax.train.config import train_config_from
  from m3jax.train.loop import stage_dir

  cfg = model_config_from(config.model)
  tc = train_config_from(config.train, has_memory_layers=bool(cfg.memory.memory_layers))
  return stage_dir(workdir, tc.stages[-1])


def load_trained_params(config, workdir: str):
  """(params, step) of the last stage's latest checkpoint of ``workdir``."""
  from m3jax.model.config import model_config_from
  from m3jax.train.checkpoint import restore_params

  directory = last_stage_dir(config, workdir)
  if not os.path.isdir(directory) or not any(d.isdigit() for d in os.listdir(directory)):
    raise FileNotFoundError(
      f"no checkpoint in {directory}; train first (python -m m3jax "
      "train) or run the demo without --skip-train"
    )
  return restore_params(directory, model_config_from(config.model))


def load_trained_run(
  config,
  workdir: str,
  progress: bool = True,
  bank_url: str | None = None,
  allow_stale: bool = False,
  with_bank: bool = True,
) -> TrainedRun:
  """Data, last params and bank of ``workdir`` (``bank_url``: an existing bank to use).

  ``with_bank=False`` stops after the params: no references, bank or index (``refs`` is
  empty, the rest None), for a model read without memory.
  """
  from m3jax.data.config import data_config_from
  from m3jax.data.prepare import load_vocab, prepare_data
  from m3jax.memory.build import served_configs

  cfg, _ = served_configs(config)
  paths = prepare_data(config.data)
  data_cfg = data_config_from(config.data)
  vocab = load_vocab(data_cfg, paths)
  params, step = load_trained_params(config, workdir)
  run = TrainedRun(cfg, paths, vocab, params, step, [], None, None, None, data_cfg.seq_len)
  if with_bank:
    run.refs = kb_references(paths, vocab, cfg.memory.ref_len)
    run.bank, run.embedder, run.retriever = build_bank_for(
      config, cfg, params, run.refs, workdir, step, progress, bank_url, vocab, allow_stale
    )
  return run


def default_bank_url(workdir: str, step: int, tokens_per_head: int = 0) -> str:
  """``<workdir>/bank-step<step>``, or ``…-k<tokens_per_head>`` for a bank that keeps a
  set number of tokens per head (``bank.tokens_per_head``), so banks of one checkpoint
  at two k sit side by side instead of refusing each other."""
  suffix = f"-k{tokens_per_head}" if tokens_per_head else ""
  return os.path.join(os.path.abspath(workdir), f"bank-step{step}{suffix}")


def build_bank_for(
  config,
  cfg,
  params,
  refs,
  workdir,
  step,
  progress=True,
  url=None,
  vocab=None,
  allow_stale: bool = False,
):
  """The bank of this checkpoint (built when missing) and its index.

  ``url``: an explicit bank (``--bank``), opened as is (it must exist); default
  ``config.bank.url`` or ``<workdir>/bank-step<step>``. An existing bank built with other
  weights or another tokenizer (``vocab``) is refused unless ``allow_stale``.
  """
  from m3jax.memory.build import bank_config_from, build_bank, load_index
  from m3jax.memory.fingerprint import params_fingerprint, tokenizer_fingerprint
  from m3jax.memory.bankfiles import read_manifest
  from m3jax.memory.store import MemoryBank

  bank_cfg = bank_config_from(config.get("bank"))
  explicit = url is not None
  url = url or bank_cfg.url or default_bank_url(workdir, step, bank_cfg.tokens_per_head)
  complete = (
    MemoryBank.exists(url)
    and read_manifest(url).get("complete")
    and os.path.exists(os.path.join(url, "index", "index.json"))
  )
  if complete:
    bank = MemoryBank.open(
      url,
      model_cfg=cfg,
      checkpoint_step=step,
      params_fingerprint=params_fingerprint(params),
      tokenizer_fingerprint=tokenizer_fingerprint(vocab) if vocab is not None else None,
      allow_stale=allow_stale,
      pq_subspaces=bank_cfg.pq_subspaces,
      cache_size=bank_cfg.cache_size,
    )
    embedder, retriever = load_index(os.path.join(url, "index"), bank)
    return bank, embedder, retriever
  if explicit:
    raise FileNotFoundError(
      f"--bank {url}: no complete bank there (build it with "
      "python -m m3jax build-memory --workdir W --bank URL)"
    )
  bank = build_bank(
    params,
    cfg,
    refs,
    url,
    bank_cfg=bank_cfg,
    checkpoint_step=step,
    tokenizer=vocab,
    allow_stale=allow_stale,
    progress=progress,
  )
  embedder, retriever = bank.index
  return bank, embedder, retriever
