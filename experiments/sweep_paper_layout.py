"""Sweep: which part of the paper's memory layout keeps a small model from reading.

The paper's layout is memory in the first half of the layers, 5 references per chunk
(R) and 8 tokens per KV head (k); the demo's is memory in every layer, R=1, k=16. Each
point sets the whole layout, so the sweep runs on any base variant (docs/design.md,
"Session 19", measured on ``small_paper``'s width, data and schedule):

  python -m m3jax sweep --sweep experiments/sweep_paper_layout.py:small_paper --workdir DIR

- ``paper_{4,6,8}l``: the paper's layout at 4, 6 and 8 layers (the depth question);
- ``paper_8l_r1k16``: first half of 8 with the demo's R and k (is it R and k?);
- ``all_8l``: every layer of 8 with the paper's R and k (is it the placement?).
"""

from configs.memory3 import get_config  # noqa: F401  (the sweep's base config)


def _layout(name, layers, memory_layers, refs, k):
  return {
    "_name": name,
    "model.num_layers": layers,
    "model.memory.memory_layers": tuple(memory_layers),
    "model.memory.refs_per_chunk": refs,
    "model.memory.tokens_per_head": k,
  }


def get_sweep():
  return [
    _layout("paper_4l", 4, range(2), 5, 8),
    _layout("paper_6l", 6, range(3), 5, 8),
    _layout("paper_8l", 8, range(4), 5, 8),
    _layout("paper_8l_r1k16", 8, range(4), 1, 16),
    _layout("all_8l", 8, range(8), 5, 8),
  ]
