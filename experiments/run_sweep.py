"""``python experiments/run_sweep.py experiments/sweep_x.py:tiny DIR [--config.a=b ...]``.

The same runner as ``python -m m3jax sweep`` (m3jax.run.sweep.run_sweep).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from m3jax.run.sweep import run_sweep  # noqa: E402

if __name__ == "__main__":
  if len(sys.argv) < 3:
    raise SystemExit(__doc__)
  run_sweep(sys.argv[1], sys.argv[2], extra_overrides=sys.argv[3:])
