"""A preempted training run, for the commands that go on after training.

``train`` returns after SIGTERM (or the pod's agreed preemption) with a checkpoint saved
and ``summary["preempted"]``. ``train`` the command exits ``PREEMPTED_EXIT`` then; demo,
reproduce and sweep call ``require_finished`` so they stop too, instead of building a
bank from and evaluating a half-trained model. No JAX import: the CLI maps the
exception to the exit status.
"""

from __future__ import annotations

PREEMPTED_EXIT = 143  # 128 + SIGTERM: saved, not finished


class TrainingPreempted(RuntimeError):
  """SIGTERM (or the pod's agreed preemption) stopped training after a save.

  Raised by commands that go on after training (demo, reproduce, sweep), so they never
  build a bank from or evaluate a half-trained model; the CLI exits ``PREEMPTED_EXIT``.
  """


def require_finished(summary: dict) -> dict:
  """``summary`` (``train``'s) when every stage ran to its end, else TrainingPreempted."""
  if summary["preempted"]:
    saved = {k: v["latest_checkpoint"] for k, v in summary["stages"].items()}
    raise TrainingPreempted(
      f"training was preempted (SIGTERM) and saved {saved}; nothing after training ran. "
      f"Run the same command again to resume {summary['workdir']}."
    )
  return summary
