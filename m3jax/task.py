"""The task layer between the network and its users (t5x ``models.py`` idea, STYLE 17).

The network (``m3jax.model``) maps tokens + an optional ``MemoryKV`` to logits. What a
*language-modelling task with explicit memory* adds on top lives here, once, and
training, QA, perplexity, generation and the probes call it:

* the loss (``cross_entropy``) and per-token scoring (``target_logprobs``,
  ``LMTask.span_logprob``): one definition of "log p of the next token";
* "chunk queries -> memories": which text retrieves the memory of a chunk
  (``chunk_query_tokens``) and how per-query memories become the per-chunk ``MemoryKV``
  of a batch (``gather_memory``);
* the QA prompt format (``qa_prompt``, ``qa_text``), used by the synthetic world's
  training text and by evaluation prompts alike, and the RAG prompt's headers.

Layering: imports only ``m3jax.model`` and ``m3jax.model.memory_kv`` (it sits above the
memory core and below data / train / inference / evaluate, which all import it).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from m3jax.model.memory_kv import MemoryKV
from m3jax.model.config import ModelConfig


# ------------------------------------------------------------------------- QA format
# The RAG prompt's headers (paper §7.4: header1 refs header2 prompt; m3jax.inference.rag),
# here because training's in-context reference rows (m3jax.data.context_refs) use them too.
RAG_HEADER_REFERENCES = "Reference:"
RAG_HEADER_QUESTION = "Question:"


def qa_prompt(question: str) -> str:
  """The one QA prompt; the model should continue it with `` {answer}``."""
  return f"Q: {question} A:"


def qa_text(question: str, answer: str) -> str:
  """A QA pair as text: the prompt, a space, the answer (training text and scoring)."""
  return f"{qa_prompt(question)} {answer}"


# ------------------------------------------------------------------------- scoring
def target_logprobs(logits_BxTxV, tokens_BxT):
  """log p(tokens[t+1] | ≤ t) for t < T-1 -> [B, T-1] (in the logits' dtype)."""
  logp = jax.nn.log_softmax(logits_BxTxV[:, :-1], axis=-1)
  return jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], -1)[..., 0]


def cross_entropy(logits_BxTxV, targets_BxT, loss_mask_BxT, z_loss: float = 0.0):
  """The training loss: the ``loss_mask``-weighted mean of -log p(target) (+ z_loss · lse²).

  ``loss_mask`` is a weight per target: 0 leaves a token out, 1 everywhere is the plain
  mean, and a weight above 1 counts a token more (``data.memory_swap_loss_weight``).
  Returns (loss, aux) with aux = {"ce": the unweighted mean over the counted (weight > 0)
  tokens, "tokens": their number}; with 0/1 weights ``loss`` equals ``ce`` (+ z-loss).
  Computed in float32 whatever the activation dtype (unlike the evaluation scores,
  which keep the compute dtype; the two agree to rounding in float32).
  """
  logits = logits_BxTxV.astype(jnp.float32)
  lse_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll_BxT = lse_BxT - target_logit
  weight = loss_mask_BxT.astype(jnp.float32)
  counted = (weight > 0).astype(jnp.float32)
  tokens = jnp.sum(counted)
  ce = jnp.sum(nll_BxT * counted) / jnp.maximum(tokens, 1.0)
  denom = jnp.maximum(jnp.sum(weight), 1.0)
  loss = jnp.sum(nll_BxT * weight) / denom
  if z_loss:
    loss = loss + z_loss * jnp.sum(jnp.square(lse_BxT) * weight) / denom
  return loss, {"ce": ce, "tokens": tokens}


class LMTask:
  """The network + its task: jitted scoring of token spans with an optional memory.

  One instance per model config (``LMTask.of(cfg)`` caches them, so every caller shares
  one compiled scorer per input shape).
  """

  def __init__(self, cfg: ModelConfig):
    from m3jax.model.transformer import Transformer  # the data layer imports qa_text only

    self.cfg = cfg
    self.model = Transformer(cfg)
    self.span_logprob = jax.jit(self._span_logprob)

  @staticmethod
  @functools.lru_cache(maxsize=8)
  def of(cfg: ModelConfig) -> "LMTask":
    return LMTask(cfg)

  def _span_logprob(self, params, tokens_BxT, start_B, end_B, memory):
    """Per row, Σ log p(token t) over positions start ≤ t < end -> [B]."""
    tok = target_logprobs(self.model.apply({"params": params}, tokens_BxT, memory), tokens_BxT)
    pos = jnp.arange(1, tokens_BxT.shape[1])[None]
    keep = (pos >= start_B[:, None]) & (pos < end_B[:, None])
    return jnp.sum(jnp.where(keep, tok, 0.0), -1)


# ------------------------------------------------------------------------- memories
@dataclasses.dataclass(frozen=True)
class ChunkQuery:
  """One retrieval request: row ``row`` needs the memory of its context chunk ``chunk``.

  ``tokens``: the query chunk's token ids (may include ``<s>``, never padding).
  """

  row: int
  chunk: int
  tokens: np.ndarray


# memory_fn(queries) -> (MemoryKV with batch len(queries) and C == 1, ids object [n, R]
# (None: empty slot)). Retrieved, oracle, random and "no memory" sources share it.
MemoryFn = Callable[[Sequence[ChunkQuery]], "tuple[MemoryKV, np.ndarray]"]


def chunk_query_tokens(context: np.ndarray, prompt_len: int, chunk: int, chunk_len: int):
  """The query tokens of ``chunk`` of a row whose first ``prompt_len`` tokens are a prompt.

  A prompt chunk retrieves with its own prompt text (the last one may be partial); a
  later chunk with the full text of chunk c-1 (inference/generate.py's docstring).
  """
  n_prompt_chunks = -(-prompt_len // chunk_len)
  if chunk < n_prompt_chunks:
    return np.asarray(context[chunk * chunk_len : min((chunk + 1) * chunk_len, prompt_len)])
  return np.asarray(context[(chunk - 1) * chunk_len : chunk * chunk_len])


@dataclasses.dataclass
class Gathered:
  """memory: [L, B, C, …]; index_BxC: 1 + the query serving each chunk (0 = none);
  queries / ids: the distinct queries retrieved and their ids [n, R]; per_query: the
  source's memory [L, n, 1, …] (to arrange other index maps, e.g. decode memory)."""

  memory: MemoryKV
  index_BxC: np.ndarray
  queries: list
  ids: np.ndarray
  per_query: MemoryKV


def gather_memory(
  memory_fn: MemoryFn, plan_BxC: Sequence[Sequence[ChunkQuery | None]]
) -> Gathered | None:
  """Chunk queries -> the batch's MemoryKV, with one retrieval per distinct query.

  ``plan_BxC[b][c]``: the query whose memory chunk c of row b reads, or None (no memory).
  The same ChunkQuery object in several cells is retrieved once (a chunk inheriting
  another's memory). Returns None when the plan holds no query at all.
  """
  b = len(plan_BxC)
  c = max((len(row) for row in plan_BxC), default=0)
  index = np.zeros((b, c), np.int32)
  slot, queries = {}, []
  for i, row in enumerate(plan_BxC):
    for j, q in enumerate(row):
      if q is None:
        continue
      if id(q) not in slot:
        queries.append(q)
        slot[id(q)] = len(queries)
      index[i, j] = slot[id(q)]
  if not queries:
    return None
  mem, ids = memory_fn(queries)
  return Gathered(mem.arrange(jnp.asarray(index)), index, queries, np.asarray(ids), mem)
