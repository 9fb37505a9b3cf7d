"""Frozen, validated configs for the network and its explicit-memory layout.

Built in one place (:func:`model_config_from`) from the ml_collections run config;
every invariant is checked in ``__post_init__`` and a violation names the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax.numpy as jnp

SELECTIONS = ("attention", "expsum", "random", "first")
# What the backward pass keeps of each layer (m3jax.model.stack.remat_policy says how).
REMAT_POLICIES = ("none", "full", "dots", "dots_except_attention", "dots_attention_out")
ATTENTION_IMPLS = (
  "dense",
  "flat",
  "cudnn",
  "splash",
  "splash_interpret",
  "flash",
  "flash_interpret",
  "auto",
)


def _fail(field: str, msg: str):
  raise ValueError(f"invalid config field {field!r}: {msg}")


def require_positive(cfg: Any, names: Sequence[str], prefix: str = "") -> None:
  """Each field ``names`` of the config dataclass ``cfg`` is > 0; an error names the first not."""
  for name in names:
    if getattr(cfg, name) <= 0:
      _fail(prefix + name, f"must be positive, got {getattr(cfg, name)}")


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
  """Where explicit memories are read and how large they are (paper §3.1-3.3)."""

  memory_layers: tuple[int, ...] = ()
  tokens_per_head: int = 8  # k: tokens kept per (memory layer, kv head)
  refs_per_chunk: int = 5  # R: memories attended by each chunk
  chunk_len: int = 64  # a retrieval every 64 tokens
  ref_len: int = 128  # references are at most 128 tokens
  selection: str = "attention"  # attention | expsum | random | first
  # Before a run trains, ref_len grows to hold this quantile of the knowledge base's lines
  # (in 16-token steps, at most FIT_REF_LEN_CAP; m3jax.run.reference_length). 0: ref_len as
  # given. Read once, by the commands that build a run; the run records the result.
  ref_len_fit: float = 0.0
  # Reference keys (not in the paper; off in its configs): every memory key of a reference
  # also carries one pooled key of the whole reference, g·Σ_t a_t·k_t with a_t =
  # softmax_t(k_t·w / √D) over its raw (un-rotated) keys, a learned w and g per memory
  # layer and KV head (both start at 0: the paper's keys), placed at the sink's position
  # 0. A query's score for a memory token is then its own match plus its reference's,
  # so a query that knows the asked entity can prefer the gold reference's value over a
  # look-alike's of the same attribute. m3jax.model.transformer.Transformer.reference_keys;
  # docs/design.md, "Session 30".
  reference_keys: bool = False

  def __post_init__(self):
    object.__setattr__(self, "memory_layers", tuple(int(l) for l in self.memory_layers))
    layers = self.memory_layers
    if list(layers) != sorted(set(layers)):
      _fail("memory.memory_layers", f"must be sorted and unique, got {layers}")
    if any(l < 0 for l in layers):
      _fail("memory.memory_layers", f"layer indices must be >= 0, got {layers}")
    require_positive(self, ("tokens_per_head", "refs_per_chunk", "chunk_len", "ref_len"), "memory.")
    if self.tokens_per_head > self.ref_len:
      _fail(
        "memory.tokens_per_head",
        f"k={self.tokens_per_head} exceeds the reference length {self.ref_len}",
      )
    if not 0.0 <= self.ref_len_fit <= 1.0:
      _fail("memory.ref_len_fit", f"{self.ref_len_fit} must be in [0, 1] (0: off)")
    if self.selection not in SELECTIONS:
      _fail("memory.selection", f"{self.selection!r} is not one of {SELECTIONS}")

  @property
  def num_memory_layers(self) -> int:
    return len(self.memory_layers)

  @property
  def encode_depth(self) -> int:
    """Layers an encoder must run: up to and including the deepest memory layer."""
    return max(self.memory_layers) + 1 if self.memory_layers else 0

  @property
  def context_offset(self) -> int:
    """RoPE position of the context's first token (``<s>``).

    ``<ref>`` sits at 0, memories share the parallel interval 1..ref_len, so the
    context starts right after it (DESIGN.md §2, "positions").
    """
    return self.ref_len + 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """A LLaMA-style decoder (pre-RMSNorm, RoPE, SwiGLU, GQA, no biases)."""

  vocab_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  embed_dim: int
  mlp_dim: int
  memory: MemoryConfig = MemoryConfig()
  rope_base: float = 10_000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = False
  init_std: float = 0.02
  dtype: Any = jnp.float32  # activations / compute
  param_dtype: Any = jnp.float32
  pad_id: int = 0
  eos_id: int = 1
  bos_id: int = 3
  ref_id: int = 4
  attention_impl: str = (
    "dense"  # dense | flat | cudnn | splash | flash | auto (m3jax.model.joint_attention)
  )
  scan_layers: bool = False  # nn.scan-style stacked layers (m3jax.model.stack)
  remat_policy: str = "none"  # one of REMAT_POLICIES (m3jax.model.stack)
  # Smeared keys (Olsson et al. 2022, "In-context learning and induction heads"): each
  # KV head's key at position t is sigmoid(a)·k_t + (1 - sigmoid(a))·k_{t-1}, with one
  # learned a per (layer, KV head), before RoPE. A key then says which token came
  # before it, so a head can find "the token after the one just written" (a copy: in
  # context or in memory) without first growing a previous-token head in an earlier
  # layer. Off in the paper's configs; m3jax.model.layers.AttentionProjections.
  smeared_keys: bool = False
  # How many earlier tokens a smeared key mixes in (W): s·k_t + (1 - s)·Σ_j π_j·k_{t-j},
  # j = 1..W, π a learned softmax per (layer, KV head). W = 2 lets a key say which two
  # words introduce it ("founded in", "headquarters ="), where one ("in", "=") may be
  # shared by every attribute. 1: Olsson et al.'s previous-token smear.
  smear_width: int = 1
  # Before a run trains, smeared_keys is set from the knowledge base when this is > 0: on
  # unless one word precedes more than this share of the training answers in their
  # references (a key = value table, where every value follows "=" and a smeared key
  # cannot tell attributes apart). m3jax.run.key_smearing; 0: smeared_keys as given.
  smeared_keys_fit: float = 0.0

  def __post_init__(self):
    shape = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "embed_dim", "mlp_dim")
    require_positive(self, ("vocab_size", *shape, "smear_width"))
    if self.num_heads % self.num_kv_heads:
      _fail(
        "num_kv_heads",
        f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}",
      )
    if self.head_dim % 2:
      _fail("head_dim", f"RoPE needs an even head_dim, got {self.head_dim}")
    if self.memory.memory_layers and max(self.memory.memory_layers) >= self.num_layers:
      _fail(
        "memory.memory_layers",
        f"{self.memory.memory_layers} is not a subset of "
        f"the {self.num_layers} layers 0..{self.num_layers - 1}",
      )
    for name in ("pad_id", "eos_id", "bos_id", "ref_id"):
      if not 0 <= getattr(self, name) < self.vocab_size:
        _fail(name, f"token id {getattr(self, name)} outside vocab_size={self.vocab_size}")
    if self.attention_impl not in ATTENTION_IMPLS:
      _fail("attention_impl", f"{self.attention_impl!r} is not one of {ATTENTION_IMPLS}")
    if self.remat_policy not in REMAT_POLICIES:
      _fail("remat_policy", f"{self.remat_policy!r} is not one of {REMAT_POLICIES}")
    if not 0.0 <= self.smeared_keys_fit <= 1.0:
      _fail("smeared_keys_fit", f"{self.smeared_keys_fit} must be in [0, 1] (0: off)")
    if self.ref_id == self.bos_id:
      _fail("ref_id", "<ref> and <s> must be different tokens")

  @property
  def group_size(self) -> int:
    return self.num_heads // self.num_kv_heads

  def is_memory_layer(self, layer: int) -> bool:
    return layer in self.memory.memory_layers

  def non_embedding_params(self) -> int:
    """Closed form of paper §3.4: per layer 2d² + 2·d·d_h·H_kv + 3dW (plus norms)."""
    d, w = self.embed_dim, self.mlp_dim
    attn = 2 * d * self.num_heads * self.head_dim + 2 * d * self.head_dim * self.num_kv_heads
    taps = self.smear_width if self.smear_width > 1 else 0
    smear = self.num_kv_heads * (1 + taps) if self.smeared_keys else 0
    pool = self.num_kv_heads * (self.head_dim + 1) if self.memory.reference_keys else 0
    return (
      self.num_layers * (attn + 3 * d * w + 2 * d + smear)
      + self.memory.num_memory_layers * pool
      + d
    )


def frozen_from(cls, values: Mapping[str, Any], prefix: str):
  """``cls(**values)`` for a frozen config dataclass; unknown keys are a clear error."""
  names = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - names)
  if unknown:
    raise ValueError(
      f"unknown config keys {[prefix + k for k in unknown]}; valid keys: {sorted(names)}"
    )
  return cls(**values)


_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def model_config_from(cfg: Mapping[str, Any]) -> ModelConfig:
  """Builds the frozen ModelConfig from a ``config.model`` ConfigDict/dict."""
  values = dict(cfg)
  memory = values.pop("memory", {})
  memory = (
    memory
    if isinstance(memory, MemoryConfig)
    else frozen_from(MemoryConfig, dict(memory), "model.memory.")
  )
  for key in ("dtype", "param_dtype"):
    if isinstance(values.get(key), str):
      if values[key] not in _DTYPES:
        _fail(key, f"{values[key]!r} is not one of {sorted(_DTYPES)}")
      values[key] = _DTYPES[values[key]]
  return frozen_from(ModelConfig, {**values, "memory": memory}, "model.")
