"""A seeded, invented knowledge world: the data that shows explicit memory helping.

Invented entities (people, cities, companies, bands) with pronounceable random names carry
four attributes each. Every fact exists in three renderings that never share a template:

* the **knowledge base**: one terse reference per entity, ``Zorblat (person) | occupation =
  baker | birthplace = Quenby | ...`` (20-60 tokens, stable id ``syn-<n>``);
* **pretraining prose**: short documents in varied sentence templates (no ``|``/``=``/``(``
  tokens, so Eq. 6 overlap with the reference stays well below the 0.9 leakage filter);
* **QA**: ``Q: What is the occupation of Zorblat? A: baker`` with multiple-choice
  distractors drawn from the same attribute's other values.

Entities are split into *train* entities (facts in the prose, the QA training text and the
KB) and *held-out* entities (facts ONLY in the KB; their QA is evaluation only). A held-out
entity's name never occurs in training text: attributes that name another entity only name
train entities. So a model can answer a held-out question only by reading the retrieved
memory, while every training document gives next-token targets (the attribute values) that
sit in the chunk's own reference and rarely earlier in its context: the signal that teaches
a small model to copy from memory within minutes.

Everything is a pure function of ``(WorldConfig, seed)``.
"""

from __future__ import annotations

import dataclasses
import random

from m3jax.data.world_lexicon import (
  ATTRIBUTES,
  CODAS,
  ENTITY_TYPES,
  FILLER_PREDICATES,
  FILLER_SUBJECTS,
  INTROS,
  ONSETS,
  VOWELS,
)
from m3jax.task import qa_prompt as qa_prompt  # the one QA format, re-exported
from m3jax.task import qa_text


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  num_entities: int = 200
  heldout_fraction: float = 0.2
  prose_docs_per_entity: int = 2  # different renderings of each train entity
  qa_passes: int = 2  # QA lines of every train fact, this many times
  filler_docs: int = 100
  num_countries: int = 40
  num_rivers: int = 60
  num_choices: int = 4
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Entity:
  name: str
  type: str
  facts: tuple[tuple[str, str], ...]  # (attribute, value), in ENTITY_TYPES order
  heldout: bool
  ref_id: str


def _name(rng: random.Random, syllables: int) -> str:
  s = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))
  return s.capitalize()


def _unique_names(rng: random.Random, n: int, taken: set[str]) -> list[str]:
  """Mostly two syllables (short in tokens), three when two run out of fresh names."""
  out = []
  tries = 0
  while len(out) < n:
    tries += 1
    name = _name(rng, 2 if tries < 20 * n else 3)
    if name not in taken and 4 <= len(name) <= 10:
      taken.add(name)
      out.append(name)
  return out


def build_entities(cfg: WorldConfig) -> list[Entity]:
  """Entities with facts; cross-entity values name train entities only."""
  rng = random.Random(cfg.seed)
  taken: set[str] = set()
  countries = _unique_names(rng, cfg.num_countries, taken)
  rivers = _unique_names(rng, cfg.num_rivers, taken)
  names = _unique_names(rng, cfg.num_entities, taken)
  types = [list(ENTITY_TYPES)[i % len(ENTITY_TYPES)] for i in range(cfg.num_entities)]
  order = list(range(cfg.num_entities))
  rng.shuffle(order)
  n_held = int(round(cfg.heldout_fraction * cfg.num_entities))
  held = set(order[:n_held])
  train_by_type = {
    t: [names[i] for i in range(cfg.num_entities) if types[i] == t and i not in held]
    for t in ENTITY_TYPES
  }
  for t, pool in train_by_type.items():
    if not pool:
      raise ValueError(
        f"world too small: no train entity of type {t!r}; raise "
        "data.world.num_entities or lower data.world.heldout_fraction"
      )
  entities = []
  for i in range(cfg.num_entities):
    facts = []
    for attr in ENTITY_TYPES[types[i]]:
      kind = ATTRIBUTES[attr]["kind"]
      if isinstance(kind, list):
        v = rng.choice(kind)
      elif kind == "year":
        v = str(rng.randint(1200, 1999))
      elif kind == "country":
        v = rng.choice(countries)
      elif kind == "river":
        v = rng.choice(rivers)
      else:  # another (train) entity's name, never this one
        pool = [
          n
          for n in rng.sample(train_by_type[kind], min(3, len(train_by_type[kind])))
          if n != names[i]
        ]
        v = pool[0] if pool else rng.choice(countries)
      facts.append((attr, v))
    entities.append(Entity(names[i], types[i], tuple(facts), i in held, f"syn-{i:06d}"))
  return entities


