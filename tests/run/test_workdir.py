"""The workdir is the unit: recorded config, refused resumes, content-addressed data."""

import hashlib
import json
import os

import pytest

from m3jax import cli
from m3jax.run.config import load_config
from m3jax.train import workdir as wd
from m3jax.train.metrics import MetricsLogger, read_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = os.path.join(ROOT, "configs/memory3.py:tiny")


def test_resume_with_changed_model_is_refused_listing_keys(tmp_path, capsys):
  w = str(tmp_path / "w")
  wd.start_run(w, load_config(SPEC))
  saved = wd.saved_config(w)
  assert saved.model.num_layers == 4 and tuple(saved.train.stage_order) == ("warmup", "continual")
  rc = cli.main(
    [
      "train",
      "--config",
      SPEC,
      "--workdir",
      w,
      "--config.model.num_layers=2",
      "--config.model.embed_dim=32",
    ]
  )
  err = capsys.readouterr().err
  assert rc == 2 and "model.num_layers" in err and "model.embed_dim" in err and "--force" in err
  # A changed later, not yet started stage or an eval setting is a legitimate resume.
  c = load_config(
    SPEC, ["--config.train.stages.continual.steps=9", "--config.eval.num_questions=3"]
  )
  wd.start_run(w, c)
  assert wd.saved_config(w).train.stages.continual.steps == 9
  # Once a stage has a checkpoint, changing it is refused too.
  os.makedirs(os.path.join(w, "checkpoints", "warmup", "3"))
  c = load_config(SPEC, ["--config.train.stages.warmup.peak_lr=0.1"])
  assert wd.resume_conflicts(wd.saved_config(w), c, w) == ["train.stages.warmup.peak_lr"]
  # --force moves the old run aside and starts anew.
  wd.start_run(w, c, force=True)
  assert wd.saved_config(w).train.stages.warmup.peak_lr == 0.1
  assert any(".replaced-" in p for p in os.listdir(tmp_path))


def test_serving_another_model_is_refused_but_reading_more_references_is_not():
  saved = load_config(SPEC)
  wd.check_same_model(saved, load_config(SPEC, ["--config.model.memory.refs_per_chunk=2"]), "w")
  # Weights drawn at another scale are trained weights all the same.
  wd.check_same_model(saved, load_config(SPEC, ["--config.model.init_std=0.5"]), "w")
  with pytest.raises(ValueError, match=r"model\.num_layers differ"):
    wd.check_same_model(saved, load_config(SPEC, ["--config.model.num_layers=2"]), "w")


def _run_predating(tmp_path, *keys: str, started: bool = False):
  """(workdir, its saved config) of a run whose config.json lacks the dotted ``keys``, as
  one written before those fields existed; ``started``: a warmup checkpoint exists."""
  w = str(tmp_path / "w")
  wd.start_run(w, load_config(SPEC))
  if started:
    os.makedirs(os.path.join(w, "checkpoints", "warmup", "3"))
  path = os.path.join(w, wd.CONFIG_FILE)
  with open(path) as f:
    old = json.load(f)
  for key in keys:
    *parents, leaf = key.split(".")
    node = old
    for part in parents:
      node = node[part]
    del node[leaf]
  with open(path, "w") as f:
    json.dump(old, f)
  return w, wd.saved_config(w)


def test_weights_trained_before_a_model_field_existed_serve_at_its_default(tmp_path):
  # A config.json written before model.memory.reference_keys existed is the same model as
  # today's config with the field at its default, and another one with it on.
  w, saved = _run_predating(tmp_path, "model.memory.reference_keys")
  wd.check_same_model(saved, load_config(SPEC), w)
  on = load_config(SPEC, ["--config.model.memory.reference_keys=True"])
  with pytest.raises(ValueError, match=r"model\.memory\.reference_keys differ"):
    wd.check_same_model(saved, on, w)


def test_resume_conflicts_name_the_train_fields_that_make_another_run(tmp_path):
  w = str(tmp_path / "w")
  wd.start_run(w, load_config(SPEC))
  saved = wd.saved_config(w)
  other_run = {"batch_size": saved.train.batch_size + 1, "memory_exit_loss": 0.5, "z_loss": 1e-4}
  other_run |= {"weight_decay": 0.0, "b2": 0.9, "data_source": "synthetic"}
  for key, value in other_run.items():
    c = load_config(SPEC, [f"--config.train.{key}={value}"])
    assert wd.resume_conflicts(saved, c, w) == [f"train.{key}"], key
  # The same run: accumulation (the same gradient), logging, evaluation, checkpointing.
  same_run = {"microbatches": 2, "log_every": 3, "eval_every": 7, "max_to_keep": 5}
  for key, value in same_run.items():
    c = load_config(SPEC, [f"--config.train.{key}={value}"])
    assert wd.resume_conflicts(saved, c, w) == [], key


