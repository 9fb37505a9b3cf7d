"""Logical axis names, declared once, and the shape-letter glossary.

Shape letters used in names across m3jax (``q_BxTxHxD`` etc.):

  B batch          T query length       S key slots (sink + context / cache)
  H query heads    K kv heads           G query heads per kv head (H = K*G)
  D head dim       E model width (d)    F MLP width (W)      V vocab
  L layers         Lm memory layers     C 64-token chunks    R references per chunk
  M memory tokens kept per kv head (top-k)                   N reference length (<=128)

Parameters and activations carry the logical names below; ``m3jax.sharding`` maps
them onto mesh axes with rules that live in the config, so sharding a memory batch
(or anything else) is a config change.
"""

BATCH = "batch"
LENGTH = "length"
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV_HEADS = "kv_heads"
HEAD_DIM = "head_dim"
VOCAB = "vocab"
LAYERS = "layers"
CACHE_LENGTH = "cache_length"

# Explicit memories: [Lm, B, C, R, K, M, D]
MEM_LAYERS = "mem_layers"
MEM_CHUNKS = "mem_chunks"
MEM_REFS = "mem_refs"
MEM_TOKENS = "mem_tokens"

MEMORY_KV_AXES = (MEM_LAYERS, BATCH, MEM_CHUNKS, MEM_REFS, KV_HEADS, MEM_TOKENS, HEAD_DIM)
MEMORY_MASK_AXES = (BATCH, MEM_CHUNKS, MEM_REFS, MEM_TOKENS)
CACHE_KV_AXES = (LAYERS, BATCH, CACHE_LENGTH, KV_HEADS, HEAD_DIM)
# Smeared keys: the raw keys of the last smear_width tokens, oldest first.
CACHE_LAST_KEY_AXES = (LAYERS, BATCH, None, KV_HEADS, HEAD_DIM)
