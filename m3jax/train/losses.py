"""The training loss: token cross-entropy with a loss mask, plus the optional z-loss (PaLM).

Defined once in the task layer (``m3jax.task.cross_entropy``), beside the evaluation's
per-token scoring; re-exported here for the train step.
"""

from __future__ import annotations

from m3jax.task import cross_entropy

__all__ = ["cross_entropy"]
