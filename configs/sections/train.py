"""``config.train``: two-stage pretraining (SPEC §4.4-4.6), one loop over StageSpecs.

Stage 1 ("warmup") trains without memory; stage 2 ("continual") starts from stage 1's
last checkpoint with a fresh optimizer, its own (smaller) peak LR, and references
encoded live by the current parameters (``encode_grad``: gradients through the selected
K/V). Stages are data: any list of dicts with the StageSpec fields
(m3jax/train/stages.py) works, e.g. memory-from-scratch is one stage with
``use_memory=True, init_from=""``.

``seq_len`` is None: the sequence length is the data section's (``config.data.seq_len``);
set it here only to run without a data section (it must then agree with the data).
"""

from __future__ import annotations

import ml_collections

_SIZES = {
    # batch, stage-1 steps, stage-2 steps, peak lrs, warmup, ckpt/log cadence, fallback seq_len
    "tiny": dict(batch_size=8, steps=(6, 6), lrs=(3e-3, 1e-3), warmup=2,
                 checkpoint_every=3, log_every=1, seq_len=64),
    # CPU demo (batch 16 x seq 256 = 4096 tokens/step): a short warmup (~25 s) and a long
    # continual stage (~10 min) on 2 idle cores. Reading memory is learned in stage 2, so
    # the budget goes there (docs/design.md, "the small demo config").
    "small": dict(batch_size=16, steps=(50, 750), lrs=(3e-3, 3e-3), warmup=(15, 20),
                  checkpoint_every=100, log_every=10, seq_len=256),
    # Paper shape: ~4M tokens per batch of 2048-token sequences.
    "paper_2p4b": dict(batch_size=2048, steps=(750_000, 30_000), lrs=(3e-4, 1e-4),
                       warmup=2000, checkpoint_every=1000, log_every=50, seq_len=2048),
}


def _stage(name, steps, peak_lr, warmup, *, init_from, use_memory, reset_optimizer=True):
  return dict(name=name, steps=steps, peak_lr=peak_lr, schedule="wsd",
              warmup_steps=warmup, decay_fraction=0.1, final_lr_fraction=0.01,
              init_from=init_from, reset_optimizer=reset_optimizer,
              use_memory=use_memory, encode_grad=True)


def get(variant: str) -> ml_collections.ConfigDict:
  if variant not in _SIZES:
    raise ValueError(f"configs/sections/train.py: unknown variant {variant!r}; "
                     f"choose one of {sorted(_SIZES)}")
  s = _SIZES[variant]
  c = ml_collections.ConfigDict()
  c.batch_size = s["batch_size"]           # global batch (sequences)
  c.seq_len = None                         # None: use config.data.seq_len
  c.fallback_seq_len = s["seq_len"]        # only when the config has no data section
  c.data_source = "pipeline"               # pipeline (m3jax.data) | synthetic
  warmups = s["warmup"] if isinstance(s["warmup"], tuple) else (s["warmup"],
                                                                   max(1, s["warmup"] // 2))
  c.stages = [
      _stage("warmup", s["steps"][0], s["lrs"][0], warmups[0],
             init_from="", use_memory=False),
      _stage("continual", s["steps"][1], s["lrs"][1], warmups[1],
             init_from="previous", use_memory=True),
  ]
  # AdamW (SPEC §4.4: weight decay 0.1, fp32 states; betas/eps/clip unstated).
  c.weight_decay = 0.1
  c.b1 = 0.9
  c.b2 = 0.95
  c.eps = 1e-8
  c.grad_clip = 1.0
  # Gradient accumulation: the batch runs as this many sequential microbatches (the
  # paper's ~4M-token step does not fit a chip's HBM at once; m3jax.train.accumulate).
  c.microbatches = 1
  c.z_loss = 0.0
  # Loop.
  c.checkpoint_every = s["checkpoint_every"]
  c.max_to_keep = 3
  c.async_checkpoint = True
  c.log_every = s["log_every"]
  c.nan_guard = True
  c.tensorboard = variant != "tiny"
  c.plot = variant != "tiny"
  c.progress_bar = variant != "tiny"
  c.multihost = False
  return c