def reference_text(e: Entity) -> str:
  """The KB rendering: terse key = value fields, a format prose never uses."""
  fields = " | ".join(f"{ATTRIBUTES[a]['key']} = {v}" for a, v in e.facts)
  return f"{e.name} ({e.type}) | {fields}"


def prose_document(e: Entity, rng: random.Random) -> str:
  sents = [rng.choice(INTROS[e.type]).format(e=e.name)]
  facts = list(e.facts)
  rng.shuffle(facts)
  for attr, v in facts:
    sents.append(rng.choice(ATTRIBUTES[attr]["prose"]).format(e=e.name, v=v))
  return " ".join(sents)


def qa_examples(
  entities: list[Entity], cfg: WorldConfig, heldout: bool, rng: random.Random
) -> list[dict]:
  values: dict[str, list[str]] = {}
  for e in entities:
    for a, v in e.facts:
      values.setdefault(a, [])
      if v not in values[a]:
        values[a].append(v)
  out = []
  for e in entities:
    if e.heldout != heldout:
      continue
    for attr, v in e.facts:
      q = rng.choice(ATTRIBUTES[attr]["questions"]).format(e=e.name)
      others = [x for x in values[attr] if x != v]
      choices = rng.sample(others, min(cfg.num_choices - 1, len(others))) + [v]
      rng.shuffle(choices)
      out.append(
        dict(
          question=q, answer=v, choices=choices, entity=e.name, attribute=attr, gold_ref_id=e.ref_id
        )
      )
  return out


def filler_document(rng: random.Random) -> str:
  return " ".join(
    f"{rng.choice(FILLER_SUBJECTS)} {rng.choice(FILLER_PREDICATES)}"
    for _ in range(rng.randint(2, 5))
  )


@dataclasses.dataclass
class World:
  entities: list[Entity]
  references: list[dict]  # {"id", "text"}
  train_texts: list[dict]  # {"text"}
  valid_texts: list[dict]  # {"text"}: fresh renderings of train entities
  train_qa: list[dict]
  heldout_qa: list[dict]


def build_world(cfg: WorldConfig) -> World:
  """Everything the data pipeline needs from the invented world, deterministic in cfg."""
  entities = build_entities(cfg)
  rng = random.Random(cfg.seed + 1)
  references = [dict(id=e.ref_id, text=reference_text(e)) for e in entities]
  train_qa = qa_examples(entities, cfg, heldout=False, rng=rng)
  heldout_qa = qa_examples(entities, cfg, heldout=True, rng=rng)
  train = [e for e in entities if not e.heldout]
  docs = []
  for _ in range(cfg.prose_docs_per_entity):
    docs += [prose_document(e, rng) for e in train]
  for _ in range(cfg.qa_passes):
    # One QA document per entity, its questions in a fresh order and phrasing.
    for e in train:
      lines = []
      facts = list(e.facts)
      rng.shuffle(facts)
      for attr, v in facts:
        lines.append(qa_text(rng.choice(ATTRIBUTES[attr]["questions"]).format(e=e.name), v))
      docs.append("\n".join(lines))
  docs += [filler_document(rng) for _ in range(cfg.filler_docs)]
  rng.shuffle(docs)
  valid_rng = random.Random(cfg.seed + 2)
  valid = [prose_document(e, valid_rng) for e in valid_rng.sample(train, min(len(train), 64))]
  return World(
    entities,
    references,
    [dict(text=d) for d in docs],
    [dict(text=d) for d in valid],
    train_qa,
    heldout_qa,
  )
