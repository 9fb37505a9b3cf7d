"""Sweep: which layers read memories: the first half (paper), all, or none.

"none" has no memory layers, so its second stage trains on without memories (a
no-memory control with the same token budget).
"""

from configs.memory3 import get_config


def get_sweep(arg="tiny"):
  layers = get_config(arg).model.num_layers
  return [
    {"_name": "first_half", "model.memory.memory_layers": tuple(range(layers // 2))},
    {"_name": "all", "model.memory.memory_layers": tuple(range(layers))},
    {"_name": "none", "model.memory.memory_layers": (), "train.stages.continual.use_memory": False},
  ]
