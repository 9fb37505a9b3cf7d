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
from typing import Any

from m3jax.task import qa_prompt as qa_prompt  # the one QA format, re-exported
from m3jax.task import qa_text

_ONSETS = [
  "b",
  "br",
  "d",
  "dr",
  "f",
  "g",
  "gr",
  "k",
  "kr",
  "l",
  "m",
  "n",
  "p",
  "pr",
  "r",
  "s",
  "sh",
  "st",
  "t",
  "tr",
  "v",
  "z",
  "th",
  "h",
  "j",
  "c",
  "bl",
  "fl",
]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "k", "m", "nd", "x"]

OCCUPATIONS = [
  "baker",
  "painter",
  "sailor",
  "farmer",
  "teacher",
  "doctor",
  "weaver",
  "miner",
  "poet",
  "judge",
  "hunter",
  "tailor",
  "potter",
  "singer",
  "builder",
  "merchant",
  "soldier",
  "priest",
  "scribe",
  "brewer",
]
INSTRUMENTS = [
  "flute",
  "harp",
  "drum",
  "violin",
  "lute",
  "horn",
  "piano",
  "guitar",
  "cello",
  "trumpet",
  "organ",
  "bell",
]
ANIMALS = [
  "fox",
  "owl",
  "bear",
  "wolf",
  "horse",
  "eagle",
  "goat",
  "swan",
  "lion",
  "deer",
  "crow",
  "whale",
  "otter",
  "hawk",
]
PRODUCTS = [
  "soap",
  "glass",
  "paper",
  "rope",
  "salt",
  "wine",
  "tea",
  "steel",
  "silk",
  "bread",
  "shoes",
  "clocks",
  "boats",
  "lamps",
  "maps",
  "cheese",
]
GENRES = [
  "jazz",
  "rock",
  "folk",
  "blues",
  "opera",
  "disco",
  "metal",
  "punk",
  "soul",
  "reggae",
  "pop",
  "techno",
]
COLORS = [
  "red",
  "blue",
  "green",
  "yellow",
  "black",
  "white",
  "purple",
  "orange",
  "brown",
  "gray",
  "pink",
  "gold",
]

