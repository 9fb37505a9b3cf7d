"""Sweep: two-stage training (warmup without memory, then memory) vs memory from scratch.

The paper's Fig. 11: memories from scratch give no gain; continuing a no-memory
checkpoint with memory does. Both points train the same total number of steps.
"""

from configs.memory3 import get_config


def get_sweep(arg="tiny"):
  stages = get_config(arg).train.stages
  scratch = {
    **stages.continual.to_dict(),
    "init_from": "",
    "steps": stages.warmup.steps + stages.continual.steps,
    "peak_lr": stages.warmup.peak_lr,
    "warmup_steps": stages.warmup.warmup_steps,
  }
  return [
    {"_name": "two_stage"},
    {
      "_name": "memory_from_scratch",
      "train.stages": {"scratch": scratch},
      "train.stage_order": ("scratch",),
    },
  ]
