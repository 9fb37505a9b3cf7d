"""The bank manifest's contents and the staleness check, as pure functions
(``m3jax.memory.manifest``); opening a real bank through them is in test_bank_safety."""

import dataclasses
import re

import pytest

from m3jax.memory import bankfiles
from m3jax.memory.layout import BankLayout
from m3jax.memory.manifest import new_manifest, stale_problems


@pytest.fixture
def manifest(tiny_cfg):
  return new_manifest(
    BankLayout.from_model(tiny_cfg),
    packed_rows=True,
    model_cfg=tiny_cfg,
    checkpoint_step=12,
    params_fingerprint="weights-a",
    tokenizer_fingerprint="tok-a",
  )


def test_a_new_manifest_is_empty_incomplete_and_has_every_required_field(manifest, tiny_cfg):
  assert not [k for k in bankfiles.REQUIRED if k not in manifest]
  assert (manifest["count"], manifest["num_deleted"], manifest["complete"]) == (0, 0, False)
  assert manifest["spec_version"] == bankfiles.SPEC_VERSION
  assert BankLayout(**manifest["layout"]) == BankLayout.from_model(tiny_cfg)
  assert manifest["quantization"] == {"kind": "none"} and manifest["dtype"] == "bfloat16"
  pq = new_manifest(BankLayout(2, 1, 4, 8, pq_subspaces=4), packed_rows=False, pq_rel_mse=0.1)
  assert pq["spec_version"] == 2 and pq["dtype"] == "uint8"
  assert pq["quantization"] == {"kind": "pq", "bytes_per_vector": 4, "relative_mse": 0.1}
  assert pq["model_fingerprint"] is None


def test_the_reader_the_bank_was_built_for_has_no_problem(manifest, tiny_cfg):
  same = dict(model_cfg=tiny_cfg, checkpoint_step=12, tokenizer_fingerprint="tok-a")
  assert stale_problems(manifest, params_fingerprint="weights-a", **same) == []
  assert stale_problems(manifest) == []  # nothing given: nothing checked


@pytest.mark.parametrize(
  "reader, expected",
  [
    (dict(params_fingerprint="weights-b"), r"checkpoint weights of fingerprint weights-a"),
    (dict(tokenizer_fingerprint="tok-b"), r"tokenizer of fingerprint tok-a"),
    (dict(checkpoint_step=13), r"encoded at checkpoint step 12 but the model is at step 13"),
    (dict(pq_subspaces=4), r"has layout .* but the model config needs"),
  ],
)
def test_each_mismatch_is_one_problem_that_names_it(manifest, tiny_cfg, reader, expected):
  problems = stale_problems(manifest, model_cfg=tiny_cfg, **reader)
  assert len(problems) == 1
  assert re.search(expected, problems[0]), problems


def test_a_weights_fingerprint_outranks_the_step(manifest):
  """Two stages can share a step: when both sides give weights, the step is not compared."""
  assert stale_problems(manifest, params_fingerprint="weights-a", checkpoint_step=99) == []


def test_another_model_with_the_same_layout_is_stale(manifest, tiny_cfg):
  other = dataclasses.replace(tiny_cfg, rope_base=tiny_cfg.rope_base * 2)
  assert BankLayout.from_model(other) == BankLayout.from_model(tiny_cfg)
  (problem,) = stale_problems(manifest, model_cfg=other)
  assert "model fingerprint" in problem
