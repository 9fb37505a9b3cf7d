"""Storage accounting for explicit memories (paper §3.3, SPEC.md §2 "Storage numbers").

Per reference the bank stores keys and values ``[L_mem, H_kv, k, d_h]``: for the paper
shape 22·2·8·8·80 values = 450,560 B in bf16, or 2,816 vectors × 14 B = 39,424 B with
PQ codes. The paper's "full KV" baseline keeps one K/V per *query* head in every layer
for all 128 tokens (44·40·128·80·2·2 B), which is what makes the sparsity 2·5·16 = 160.
Sizes use binary units (the paper's "TB" is TiB). Per-row metadata (mask, token ids)
and codebooks are reported separately; the paper's numbers exclude them.
"""

from __future__ import annotations

import dataclasses

TIB = 2**40
PIB = 2**50


@dataclasses.dataclass(frozen=True)
class StorageReport:
  vectors_per_reference: int  # L_mem · 2 · H_kv · k
  bytes_bf16: int  # per reference
  bytes_pq: int  # per reference, pq_bytes_per_vector per vector
  bytes_full: int  # the paper's dense baseline per reference
  metadata_bytes: int  # mask + kept-token positions, per reference
  num_references: int

  @property
  def sparsity(self) -> float:
    return self.bytes_full / self.bytes_bf16

  @property
  def sparsity_pq(self) -> float:
    return self.bytes_full / self.bytes_pq

  def bank_bytes(self, per_reference: int) -> int:
    return per_reference * self.num_references

  def lines(self) -> list[str]:
    n = self.num_references
    return [
      f"memory vectors per reference : {self.vectors_per_reference:,}",
      f"bytes per reference (bf16)   : {self.bytes_bf16:,} B",
      f"bytes per reference (PQ)     : {self.bytes_pq:,} B",
      f"dense 'full KV' per reference: {self.bytes_full:,} B",
      f"metadata per reference       : {self.metadata_bytes:,} B (mask + token ids; "
      "not in the paper's numbers)",
      f"total sparsity               : {self.sparsity:g} (with PQ: {self.sparsity_pq:.0f})",
      f"bank for {n:.3g} references : full {self.bank_bytes(self.bytes_full) / PIB:.2f} PiB"
      f", sparse {self.bank_bytes(self.bytes_bf16) / TIB:.1f} TiB"
      f", sparse + PQ {self.bank_bytes(self.bytes_pq) / TIB:.1f} TiB",
    ]


def storage_report(
  model_cfg, pq_bytes_per_vector: int = 14, num_references: int = 112_000_000
) -> StorageReport:
  m = model_cfg.memory
  vectors = m.num_memory_layers * 2 * model_cfg.num_kv_heads * m.tokens_per_head
  full = model_cfg.num_layers * model_cfg.num_heads * m.ref_len * model_cfg.head_dim * 2 * 2
  meta = m.tokens_per_head + 4 * m.num_memory_layers * model_cfg.num_kv_heads * m.tokens_per_head
  return StorageReport(
    vectors,
    vectors * model_cfg.head_dim * 2,
    vectors * pq_bytes_per_vector,
    full,
    meta,
    int(num_references),
  )
