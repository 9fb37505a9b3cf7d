"""Sweep: two-stage training (warmup without memory, then memory) vs memory from scratch.

The paper's Fig. 11: memories from scratch give no gain; continuing a no-memory
checkpoint with memory does. Both points train the same total number of steps.
"""

from configs.memory3 import get_config


def get_sweep(arg="tiny"):
  stages = [dict(s) for s in get_config(arg).train.stages]
  scratch = {**stages[1], "name": "scratch", "init_from": "",
             "steps": sum(s["steps"] for s in stages), "peak_lr": stages[0]["peak_lr"],
             "warmup_steps": stages[0]["warmup_steps"]}
  return [{"_name": "two_stage"},
          {"_name": "memory_from_scratch", "train.stages": [scratch]}]
