"""Inference: generation with memory refresh, memory sources, RAG, live knowledge."""

from m3jax.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
  __name__,
  {
    "Generator": "m3jax.inference.generate",
    "GenerationResult": "m3jax.inference.generate",
    "SamplingConfig": "m3jax.inference.sampling",
    "RetrievedMemory": "m3jax.inference.memory_sources",
    "FixedMemory": "m3jax.inference.memory_sources",
    "LiveKnowledge": "m3jax.inference.knowledge",
  },
)
