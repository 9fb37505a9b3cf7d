"""Writes a small invented world in the bring-your-own format, unlike the demo's world.

The demo's world (m3jax/data/synthetic.py) writes ``key = value`` references and trains on
QA-formatted text. Worlds users bring look different, so this one checks that the method
is not tuned to the demo: references are one or two natural sentences in varied
templates, training text is prose about *other* (train) entities with templates that share
nothing with the references', there is no QA-formatted training text at all, and questions
(about held-out entities, whose facts live only in the knowledge base) have 4 choices.

  python experiments/make_unseen_world.py --out /tmp/unseen --entities 1000
  python -m m3jax demo --workdir /tmp/unseen/run \\
      --config.data.user_files.references=/tmp/unseen/references.jsonl \\
      --config.data.user_files.train_text=/tmp/unseen/train.jsonl \\
      --config.data.user_files.qa=/tmp/unseen/qa.jsonl \\
      --config.data.synthetic=False --config.data.real_text=False \\
      --config.data.data_dir=/tmp/unseen/data

Values are of three kinds, as in any world: rare invented names, words from closed lists,
and numbers.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from m3jax.data import sources

_SYL = [
  "ka",
  "lo",
  "mir",
  "tev",
  "sun",
  "dra",
  "pol",
  "gai",
  "ren",
  "vos",
  "thu",
  "bel",
  "qua",
  "nim",
  "zor",
  "fen",
  "ost",
  "lia",
  "mor",
  "cad",
  "ish",
  "ul",
  "ver",
  "yan",
]
_HULLS = ["crimson", "ivory", "teal", "amber", "slate", "violet", "olive", "copper"]
_CARGO = ["salt", "timber", "spices", "wool", "iron", "glass", "tea", "silk"]
_HABITATS = ["marshes", "deserts", "caves", "reefs", "glaciers", "forests", "canyons", "meadows"]
_DIETS = ["beetles", "seeds", "kelp", "moss", "fish", "berries", "roots", "worms"]
_CRAFTS = [
  "weaving",
  "masonry",
  "brewing",
  "glassblowing",
  "tanning",
  "pottery",
  "smithing",
  "bookbinding",
]
_EMBLEMS = ["fox", "heron", "anchor", "lantern", "thistle", "raven", "key", "wheel"]

# kind -> attribute -> (value kind, reference phrasing, prose phrasings, question)
_SCHEMA = {
  "ship": {
    "captain": (
      "name",
      "{e} sails under captain {v}",
      ["Sailors on the {e} answer to {v}.", "{v} commands the {e}."],
      "Who is the captain of the ship {e}?",
    ),
    "port": (
      "place",
      "{e} calls {v} its home port",
      ["The {e} returns to {v} every winter.", "In {v} the {e} is a familiar sight."],
      "What is the home port of the ship {e}?",
    ),
    "hull": (
      "hull",
      "her hull is painted {v}",
      ["The {e} is easy to spot with its {v} hull.", "Painters keep the {e}'s hull a bright {v}."],
      "What color is the hull of the ship {e}?",
    ),
    "cargo": (
      "cargo",
      "{e} mostly carries {v}",
      ["Merchants load the {e} with {v}.", "The {e} smells of {v} after each voyage."],
      "What cargo does the ship {e} carry?",
    ),
    "launched": (
      "year",
      "{e} was launched in {v}",
      ["Records say the {e} first sailed in {v}.", "Since {v} the {e} has been at sea."],
      "In what year was the ship {e} launched?",
    ),
  },
  "creature": {
    "habitat": (
      "habitat",
      "the {e} lives in {v}",
      ["Travellers meet the {e} in {v}.", "Look for the {e} in {v}."],
      "Where does the {e} live?",
    ),
    "diet": (
      "diet",
      "{e} feeds on {v}",
      ["A hungry {e} hunts for {v}.", "Keepers feed the {e} {v}."],
      "What does the {e} eat?",
    ),
    "finder": (
      "name",
      "{e} was first described by {v}",
      ["{v} wrote the first account of the {e}.", "The naturalist {v} found the {e}."],
      "Who first described the {e}?",
    ),
    "legs": (
      "legs",
      "the {e} walks on {v} legs",
      ["Count them: the {e} has {v} legs.", "With {v} legs the {e} moves quickly."],
      "How many legs does the {e} have?",
    ),
  },
  "guild": {
    "craft": (
      "craft",
      "{e} is a guild devoted to {v}",
      ["Members of {e} practise {v}.", "{e} trains apprentices in {v}."],
      "What craft does the guild {e} practise?",
    ),
    "seat": (
      "place",
      "{e} meets in {v}",
      ["The halls of {e} stand in {v}.", "{e} holds its council in {v}."],
      "Where does the guild {e} meet?",
    ),
    "emblem": (
      "emblem",
      "its emblem is a {v}",
      ["The banner of {e} shows a {v}.", "A {v} is stitched on every cloak of {e}."],
      "What is the emblem of the guild {e}?",
    ),
    "chartered": (
      "year",
      "{e} received its charter in {v}",
      ["{e} has kept its charter since {v}.", "The charter of {e} dates from {v}."],
      "In what year was the guild {e} chartered?",
    ),
  },
}
_OPENERS = {
  "ship": ["{e} is a merchant ship", "The ship {e}"],
  "creature": ["The {e} is a small creature", "{e} is an animal of the north"],
  "guild": ["{e} is an old guild", "The guild {e}"],
}


def _name(rng, used: set, syllables=(2, 3)) -> str:
  while True:
    n = "".join(rng.choice(_SYL, rng.integers(*syllables, endpoint=True))).capitalize()
    if n not in used:
      used.add(n)
      return n


def _pools(rng, used) -> dict:
  return {
    "name": [_name(rng, used, (3, 4)) for _ in range(300)],
    "place": [_name(rng, used, (2, 3)) for _ in range(60)],
    "hull": _HULLS,
    "cargo": _CARGO,
    "habitat": _HABITATS,
    "diet": _DIETS,
    "craft": _CRAFTS,
    "emblem": _EMBLEMS,
    "year": [str(y) for y in range(1700, 1900)],
    "legs": [str(n) for n in range(2, 13, 2)],
  }


def build(num_entities: int, seed: int, heldout_fraction: float = 0.2, docs_per_entity: int = 3):
  rng = np.random.default_rng(seed)
  used: set = set()
  pools = _pools(rng, used)
  kinds = list(_SCHEMA)
  refs, train, qa = [], [], []
  for i in range(num_entities):
    kind = kinds[i % len(kinds)]
    e = _name(rng, used)
    facts = {a: str(rng.choice(pools[spec[0]])) for a, spec in _SCHEMA[kind].items()}
    attrs = list(facts)
    rng.shuffle(attrs)
    clauses = [_SCHEMA[kind][a][1].format(e=e, v=facts[a]) for a in attrs]
    opener = str(rng.choice(_OPENERS[kind])).format(e=e)
    cut = int(rng.integers(1, len(clauses)))
    text = (
      f"{opener}; {', and '.join(clauses[:cut])}. "
      f"{clauses[cut][0].upper() + clauses[cut][1:]}"
      + "".join(f", and {c}" for c in clauses[cut + 1 :])
      + "."
    )
    ref_id = f"{kind}-{i:05d}"
    refs.append({"id": ref_id, "text": text})
    if rng.random() < heldout_fraction:
      for a in facts:
        vkind = _SCHEMA[kind][a][0]
        wrong = [v for v in pools[vkind] if v != facts[a]]
        choices = [facts[a]] + [str(v) for v in rng.choice(wrong, 3, replace=False)]
        rng.shuffle(choices)
        qa.append(
          {
            "question": _SCHEMA[kind][a][3].format(e=e),
            "answer": facts[a],
            "choices": choices,
            "gold_ref_id": ref_id,
            "attribute": a,
            "value_kind": vkind,
          }
        )
    else:
      for _ in range(docs_per_entity):
        picked = rng.choice(list(facts), size=min(3, len(facts)), replace=False)
        sents = [str(rng.choice(_SCHEMA[kind][a][2])).format(e=e, v=facts[a]) for a in picked]
        train.append({"text": " ".join(sents)})
  rng.shuffle(train)
  return refs, train, qa


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for the three JSONL files")
  parser.add_argument("--entities", type=int, default=1000)
  parser.add_argument("--seed", type=int, default=7)
  args = parser.parse_args(argv)
  refs, train, qa = build(args.entities, args.seed)
  os.makedirs(args.out, exist_ok=True)
  for name, rows in (("references", refs), ("train", train), ("qa", qa)):
    sources.write_jsonl(os.path.join(args.out, f"{name}.jsonl"), rows)
  print(f"{args.out}: {len(refs)} references, {len(train)} training documents, {len(qa)} questions")


if __name__ == "__main__":
  main()
