"""Evaluation: QA, perplexity, speed, attribution, the report."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "EvalConfig": "m3jax.evaluate.report",
    "evaluate_all": "m3jax.evaluate.evaluation",
    "table": "m3jax.evaluate.report",
  },
)
