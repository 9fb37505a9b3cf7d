"""Helpers shared by the memory tests (a tokenizer fake, a toy knowledge base)."""

import json


class WordTokenizer:
  """Whitespace tokenizer fake (seqio Vocabulary interface): ids grow as words appear."""

  def __init__(self, offset: int = 8):
    self.offset = offset
    self.vocab: dict[str, int] = {}
    self.words: list[str] = []

  def encode(self, text):
    out = []
    for w in text.split():
      if w not in self.vocab:
        self.vocab[w] = len(self.words) + self.offset
        self.words.append(w)
      out.append(self.vocab[w])
    return out

  def decode(self, ids):
    return " ".join(self.words[i - self.offset] for i in ids)


def write_kb(path, num_docs=12):
  with open(path, "w") as f:
    for i in range(num_docs):
      text = (
        f"Fact {i}. The capital of land{i} is town{i} on river{i % 3}. "
        f"Town{i} has {i * 7} bridges and a tower of {i + 40} metres. "
        f"Visitors of land{i} eat dish{i} every winter."
      )
      f.write(json.dumps({"id": f"doc{i}", "text": text}) + "\n")
  return str(path)
