"""Model FLOPs of a train or decode step, from SPEC App. A's formulas.

App. A counts, per sequence of T tokens (×3 fwd+bwd, ×2 multiply-add; generalized here
to H·d_h ≠ d):

  stage 1:   6·[ L·( T·(2·d·H·d_h + 2·d·d_h·H_kv + 3·d·W) + 2·T·(T/2)·H·d_h ) + T·V·d ]

Attention is counted causally (half the T×T scores). Stage 2 adds the memory read (every
query head of a memory layer attends R·k memory tokens, fwd+bwd):

  6·L_mem·2·T·(R·k)·H·d_h

and the live reference encoding of the C = T/chunk references (App. A's explicit write;
depth = deepest memory layer + 1 layers run; ×3 when gradients flow through it, ×1 with
encode_grad off):

  2·[ depth·N·(2·d·H·d_h + 2·d·d_h·H_kv) + depth·2·(N²/2)·H·d_h + (depth−1)·N·3·d·W
      + L_mem·N²·H·d_h ]  per reference

A decode step (one token per row, no backward) is the forward of the same terms with the
query attending every one of the cache's S key slots: 2·[ L·(2·d·H·d_h + 2·d·d_h·H_kv
+ 3·d·W + 2·S·H·d_h) + V·d ] per row.

experiments/bench_train.py turns these into MFU; m3jax.train.aot compares them with what
XLA compiles.
"""

from __future__ import annotations

from m3jax.model import splash_attention as splash
from m3jax.model.config import ModelConfig
from m3jax.model.joint_attention import impl_for_short_causal, kernel_of, on_kernel

# Per kernel (m3jax.model.splash_attention's layout): (forward matmuls, backward matmuls,
# backward calls) per computed query-key pair (each 2·d_h FLOPs per head). splash:
# forward q·kᵀ and p·v; backward (unfused) dq kernel q·kᵀ, do·vᵀ, ds·k and dkv kernel
# q·kᵀ, pᵀ·do, do·vᵀ, dsᵀ·q (its fused backward's per-KV-tile float32 dq partials took
# v5e:16x16 stage 1 from 8.4 to 31.4 GiB: docs/tpu.md). flash (m3jax.model.flash_kernel):
# one fused backward call, q·kᵀ, pᵀ·do, do·vᵀ, dsᵀ·q, ds·k.
KERNEL_MATMULS = {"splash": (2, 7, 2), "flash": (2, 5, 1)}
# Remat policies under which the backward runs a kernel's forward again: every
# checkpointing policy, except the one that saves the flash kernel's named outputs.
_CHECKPOINTING = ("full", "dots", "dots_except_attention", "dots_attention_out")
KERNEL_RECOMPUTED = {"splash": _CHECKPOINTING, "flash": _CHECKPOINTING[:3]}
# Kernels whose calls carry a cost estimate, which m3jax.train.hlo_flops counts in the HLO
# (splash has none: its FLOPs are added from the tile masks).
KERNEL_COST_IN_HLO = {"splash": False, "flash": True}


def encoder_on_kernel(c: ModelConfig) -> bool:
  """Whether the live encoder's references run the kernel (else XLA attention): the
  choice ``Transformer.encode`` makes (``joint_attention.impl_for_short_causal``)."""
  return on_kernel(impl_for_short_causal(c.attention_impl, c.memory.ref_len + 1))


def _linear_per_token(c: ModelConfig) -> int:
  """Multiply-adds of one token through one layer's projections and MLP."""
  d, hd = c.embed_dim, c.num_heads * c.head_dim
  return 2 * d * hd + 2 * d * c.head_dim * c.num_kv_heads + 3 * d * c.mlp_dim


def flops_stage1(c: ModelConfig, t: int) -> float:
  """Train FLOPs (fwd+bwd) of one T-token sequence without memory."""
  hd = c.num_heads * c.head_dim
  attn = 2 * t * (t / 2) * hd
  return 6 * (c.num_layers * (t * _linear_per_token(c) + attn) + t * c.vocab_size * c.embed_dim)


def flops_memory_read(c: ModelConfig, t: int) -> float:
  """Extra train FLOPs (fwd+bwd) of one sequence's memory layers attending memories."""
  m = c.memory
  return (
    6
    * m.num_memory_layers
    * 2
    * t
    * (m.refs_per_chunk * m.tokens_per_head)
    * (c.num_heads * c.head_dim)
  )


