"""AdamW with global-norm clipping and the paper's warmup-stable-decay schedule.

SPEC §4.4: weight decay 0.1, fp32 AdamW states, MiniCPM WSD (linear warmup, flat,
rapid decay over the last 10% of steps to near zero). Betas, eps and clipping are not
stated in the paper; ours live in ``config.train``.

Weight decay skips norm scales and the token embedding (the usual LLaMA/GPT practice:
decaying a norm's gain or a rarely-seen token's row only pulls them toward zero without
regularizing anything). The LM head is a projection and is decayed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from m3jax.train.stages import StageSpec


def schedule(stage: StageSpec) -> optax.Schedule:
  """The stage's LR as a function of its step (0-based)."""
  peak, steps, warm = stage.peak_lr, stage.steps, stage.warmup_steps
  final = peak * stage.final_lr_fraction
  warmup = optax.linear_schedule(0.0 if warm else peak, peak, max(warm, 1))
  if stage.schedule == "constant":
    rest = optax.constant_schedule(peak)
  elif stage.schedule == "cosine":
    rest = optax.cosine_decay_schedule(peak, max(steps - warm, 1), alpha=stage.final_lr_fraction)
  else:  # wsd
    decay = max(int(round(steps * stage.decay_fraction)), 1 if stage.decay_fraction else 0)
    stable = max(steps - warm - decay, 0)
    pieces = [optax.constant_schedule(peak)]
    bounds = []
    if decay:
      pieces.append(optax.linear_schedule(peak, final, decay))
      bounds.append(stable)
    rest = optax.join_schedules(pieces, bounds) if bounds else pieces[0]
  if not warm:
    return rest
  return optax.join_schedules([warmup, rest], [warm])


def _decay_mask(params):
  """True for leaves that get weight decay: everything but norm scales and embeddings."""

  def keep(path, _):
    names = [str(getattr(p, "key", getattr(p, "name", p))) for p in path]
    return not any(n == "scale" or n.startswith("embed") for n in names)

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(train_cfg, legacy_train_cfg=None) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW's direction (fp32 moments) plus decoupled decay.

  The learning rate is NOT inside: the step multiplies the update by the stage's LR,
  which it receives as an argument (:func:`apply_lr`). So the schedule is host data,
  every stage has the same optimizer-state structure, and stages (and sweep points) of
  the same shapes share one compiled step. The math is optax.adamw's exactly.
  (``make_optimizer(stage, train_cfg)``, the earlier form, is still accepted.)
  """
  if legacy_train_cfg is not None:
    train_cfg = legacy_train_cfg
  parts = []
  if train_cfg.grad_clip and train_cfg.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(train_cfg.grad_clip))
  parts.append(
    optax.scale_by_adam(b1=train_cfg.b1, b2=train_cfg.b2, eps=train_cfg.eps, mu_dtype=jnp.float32)
  )
  if train_cfg.weight_decay:
    parts.append(optax.add_decayed_weights(train_cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*parts)


def apply_lr(updates, lr):
  """AdamW's last stage: scale the direction by -lr."""
  return jax.tree_util.tree_map(lambda u: (-lr * u).astype(u.dtype), updates)
