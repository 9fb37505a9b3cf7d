"""Explicit memory: types, joint attention math, encoding, sparsification, storage, retrieval."""