def flops_encode(c: ModelConfig, t: int, grad: bool) -> float:
  """FLOPs of encoding one sequence's T/chunk references live (×3 with gradients)."""
  m, d, hd = c.memory, c.embed_dim, c.num_heads * c.head_dim
  n, depth = m.ref_len, m.encode_depth
  per_ref = 2 * (
    depth * n * (2 * d * hd + 2 * d * c.head_dim * c.num_kv_heads)
    + depth * 2 * (n * n / 2) * hd
    + (depth - 1) * n * 3 * d * c.mlp_dim
    + m.num_memory_layers * n * n * hd
  )
  return (t // m.chunk_len) * per_ref * (3 if grad else 1)


def train_step_flops(
  c: ModelConfig, t: int, batch: int, *, use_memory: bool, encode_grad: bool = True
) -> dict[str, float]:
  """{"model", "encode", "total"} FLOPs of one train step over ``batch`` sequences."""
  model = flops_stage1(c, t) * batch
  enc = 0.0
  if use_memory:
    model += flops_memory_read(c, t) * batch
    enc = flops_encode(c, t, encode_grad) * batch
  return {"model": model, "encode": enc, "total": model + enc}


def decode_step_flops(c: ModelConfig, batch: int, key_slots: int) -> float:
  """Forward FLOPs of one decode step: ``batch`` tokens, each attending ``key_slots`` keys."""
  hd = c.num_heads * c.head_dim
  per_layer = _linear_per_token(c) + 2 * key_slots * hd
  return 2 * batch * (c.num_layers * per_layer + c.vocab_size * c.embed_dim)


def dense_attention_extra(
  c: ModelConfig,
  t: int,
  batch: int,
  *,
  use_memory: bool,
  encode_grad: bool = True,
  context: bool = True,
  encoder: bool = True,
) -> float:
  """FLOPs a dense (masked) attention computes beyond App. A's causal count.

  App. A counts T·(T/2) query-key pairs per layer; the dense kernel computes all
  T·(T+1) (sink + context) and masks half: 2·2·T·(T/2+1)·H·d_h more per layer forward,
  ×3 with the backward. Stage 2's encoder likewise computes (N+1)² pairs where App. A
  counts N²/2 (×3 with encode_grad). ``context`` / ``encoder``: which of the two runs
  dense XLA attention (a fused kernel's work is counted by ``attention_kernels``).
  """
  hd = c.num_heads * c.head_dim
  extra = 3 * c.num_layers * 4 * t * (t / 2 + 1) * hd if context else 0.0
  if use_memory and encoder:
    m = c.memory
    n = m.ref_len
    per_ref = m.encode_depth * 4 * ((n + 1) ** 2 - n * n / 2) * hd
    extra += (t // m.chunk_len) * per_ref * (3 if encode_grad else 1)
  return extra * batch


def remat_extra(
  c: ModelConfig,
  t: int,
  batch: int,
  policy: str | None,
  *,
  fused_attention: bool = False,
  encoder_refs: int = 0,
) -> float:
  """Forward FLOPs the backward recomputes under ``model.remat_policy`` (dense attention).

  full: every layer's forward again; dots_except_attention: the attention score and
  value matmuls; none / dots: nothing. ``fused_attention``: the
  training forward's attention is a kernel whose work (and recompute) is outside the
  matmul count, so only its projections and MLP are. ``encoder_refs``: references per
  sequence the live encoder runs with gradients and XLA attention (stage 2 with
  ``encode_grad``): their attention's recompute (the encoder's projections and MLP are
  counted under ``full`` only).
  """
  policy = policy or "none"
  hd = c.num_heads * c.head_dim
  attention = 0 if fused_attention else 4 * t * (t + 1) * hd
  per_layer = {
    "full": 2 * t * _linear_per_token(c) + attention,
    "dots_except_attention": attention,
    "dots_attention_out": attention,  # XLA attention names no outputs to keep
  }.get(policy, 0.0)
  extra = c.num_layers * per_layer
  if encoder_refs and policy in ("full", "dots_except_attention", "dots_attention_out"):
    n, layers = c.memory.ref_len + 1, c.memory.encode_depth - 1
    extra += encoder_refs * layers * 4 * n * n * hd
  return extra * batch


def attention_kernels(
  c: ModelConfig,
  t: int,
  batch: int,
  *,
  use_memory: bool,
  encode_grad: bool = True,
  remat: str | None = None,
  microbatches: int = 1,
) -> dict[str, float]:
  """{"calls", "flops"} of a train step's Pallas attention kernels (``c.attention_impl``
  splash or flash), from each call's static tile mask
  (``splash_attention.computed_pairs``) and the kernel's matmuls per pair. XLA's matmul
  count has none of them: splash carries no cost estimate (this is its count), flash
  carries this count as its ``cost_estimate`` (m3jax.train.hlo_flops reads it back).

  Per layer: a forward call and the backward calls (splash: dq and dkv; flash: one),
  plus the forward again under a remat policy that does not keep the kernel's outputs
  (``KERNEL_RECOMPUTED``). The live encoder's short references run XLA attention, not
  the kernel (``joint_attention.impl_for_short_causal``): XLA counts them. A call covers
  the whole microbatch.
  """
  kernel = kernel_of(c.attention_impl)
  if kernel is None:
    return {"calls": 0.0, "flops": 0.0}
  fwd_matmuls, bwd_matmuls, bwd_calls = KERNEL_MATMULS[kernel]
  m, hd = c.memory, c.num_heads * c.head_dim
  fwd_calls = 1 + int((remat or "none") in KERNEL_RECOMPUTED[kernel])
  per_pair = lambda matmuls: matmuls * 2 * hd
  train_matmuls = fwd_calls * fwd_matmuls + bwd_matmuls
  plain = splash.computed_pairs(t, t + 1, 1, 0, 0, m.chunk_len)
  mem_layers = m.num_memory_layers if use_memory else 0
  pairs = (c.num_layers - mem_layers) * plain
  if mem_layers:
    per_chunk = m.refs_per_chunk * m.tokens_per_head
    chunks = t // m.chunk_len
    pairs += mem_layers * splash.computed_pairs(t, t + 1, 1, chunks, per_chunk, m.chunk_len)
  flops = pairs * per_pair(train_matmuls) * batch
  calls = c.num_layers * (fwd_calls + bwd_calls)
  if use_memory and encoder_on_kernel(c):
    n, layers = m.ref_len, m.encode_depth - 1
    enc_matmuls = train_matmuls if encode_grad else fwd_matmuls
    enc_pairs = layers * splash.computed_pairs(n + 1, n + 1, 0, 0, 0, m.chunk_len)
    flops += (t // m.chunk_len) * batch * enc_pairs * per_pair(enc_matmuls)
    calls += layers * ((fwd_calls + bwd_calls) if encode_grad else 1)
  return {"calls": float(calls * microbatches), "flops": float(flops)}
