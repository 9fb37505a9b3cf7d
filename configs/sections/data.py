"""Data section (``config.data``): sources, vocabulary, the synthetic world, packing, retrieval.

Turned into the frozen ``m3jax.data.config.DataConfig`` by ``data_config_from`` (unknown
keys are rejected there). ``tiny`` builds in about a second for tests; ``small`` is the CPU
demo (about 2.4M training tokens, prepared in about 20 s on 2 cores).
"""

from __future__ import annotations

import ml_collections

_WORLD = {
    "tiny": dict(num_entities=120, prose_docs_per_entity=2, qa_passes=2, filler_docs=40),
    "small": dict(num_entities=8000, prose_docs_per_entity=3, qa_passes=3, filler_docs=3000),
    "paper_2p4b": dict(num_entities=6000, prose_docs_per_entity=3, qa_passes=3,
                       filler_docs=3000),
}
_VOCAB = {"tiny": 512, "small": 2048, "paper_2p4b": 2048}
_SEQ_LEN = {"tiny": 64, "small": 256, "paper_2p4b": 2048}


def get(variant: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = f"artifacts/data/{variant}"   # everything prepare_data writes (idempotent)
  c.seed = 0
  c.vocab_kind = "sentencepiece"              # sentencepiece | byte (tests: vocab 261)
  c.vocab_size = _VOCAB.get(variant, 2048)    # <= model.vocab_size
  c.synthetic = True                          # the invented knowledge world
  c.world = ml_collections.ConfigDict(dict(
      heldout_fraction=0.2, num_countries=40, num_rivers=60, num_choices=4,
      **_WORLD.get(variant, _WORLD["small"])))
  c.real_text = True                          # pycountry prose + KB references
  c.real_text_limit = 40 if variant == "tiny" else 0   # countries (0 = all)
  c.seq_len = _SEQ_LEN.get(variant, 256)      # T, a multiple of model.memory.chunk_len
  c.valid_sequences = 8 if variant == "tiny" else 64
  c.train_query = "own"                       # own | previous (strictly causal ablation)
  c.train_overlap_threshold = 0.9             # leakage filter (paper §3.6, Eq. 6)
  c.eval_overlap_threshold = 2 / 3            # anti-copy filter (paper App. C)
  c.max_span_factor = 2                       # Eq. 6 matched span <= 2|r|
  c.retrieval_candidates = 8                  # top-k tried before giving a chunk no reference
  c.embedder = "sparse_tfidf"   # exact sparse TF-IDF (docs/data.md), or an EMBEDDERS key
  c.embedding_dim = 256         # used by projected embedders only
  # Bring your own knowledge base (docs/data.md): JSONL paths; "" = unused.
  c.user_files = ml_collections.ConfigDict(dict(references="", train_text="", qa=""))
  return c
