"""Explicit memory: selection, encoding, storage, retrieval (MemoryKV and the joint attention
live in m3jax.model, the network that reads them; re-exported here for notebooks)."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "MemoryKV": "m3jax.model.memory_kv",
    "joint_attention": "m3jax.model.joint_attention",
    "EncodedMemories": "m3jax.memory.encode",
    "encode_references": "m3jax.memory.encode",
    "to_memory_kv": "m3jax.memory.encode",
    "MemoryBank": "m3jax.memory.store",
    "BankConfig": "m3jax.memory.build",
    "bank_config_from": "m3jax.memory.build",
    "build_bank": "m3jax.memory.build",
    "load_index": "m3jax.memory.build",
    "make_embedder": "m3jax.memory.embedders",
    "make_retriever": "m3jax.memory.retriever",
    "MemoryFeeder": "m3jax.memory.feeder",
    "storage_report": "m3jax.memory.storage",
  },
)
