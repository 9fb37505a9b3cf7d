"""The end-to-end demo for notebooks: ``from m3jax.demo import run_demo``.

The pipeline itself lives in :mod:`m3jax.run.demo` (the run layer, below the commands);
this module is the short name a notebook imports.
"""

from m3jax.run.demo import QUICK, apply_quick, run_demo

__all__ = ["QUICK", "apply_quick", "run_demo"]
