"""Memory bank + retrieval section (``config.bank``): storage, compression, index, embedder.

Turned into the frozen ``m3jax.memory.build.BankConfig`` by ``bank_config_from`` (unknown
keys are rejected there).
"""

from __future__ import annotations

import ml_collections

# PQ bytes per vector: the paper's 14 bytes per 80-dim vector (~5.7 dims per code);
# the small variants keep about the same dims per byte.
_PQ_BYTES = {"tiny": 4, "small": 8, "paper_2p4b": 14}
_ENCODE_BATCH = {"tiny": 16, "small": 32, "paper_2p4b": 64}


def get(variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.url = ""                       # TensorStore URL/path of the bank ("" = CLI --bank)
  c.quantization = "none"          # none | pq
  c.pq_bytes_per_vector = _PQ_BYTES.get(variant, 8)
  c.pq_train_refs = 2048           # references sampled (uniformly) to train the codebooks
  c.pq_iters = 20                  # k-means iterations
  c.cache_size = 1024              # LRU rows in RAM; 0 disables the cache
  c.sharded = variant == "paper_2p4b"   # zarr3 sharding codec (large banks)
  c.chunk_refs = 64                # rows per zarr chunk (unsharded)
  c.shard_refs = 4096              # rows per shard (sharded)
  c.index_kind = "auto"            # scann | numpy | auto (scann when importable)
  c.brute_force_max = 20_000       # ScaNN brute force up to this many references
  c.scann_reorder = 100            # exact re-scoring candidates (tree + AH)
  c.scann_search_fraction = 0.1    # fraction of tree leaves searched per query
  c.embedder = "sparse_tfidf"      # m3jax.memory.embedders.EMBEDDERS key (exact names)
  c.embedding_dim = 256
  c.encode_batch_size = _ENCODE_BATCH.get(variant, 32)
  c.anti_copy_threshold = 2 / 3    # eval: drop references overlapping the question more
  c.storage_num_references = 112_000_000   # paper §3.3 bank size (1.12e8 references)
  return c