# Attribute -> (value kind, KB key, question templates, prose templates).
# Value kinds: a closed list, "year", "city"/"person" (a train entity's name), or
# "country"/"river" (invented names from a closed pool).
ATTRIBUTES: dict[str, dict[str, Any]] = {
  "occupation": dict(
    kind=OCCUPATIONS,
    key="occupation",
    questions=["What is the occupation of {e}?", "What did {e} do for a living?"],
    prose=[
      "{e} worked as a {v} for most of a long life.",
      "By trade, {e} was a {v}.",
      "People knew {e} as a skilled {v}.",
      "Before anything else, {e} was a {v}.",
    ],
  ),
  "birthplace": dict(
    kind="city",
    key="birthplace",
    questions=["Where was {e} born?", "In which city was {e} born?"],
    prose=[
      "{e} was born in {v}.",
      "{e} grew up in the city of {v}.",
      "The family of {e} lived in {v}, where {e} was born.",
    ],
  ),
  "birth_year": dict(
    kind="year",
    key="born",
    questions=["In which year was {e} born?", "When was {e} born?"],
    prose=[
      "{e} came into the world in {v}.",
      "The year {v} saw the birth of {e}.",
      "{e}, born in {v}, was the eldest child.",
    ],
  ),
  "instrument": dict(
    kind=INSTRUMENTS,
    key="instrument",
    questions=["Which instrument does {e} play?", "What instrument did {e} learn?"],
    prose=[
      "In the evenings {e} played the {v}.",
      "{e} was famous for playing the {v}.",
      "Friends say {e} never went anywhere without a {v}.",
    ],
  ),
  "country": dict(
    kind="country",
    key="country",
    questions=["In which country is {e}?", "Which country is {e} part of?"],
    prose=[
      "{e} is a city in {v}.",
      "{e} lies in the north of {v}.",
      "The town of {e} belongs to {v}.",
    ],
  ),
  "founded": dict(
    kind="year",
    key="founded",
    questions=["When was {e} founded?", "In which year was {e} founded?"],
    prose=[
      "{e} was founded in {v}.",
      "The founding of {e} dates to {v}.",
      "Since {v}, {e} has grown steadily.",
    ],
  ),
  "river": dict(
    kind="river",
    key="river",
    questions=["Which river flows through {e}?", "What is the river of {e}?"],
    prose=[
      "The river {v} flows through {e}.",
      "{e} sits on the banks of the {v}.",
      "Boats on the {v} bring goods to {e}.",
    ],
  ),
  "mascot": dict(
    kind=ANIMALS,
    key="mascot",
    questions=["What animal is the symbol of {e}?", "Which animal appears on the flag of {e}?"],
    prose=[
      "A {v} appears on the flag of {e}.",
      "The people of {e} chose the {v} as their symbol.",
      "Statues of a {v} stand in every square of {e}.",
    ],
  ),
  "founder": dict(
    kind="person",
    key="founder",
    questions=["Who founded {e}?", "Who is the founder of {e}?"],
    prose=["{e} was started by {v}.", "{v} built {e} from nothing.", "It was {v} who created {e}."],
  ),
  "headquarters": dict(
    kind="city",
    key="headquarters",
    questions=["Where is {e} based?", "In which city is {e} based?"],
    prose=[
      "The offices of {e} are in {v}.",
      "{e} is run from {v}.",
      "Most workers of {e} live near {v}.",
    ],
  ),
  "product": dict(
    kind=PRODUCTS,
    key="product",
    questions=["What does {e} make?", "What product is {e} known for?"],
    prose=[
      "{e} makes {v}.",
      "The main business of {e} is selling {v}.",
      "Shops everywhere stock {v} made by {e}.",
    ],
  ),
  "genre": dict(
    kind=GENRES,
    key="genre",
    questions=["What music does {e} play?", "What genre is {e}?"],
    prose=["{e} plays loud {v} music.", "Fans of {v} love {e}.", "The sound of {e} is pure {v}."],
  ),
  "color": dict(
    kind=COLORS,
    key="color",
    questions=["What color does {e} wear on stage?", "Which color is the logo of {e}?"],
    prose=[
      "On stage, {e} always wears {v}.",
      "The logo of {e} is painted {v}.",
      "Every album by {e} has a {v} cover.",
    ],
  ),
}

ENTITY_TYPES: dict[str, tuple[str, ...]] = {
  "person": ("occupation", "birthplace", "birth_year", "instrument"),
  "city": ("country", "founded", "river", "mascot"),
  "company": ("founder", "headquarters", "product", "founded"),
  "band": ("genre", "birthplace", "founded", "color"),
}
_INTROS = {
  "person": [
    "This is the story of {e}.",
    "{e} is remembered by many.",
    "Let us talk about {e}.",
    "Few people today recall {e}.",
  ],
  "city": [
    "{e} is an old place.",
    "Travelers often visit {e}.",
    "Here is a short note on {e}.",
    "Many songs mention {e}.",
  ],
  "company": [
    "{e} is a busy firm.",
    "Some facts about the firm {e}.",
    "{e} is well known in trade.",
    "Everyone has heard of {e}.",
  ],
  "band": [
    "{e} is a band.",
    "The group {e} tours every summer.",
    "Here is what we know about the band {e}.",
    "{e} has many fans.",
  ],
}
_FILLER_SUBJECTS = [
  "The weather",
  "The old road",
  "The market",
  "A quiet morning",
  "The harbor",
  "The small garden",
  "The library",
  "The long winter",
  "The evening train",
  "The village fair",
  "A letter",
  "The new bridge",
]
_FILLER_PREDICATES = [
  "was calm and bright.",
  "felt longer than usual.",
  "drew a large crowd.",
  "brought little news.",
  "stayed open late.",
  "smelled of rain and bread.",
  "was the talk of the week.",
  "needed repairs again.",
  "surprised everyone.",
  "passed without trouble.",
]


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
  s = "".join(
    rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)
  )
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
  sents = [rng.choice(_INTROS[e.type]).format(e=e.name)]
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
    f"{rng.choice(_FILLER_SUBJECTS)} {rng.choice(_FILLER_PREDICATES)}"
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
