"""Writes "world B", a second invented world in the bring-your-own format.

The project was tuned on its demo world and on experiments/make_unseen_world.py (ships,
creatures, guilds). World B is written independently of both, to check that the method
works on worlds in general: islands, inventors, observatories and dishes, four attributes
each, with their own names, closed lists, numbers and sentence templates. It writes three
JSONL files (docs/byo.md):

* ``references.jsonl`` ``{"id", "text"}``: one line per entity, one or two sentences that
  state all four of its attributes, in one of five templates per kind of entity.
* ``train.jsonl`` ``{"text"}``: prose about the train entities (a random half), in
  templates that share little wording with the references; each document tells two or
  three facts of one entity, and some documents tell facts of two. No ``Q: … A:`` text.
* ``qa.jsonl`` ``{"question", "answer", "choices", "gold_ref_id", ...}``: one question per
  attribute of each held-out entity (whose facts are only in the references), in one of
  two or three phrasings, with the answer and 3 distractors of the same attribute.
  Questions are about held-out entities only: ``data.user_qa_train="auto"`` trains on the
  questions of half the references (by a hash of ``gold_ref_id``) and evaluates the rest,
  so a question about a train entity would be evaluated on a fact the prose taught.

Values are of three kinds: rare invented names (people and places, built from syllables
of their own), words from closed lists of 8, and numbers (years, heights in metres,
counts of patents and telescopes, cooking minutes).

  python experiments/make_world_b.py --out /tmp/worldb --entities 800 --seed 11
  python -m m3jax demo --workdir /tmp/worldb/run \\
      --config.data.user_files.references=/tmp/worldb/references.jsonl \\
      --config.data.user_files.train_text=/tmp/worldb/train.jsonl \\
      --config.data.user_files.qa=/tmp/worldb/qa.jsonl \\
      --config.data.synthetic=False --config.data.real_text=False \\
      --config.data.data_dir=/tmp/worldb/data
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from m3jax.data import sources

_SYL = (
  "bri ox tam elo gund pim sar wex ju hal kor ibi nes ruv ta sko mel dov ari fyn gel ope zim hud"
).split()

_LISTS = {
  "export": ["pearls", "cinnamon", "cotton", "obsidian", "coral", "vanilla", "sugar", "sponges"],
  "invention": [
    "water clock",
    "sextant",
    "loom",
    "kiln",
    "bellows pump",
    "diving bell",
    "printing press",
    "windmill",
  ],
  "studies": [
    "comets",
    "nebulae",
    "eclipses",
    "meteors",
    "planets",
    "double stars",
    "auroras",
    "variable stars",
  ],
  "ingredient": [
    "lentils",
    "chestnuts",
    "barley",
    "mussels",
    "quince",
    "pumpkin",
    "almonds",
    "herring",
  ],
  "method": ["baked", "smoked", "braised", "steamed", "grilled", "fried", "pickled", "roasted"],
}
_NUMBERS = {
  "peak": range(140, 991),
  "born": range(1640, 1820),
  "patents": range(12, 97),
  "founded": range(1760, 1900),
  "telescopes": range(2, 20),
  "minutes": range(20, 245, 5),
}

# kind -> how questions name the entity, its attributes (-> value kind), reference
# templates (all attributes each), prose sentences per attribute, questions per attribute.
_KINDS = {
  "island": {
    "name": "the island {e}",
    "attrs": {"charted_by": "person", "export": "list", "peak": "number", "capital": "place"},
    "refs": [
      "{e} is an island first charted by {charted_by}. Its capital is {capital}, its highest"
      " peak stands {peak} metres tall, and its chief export is {export}.",
      "The island of {e}, whose main export is {export}, rises to {peak} metres at its summit;"
      " {charted_by} drew the first map of it, and {capital} serves as its capital.",
      "{capital} is the capital of {e}, an island that exports {export} and was first charted"
      " by {charted_by}. The summit of {e} reaches {peak} metres.",
      "First mapped by {charted_by}, the island {e} climbs to {peak} metres. It ships {export}"
      " abroad from its capital, {capital}.",
      "Sailors who reach {e} find an island {peak} metres high at its peak, with {capital} as"
      " its capital; {charted_by} charted it first, and it is famous for its {export}.",
    ],
    "prose": {
      "charted_by": [
        "Old sea logs credit {v} with the earliest survey of the coast of {e}.",
        "It was {v} who sketched the shores of {e} before anyone else.",
        "Nobody had drawn {e} on paper until {v} sailed around it with a compass.",
      ],
      "export": [
        "Most crates leaving {e} are packed with {v}.",
        "Traders visit {e} for its {v}.",
        "Ask anyone on {e} what pays the bills and the answer is {v}.",
      ],
      "peak": [
        "From the sea you can see the summit of {e}, {v} metres high.",
        "Climbers who reach the top of {e} stand {v} metres above the waves.",
        "The tallest hill on {e} measures {v} metres.",
      ],
      "capital": [
        "Ferries to {e} dock at {v}, the largest town there.",
        "The island council of {e} sits in {v}.",
        "Everyone on {e} goes to market in {v}, its main town.",
      ],
    },
    "questions": {
      "charted_by": [
        "Who first charted the island {e}?",
        "Which explorer drew the first map of the island {e}?",
      ],
      "export": [
        "What is the chief export of the island {e}?",
        "What does the island {e} mainly export?",
      ],
      "peak": [
        "How many metres high is the highest peak of the island {e}?",
        "How tall, in metres, is the summit of the island {e}?",
      ],
      "capital": [
        "What is the capital of the island {e}?",
        "Which town is the capital of the island {e}?",
      ],
    },
  },
  "inventor": {
    "name": "the inventor {e}",
    "attrs": {"invention": "list", "hometown": "place", "born": "number", "patents": "number"},
    "refs": [
      "{e} was an inventor born in {born} in the town of {hometown}. Best known for an"
      " improved {invention}, {e} held {patents} patents.",
      "Born in {hometown} in {born}, the inventor {e} designed a better {invention} and was"
      " granted {patents} patents.",
      "The inventor {e}, who came from {hometown} and was born in {born}, is known for an"
      " improved {invention} and registered {patents} patents.",
      "{e}, an inventor from {hometown} (born {born}), is remembered for the {invention}; the"
      " patent office lists {patents} patents under that name.",
      "Born in {born}, {e} left {hometown} to become an inventor, perfected the {invention},"
      " and ended a long career with {patents} patents.",
    ],
    "prose": {
      "invention": [
        "Workshops across the region copied the {v} that {e} had reworked.",
        "People who knew {e} remember a bench covered in parts for a {v}.",
        "Thanks to {e}, the {v} became cheaper and more reliable.",
      ],
      "hometown": [
        "{e} grew up in {v} and went back there in old age.",
        "A plaque in {v} marks the house where {e} lived as a child.",
        "The people of {v} are proud that {e} was one of them.",
      ],
      "born": [
        "{e} came into the world in {v}.",
        "Parish books record the birth of {e} in the year {v}.",
        "The life of {e} began in {v}.",
      ],
      "patents": [
        "Clerks stamped {v} separate patents with the name of {e}.",
        "A drawer in the archive holds all {v} of the patents of {e}.",
        "Over the years {e} filed {v} patents.",
      ],
    },
    "questions": {
      "invention": [
        "What device is the inventor {e} known for?",
        "Which machine did the inventor {e} improve?",
      ],
      "hometown": [
        "Which town does the inventor {e} come from?",
        "What is the home town of the inventor {e}?",
      ],
      "born": [
        "In what year was the inventor {e} born?",
        "When was the inventor {e} born?",
      ],
      "patents": [
        "How many patents did the inventor {e} hold?",
        "What number of patents was the inventor {e} granted?",
      ],
    },
  },
  "observatory": {
    "name": "the {e} Observatory",
    "attrs": {"director": "person", "studies": "list", "founded": "number", "telescopes": "number"},
    "refs": [
      "The {e} Observatory was founded in {founded} and is directed by {director}. Its"
      " {telescopes} telescopes are used mainly to study {studies}.",
      "{director} directs the {e} Observatory, which has studied {studies} since its founding"
      " in {founded} and now houses {telescopes} telescopes.",
      "Founded in {founded}, the {e} Observatory keeps {telescopes} telescopes trained on"
      " {studies} under its director, {director}.",
      "At the {e} Observatory, opened in {founded}, astronomers led by {director} watch"
      " {studies} through {telescopes} telescopes.",
      "Since {founded} the {e} Observatory has studied {studies}; it has {telescopes}"
      " telescopes, and {director} is its director.",
    ],
    "prose": {
      "director": [
        "Astronomers at the {e} Observatory report to {v}.",
        "Every night {v} decides where the {e} Observatory points its instruments.",
        "{v} runs the {e} Observatory and signs every logbook.",
      ],
      "studies": [
        "Most nights at the {e} Observatory are spent watching {v}.",
        "The staff of the {e} Observatory have published many papers on {v}.",
        "If you ask about {v}, people send you to the {e} Observatory.",
      ],
      "founded": [
        "The first stone of the {e} Observatory was laid in {v}.",
        "Stargazing at the {e} Observatory began in {v}.",
        "The {e} Observatory opened its doors in {v}.",
      ],
      "telescopes": [
        "Under the domes of the {e} Observatory stand {v} telescopes.",
        "The {e} Observatory counts {v} telescopes in all.",
        "With {v} telescopes, the {e} Observatory is busy every clear night.",
      ],
    },
    "questions": {
      "director": [
        "Who directs the {e} Observatory?",
        "Who is the director of the {e} Observatory?",
      ],
      "studies": [
        "What does the {e} Observatory mainly study?",
        "Which objects are observed at the {e} Observatory?",
      ],
      "founded": [
        "In what year was the {e} Observatory founded?",
        "When was the {e} Observatory founded?",
      ],
      "telescopes": [
        "How many telescopes does the {e} Observatory have?",
        "What is the number of telescopes at the {e} Observatory?",
      ],
    },
  },
  "dish": {
    "name": "the dish {e}",
    "attrs": {"origin": "place", "ingredient": "list", "method": "list", "minutes": "number"},
    "refs": [
      "{e} is a dish from {origin}: {method} {ingredient}, cooked for {minutes} minutes in all.",
      "{e}, a speciality of {origin}, takes {minutes} minutes to make, and its main"
      " ingredient, {ingredient}, is always {method}.",
      "The recipe for {e} comes from {origin}. It calls for {ingredient}, {method}, and takes"
      " {minutes} minutes.",
      "To make {e} the way it is done in {origin}, the {ingredient} must be {method}; the"
      " whole dish takes {minutes} minutes.",
      "{e} comes from {origin} and is ready after {minutes} minutes of work, with {method}"
      " {ingredient} at its heart.",
    ],
    "prose": {
      "origin": [
        "Families in {v} serve {e} on holidays.",
        "Nobody cooks {e} quite like they do in {v}.",
        "Travellers to {v} are told to try {e}.",
      ],
      "ingredient": [
        "Without {v} there is no {e}.",
        "Market stalls sell {v} by the sack to cooks making {e}.",
        "The base of {e} is simply {v}.",
      ],
      "method": [
        "Grandmothers insist that for {e} everything must be {v}.",
        "The kitchen smells wonderful whenever {e} is being {v}.",
        "Cooks who make {e} keep to the old way, and it is {v}.",
      ],
      "minutes": [
        "Leave {e} alone for {v} minutes and it is ready.",
        "A pot of {e} needs {v} minutes.",
        "Making {e} takes {v} minutes from start to finish.",
      ],
    },
    "questions": {
      "origin": [
        "Where does the dish {e} come from?",
        "Which town is the dish {e} a speciality of?",
      ],
      "ingredient": [
        "What is the main ingredient of the dish {e}?",
        "Which ingredient is the dish {e} made from?",
      ],
      "method": [
        "How is the main ingredient of the dish {e} cooked?",
        "Which cooking method does the dish {e} use?",
      ],
      "minutes": [
        "How many minutes does the dish {e} take to make?",
        "How long, in minutes, does the dish {e} take?",
      ],
    },
  },
}
_LINKS = ["", "Elsewhere, ", "In other news, ", "A different story: ", "Meanwhile, "]


def _word(rng, used: set, syllables: tuple[int, int]) -> str:
  """A fresh invented word (never one already in ``used``)."""
  while True:
    w = "".join(rng.choice(_SYL, rng.integers(*syllables, endpoint=True))).capitalize()
    if w not in used:
      used.add(w)
      return w


def _sentence(text: str) -> str:
  return text[0].upper() + text[1:]


def build(num_entities: int, seed: int, heldout_fraction: float = 0.5):
  """(references, training documents, questions) of a world of ``num_entities``."""
  rng = np.random.default_rng(seed)
  used: set = set()
  given = [_word(rng, used, (2, 2)) for _ in range(40)]
  places = [_word(rng, used, (2, 3)) for _ in range(60)]

  def person() -> str:
    return f"{rng.choice(given)} {_word(rng, used, (3, 3))}"

  kinds = list(_KINDS)
  entities = []
  for i in range(num_entities):
    kind = kinds[int(rng.integers(len(kinds)))]
    spec = _KINDS[kind]
    name = person() if kind == "inventor" else _word(rng, used, (2, 3))
    facts = {}
    for attr, vkind in spec["attrs"].items():
      if vkind == "person":
        facts[attr] = person()
      elif vkind == "place":
        facts[attr] = str(rng.choice(places))
      elif vkind == "list":
        facts[attr] = str(rng.choice(_LISTS[attr]))
      else:
        facts[attr] = str(rng.choice(_NUMBERS[attr]))
    held_out = bool(rng.random() < heldout_fraction)
    entities.append(dict(id=f"wb-{kind}-{i:04d}", kind=kind, e=name, facts=facts, held=held_out))

  refs = []
  for ent in entities:
    template = str(rng.choice(_KINDS[ent["kind"]]["refs"]))
    refs.append({"id": ent["id"], "text": template.format(e=ent["e"], **ent["facts"])})

  # Distractors come from the values the attribute takes (people: those of the world).
  options: dict[tuple[str, str], list[str]] = {}
  for kind, spec in _KINDS.items():
    for attr, vkind in spec["attrs"].items():
      if vkind == "person":
        vals = sorted({x["facts"][attr] for x in entities if x["kind"] == kind})
        while len(vals) < 4:
          vals.append(person())
      elif vkind == "place":
        vals = places
      elif vkind == "list":
        vals = _LISTS[attr]
      else:
        vals = [str(n) for n in _NUMBERS[attr]]
      options[kind, attr] = vals

  qa = []
  for ent in entities:
    if not ent["held"]:
      continue
    spec = _KINDS[ent["kind"]]
    for attr, vkind in spec["attrs"].items():
      answer = ent["facts"][attr]
      wrong = [v for v in options[ent["kind"], attr] if v != answer]
      choices = [answer] + [str(v) for v in rng.choice(wrong, 3, replace=False)]
      rng.shuffle(choices)
      qa.append(
        {
          "question": str(rng.choice(spec["questions"][attr])).format(e=ent["e"]),
          "answer": answer,
          "choices": choices,
          "gold_ref_id": ent["id"],
          "entity": ent["e"],
          "attribute": attr,
          "value_kind": vkind,
        }
      )

  # Prose: 2-4 snippets per train entity, 2-3 facts each, all facts told at least once;
  # about a third of the documents join two snippets about different entities.
  snippets = []
  for ent in entities:
    if ent["held"]:
      continue
    prose = _KINDS[ent["kind"]]["prose"]
    n = int(rng.integers(2, 4, endpoint=True))
    order = [a for _ in range(n) for a in rng.permutation(list(ent["facts"]))]
    at = 0
    for _ in range(n):
      k = int(rng.integers(2, 3, endpoint=True))
      attrs = list(dict.fromkeys(order[at : at + k]))
      at += k
      templates = [str(rng.choice(prose[a])) for a in attrs]
      sents = [_sentence(t.format(e=ent["e"], v=ent["facts"][a])) for t, a in zip(templates, attrs)]
      # A snippet that opens with a name keeps its capital after a linking phrase.
      snippets.append((ent["id"], " ".join(sents), templates[0].startswith("{")))
  rng.shuffle(snippets)
  train = []
  i = 0
  while i < len(snippets):
    pair = i + 1 < len(snippets) and snippets[i][0] != snippets[i + 1][0] and rng.random() < 0.35
    if pair:
      link = str(rng.choice(_LINKS))
      _, second, opens_with_name = snippets[i + 1]
      if link:
        second = link + (second if opens_with_name else second[0].lower() + second[1:])
      train.append({"text": f"{snippets[i][1]} {second}"})
      i += 2
    else:
      train.append({"text": snippets[i][1]})
      i += 1
  return refs, train, qa


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", required=True, help="directory for the three JSONL files")
  parser.add_argument("--entities", type=int, default=800)
  parser.add_argument("--seed", type=int, default=11)
  args = parser.parse_args(argv)
  refs, train, qa = build(args.entities, args.seed)
  os.makedirs(args.out, exist_ok=True)
  for name, rows in (("references", refs), ("train", train), ("qa", qa)):
    sources.write_jsonl(os.path.join(args.out, f"{name}.jsonl"), rows)
  held = len({q["gold_ref_id"] for q in qa})
  print(
    f"{args.out}: {len(refs)} references ({len(refs) - held} train, {held} held out), "
    f"{len(train)} training documents, {len(qa)} questions"
  )


if __name__ == "__main__":
  main()
