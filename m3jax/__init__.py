"""m3jax: Memory³ (Language Modeling with Explicit Memory) in JAX/Flax."""

__version__ = "0.1.0"
