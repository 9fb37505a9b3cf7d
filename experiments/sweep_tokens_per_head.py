"""Sweep: k, the tokens kept per memory layer and KV head (paper: 8), in {4, 8, 16}.

python -m m3jax sweep --sweep experiments/sweep_tokens_per_head.py:small --workdir DIR
"""

from configs.memory3 import get_config  # noqa: F401  (the sweep's base config)


def get_sweep():
  return [{"model.memory.tokens_per_head": k} for k in (4, 8, 16)]
