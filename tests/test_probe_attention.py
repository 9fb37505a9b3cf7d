"""experiments/probe_attention.py: which memory slots hold the answer, and the shares of
attention mass on them, on hand-built masses (checked against sums written out here)."""

import numpy as np

from experiments import probe_attention as probe


def test_answer_slots_are_valid_slots_holding_the_first_position():
  token_idx = np.array([[[4, 5, 4], [0, 4, 2]]])  # 1 layer x 2 KV heads x 3 slots
  valid = np.array([True, True, False])
  got = probe.answer_slots(token_idx, valid, 4)
  np.testing.assert_array_equal(got, [[[True, False, False], [False, True, False]]])


def test_head_shares_split_memory_mass_by_kv_head():
  # 1 layer, 4 query heads over 2 KV heads (heads 0,1 -> KV 0; heads 2,3 -> KV 1), 3 slots.
  slots = np.array([[[True, False, False], [False, False, True]]])
  valid = np.array([True, True, True])
  mass = np.array(
    [
      [
        [0.2, 0.1, 0.1],  # head 0: memory 0.4, answer (slot 0) 0.2
        [0.0, 0.3, 0.1],  # head 1: memory 0.4, answer 0.0
        [0.1, 0.1, 0.6],  # head 2: memory 0.8, answer (slot 2) 0.6
        [0.0, 0.0, 0.0],  # head 3: no memory mass: share 0
      ]
    ]
  )
  got = probe.head_shares(mass, slots, valid)
  np.testing.assert_allclose(got["memory"], [(0.4 + 0.4 + 0.8 + 0.0) / 4])
  np.testing.assert_allclose(got["answer"], [(0.2 + 0.0 + 0.6 + 0.0) / 4])
  np.testing.assert_allclose(got["answer_share"], [(0.5 + 0.0 + 0.75 + 0.0) / 4])
  np.testing.assert_allclose(got["chance"], [1 / 3])