def test_resume_accepts_fields_a_later_release_added_at_their_defaults(tmp_path, capsys):
  # A config.json written before data.kb_cloze_rate, model.norm_eps and a stage's
  # decay_fraction existed: resuming with today's config leaves them at their defaults.
  keys = ("data.kb_cloze_rate", "model.norm_eps", "train.stages.warmup.decay_fraction")
  w, saved = _run_predating(tmp_path, *keys, started=True)
  assert wd.resume_conflicts(saved, load_config(SPEC), w) == []
  wd.start_run(w, load_config(SPEC))
  out = capsys.readouterr().out
  assert "predates" in out and "data.kb_cloze_rate" in out and "model.norm_eps" in out
  # Set away from its default, a new field does change the run (and a started stage's).
  changed = load_config(
    SPEC,
    [
      "--config.data.kb_cloze_rate=0.5",
      "--config.model.norm_eps=0.5",
      "--config.train.stages.warmup.decay_fraction=0.5",
    ],
  )
  assert wd.resume_conflicts(saved, changed, w) == [
    "model.norm_eps",
    "data.kb_cloze_rate",
    "train.stages.warmup.decay_fraction",
  ]


def test_resume_of_a_run_before_ref_len_fit_compares_the_ref_len_it_chose(tmp_path):
  # ref_len_fit only picks ref_len before a run is built: a config.json without it
  # resumes under a config that sets it, and a ref_len it picked differently conflicts.
  w, saved = _run_predating(tmp_path, "model.memory.ref_len_fit")
  fit = load_config(SPEC, ["--config.model.memory.ref_len_fit=0.9"])
  assert wd.resume_conflicts(saved, fit, w) == []
  longer = load_config(SPEC, ["--config.model.memory.ref_len_fit=0.9"])
  longer.model.memory.ref_len = 2 * saved.model.memory.ref_len
  assert wd.resume_conflicts(saved, longer, w) == ["model.memory.ref_len"]


def test_torn_metrics_line_is_dropped_and_logging_resumes(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text(
    json.dumps({"stage": "warmup", "step": 1, "loss": 2.0})
    + "\n"
    + '{"stage": "warmup", "step": 2, "lo'
  )
  assert [r["step"] for r in read_jsonl(str(path))] == [1]
  logger = MetricsLogger(str(tmp_path), progress_bar=False)
  logger.write([{"stage": "warmup", "step": 2, "global_step": 2, "loss": 1.5, "lr": 0.1}])
  logger.close()
  assert [r["step"] for r in read_jsonl(str(path))] == [1, 2]


def _vocab_hash(config):
  from m3jax.data.prepare import DataPaths, prepare_data

  paths = prepare_data(config.data)
  with open(DataPaths(config.data.data_dir).vocab_model, "rb") as f:
    return paths, hashlib.sha256(f.read()).hexdigest()


def test_byo_run_leaves_the_first_runs_vocabulary_unchanged(tmp_path):
  root = str(tmp_path / "data")
  first = load_config(SPEC, [f"--config.data.data_dir={root}"])
  wd.content_addressed(first)
  assert os.path.dirname(first.data.data_dir) == root
  _, before = _vocab_hash(first)
  refs = tmp_path / "kb.jsonl"
  refs.write_text(
    "\n".join(
      json.dumps({"id": f"byo{i}", "text": f"Zorblat {i} is a glimmering quasar of kind {i * 7}."})
      for i in range(30)
    )
    + "\n"
  )
  second = load_config(
    SPEC, [f"--config.data.data_dir={root}", f"--config.data.user_files.references={refs}"]
  )
  wd.content_addressed(second)
  assert second.data.data_dir != first.data.data_dir
  _vocab_hash(second)
  _, after = _vocab_hash(first)
  assert after == before
  dirs = wd.content_addressed(first).data.data_dir
  assert dirs == first.data.data_dir  # idempotent
