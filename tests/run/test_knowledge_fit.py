"""m3jax.run.knowledge_fit: both fits from one preparation of the data, none without a
``*_fit`` field."""

import os

from m3jax.run import knowledge_fit, reference_length
from tests.run.test_key_smearing import PROSE, _byo


def test_both_fields_are_fitted_from_one_preparation(tmp_path, monkeypatch):
  config = _byo(tmp_path, PROSE)  # smeared_keys_fit 0.5, prose: smeared keys on
  config.model.memory.ref_len_fit = 0.9
  config.model.memory.ref_len = 8  # the byte-vocabulary lines are longer: it grows
  (tmp_path / "alone").mkdir()
  alone = _byo(tmp_path / "alone", PROSE)
  alone.model.memory.ref_len_fit, alone.model.memory.ref_len = 0.9, 8
  want = reference_length.fit_ref_len(alone).model.memory.ref_len
  calls = []
  real = reference_length.prepared_paths
  monkeypatch.setattr(knowledge_fit, "prepared_paths", lambda c: calls.append(1) or real(c))
  monkeypatch.setattr(reference_length, "prepared_paths", lambda c: calls.append(2) or real(c))
  fitted = knowledge_fit.fit_to_knowledge_base(config)
  assert fitted.model.smeared_keys is True
  assert fitted.model.memory.ref_len == want > 8  # as the ref_len fit alone
  assert calls == [1]  # prepared (and the user's files hashed) once, for both fits


def test_no_fit_field_prepares_nothing(tmp_path):
  config = _byo(tmp_path, PROSE)
  config.model.smeared_keys_fit = 0.0
  config.model.memory.ref_len_fit = 0.0
  assert knowledge_fit.fit_to_knowledge_base(config).model.smeared_keys is False
  assert not os.path.exists(tmp_path / "data")
