"""Sweep: gradients through the live reference encoding in stage 2 (on) or not (off).

DESIGN.md "gradients in stage 2": on is the paper's inferred recipe (~2x a stage-1
step); off is the cheaper ablation (~1.35x).
"""

from configs.memory3 import get_config  # noqa: F401


def get_sweep():
  return [
    {"_name": f"encode_grad_{'on' if on else 'off'}", "train.stages.continual.encode_grad": on}
    for on in (True, False)
  ]
