"""World C: a third invented knowledge world in the bring-your-own format (docs/byo.md).

Four kinds of entity with four attributes each, to check the method on facts, wording and
values it was never tuned on: rivers (surveyor, riverbed, length in km, year first bridged),
comets (discoverer, tail colour, period in years, year first seen), abbeys (founder, craft,
number of monks, year consecrated) and board games (inventor, material of the pieces, squares
on the board, home town). Values are rare invented names (a syllable inventory; every word of
every name is used once in the world), closed-list words and numbers (years and counts).

A reference states all four facts of one entity in clauses of random order and phrasing
(30-80 words, a tenth 80-110 with sentences of colour; a fifth name another entity of its
kind). Half of the entities (by ``--seed``) are *train* entities, whose facts ``train.jsonl``
tells again in other words; questions ask about the other half only, whose facts are only in
``references.jsonl``.

  python experiments/make_world_c.py --out /tmp/worldc --entities 900 --seed 5
  python -m m3jax demo --workdir W \\
    --config.data.user_files.references=/tmp/worldc/references.jsonl \\
    --config.data.user_files.train_text=/tmp/worldc/train.jsonl \\
    --config.data.user_files.qa=/tmp/worldc/qa.jsonl \\
    --config.data.synthetic=False --config.data.real_text=False \\
    --config.data.data_dir=artifacts/data/worldc
"""

from __future__ import annotations

import argparse
import os
import random
import re

from m3jax.data import sources

FILES = ("references.jsonl", "train.jsonl", "qa.jsonl")
ONSETS = "b br d dr f g gr h k kr l m n p r s st t th v z sk".split()
VOWELS = "a e i o u a e o ae ei ou y".split()
INNER_CODAS = ["", "", "", "n", "r", "l", "s"]
FINAL_CODAS = ["", "", "n", "r", "l", "s", "th", "k", "m"]
YEARS = (1500, 1950)

# One item a line, or several split by " | ". `type NAME | full | short | pronoun` starts an
# entity type ({n} is the entity's name); its `opener`s may start a reference, its `colour`
# sentences state no fact, its `other` sentences name another entity {o}. `attr NAME | KIND
# [| VALUES]` starts an attribute: KIND is person (one or two words), place (one word), list
# (VALUES), number (VALUES = low high) or year; `ref` are its verb phrases in references,
# `train` its sentences in training documents ({e} the entity), `ask` its questions.
WORLD = """
type river | the {n} River | the {n} | the river
opener Winding between low hills, | Fed by snowmelt every spring, | Once a road for barges,
opener Slow and brown in late summer,
colour Herons wait in its shallows through most of the year, and otters have come back lately.
colour Its banks are lined with willows and small orchards, and walkers use the old towpath.
colour In dry summers the water drops low enough for children to wade across at the fords.
colour Several mills once stood along its lower reaches, though only one of them still turns.
colour Fishermen set their nets near its mouth at dawn and sell the catch on the quay by noon.
colour Floods in early spring sometimes cover the meadows beside it for weeks at a time.
other It joins the {o} River a little above the coast. | Its valley lies north of the {o} River.
other Travellers often confuse it with the {o} River, which flows through the next valley.
attr surveyor | person
ref was first charted by {v} | was mapped end to end by the surveyor {v}
ref owes its first survey to {v} | first appeared on a map drawn by {v}
train Old maps of {e} carry the signature of {v}.
train {v} is the name on the earliest survey sheet of {e}.
ask Who first charted the {e} River? | Which surveyor first mapped the {e} River?
attr riverbed | list | gravel clay chalk granite silt sandstone peat basalt
ref flows over a bed of {v} | has cut its channel through {v}
ref runs over {v} for most of its course | keeps a bed of {v} beneath its water
train Waders in {e} feel {v} under their boots. | Anyone who digs beside {e} hits {v} soon.
ask What is the bed of the {e} River made of? | Over what does the {e} River flow?
attr length | number | 40 980
ref runs for {v} kilometres | is {v} kilometres long from spring to mouth
ref stretches some {v} kilometres | covers {v} kilometres before it meets the sea
train From source to sea {e} measures {v} kilometres.
train A boat trip down the whole of {e} covers {v} kilometres.
ask How many kilometres long is the {e} River? | What is the length of the {e} River in km?
attr bridged | year
ref was first bridged in {v} | got its first stone bridge in {v}
ref has carried a bridge since {v} | saw its first crossing built in the year {v}
train Carts could cross {e} on a bridge from {v} onward. | The oldest bridge over {e} is from {v}.
ask In what year was the {e} River first bridged? | When did the {e} River get its first bridge?

type comet | Comet {n} | Comet {n} | the comet
opener Faint to the naked eye, | Sweeping close to the sun on each pass, | Small but bright,
opener Long a favourite of amateur observers,
colour Its head looks like a smudge of soft light through a small telescope on a dark night.
colour Sailors once took its return as a sign of calm weather for the harvest and the fleet.
colour Its path carries it far beyond the outer planets, where it spends most of its time.
colour On clear nights it hangs low over the eastern horizon for an hour before dawn.
colour Old almanacs gave it a whole page of its own, with drawings made by village schoolboys.
colour Astronomers still argue about the exact shape of its orbit and the size of its core.
other Its path crosses that of Comet {o}. | It is often mistaken for Comet {o} in old records.
other It was once thought to be a fragment of Comet {o}, until better telescopes were built.
attr discoverer | person
ref was discovered by {v} | was first spotted by the astronomer {v}
ref was found through the telescope of {v} | first appeared in the logbook of {v}
train Credit for spotting {e} goes to {v}. | {v} was the first to log {e}.
ask Who discovered Comet {e}? | Which astronomer first spotted Comet {e}?
attr tail | list | amber violet silver green crimson white blue
ref shows a tail of {v} light | is known for its {v} tail | drags a long {v} tail
ref has a tail that looks {v} to the eye
train Watchers describe the tail of {e} as {v}. | Photographs show {e} dragging {v} light.
ask What colour is the tail of Comet {e}? | Which colour is the tail that Comet {e} shows?
attr period | number | 5 240
ref returns every {v} years | comes back to the inner sky once in {v} years
ref completes its orbit in {v} years | has an orbital period of {v} years
train {e} swings back around the sun after {v} years. | A full lap of {e} takes {v} years.
ask How many years does Comet {e} take to return? | What is the orbital period of Comet {e}?
attr sighted | year
ref was first seen in {v} | was recorded for the first time in {v}
ref made its first recorded pass in the spring of {v} | has been watched since {v}
train The first written note of {e} is from {v}. | Nobody recorded {e} before {v}.
ask In what year was Comet {e} first seen? | When was Comet {e} first recorded?

type abbey | {n} Abbey | {n} Abbey | the abbey
opener Set on a wooded ridge, | Behind walls of grey stone, | Quiet for most of the year,
opener Reached only by a steep lane,
colour Its cloister opens onto a small walled garden where the brothers grow herbs and pears.
colour Pilgrims rest in its guest house on their way north, and few leave without a prayer.
colour The bell in its tower can be heard across the valley on a still winter morning.
colour Its library holds old ledgers, hymn books and a few maps of the surrounding farms.
colour A narrow lane of poplars leads up to its gate from the village in the valley below.
colour Visitors are welcome at the evening prayers, which are sung rather than spoken.
other It keeps close ties with {o} Abbey in the next valley. | It was long a rival of {o} Abbey.
other Its monks walk each year to {o} Abbey for the feast of the harvest.
attr founder | person
ref was founded by {v} | was built at the order of the abbot {v}
ref traces its beginning to {v} | was raised on land given by {v}
train The first stones of {e} were laid for {v}. | Chronicles name {v} as the one who began {e}.
ask Who founded {e} Abbey? | Whose foundation is {e} Abbey?
attr craft | list | bookbinding beekeeping brewing weaving pottery glassblowing candlemaking
ref is known for its {v} | earns its keep through {v} | keeps a long tradition of {v}
ref trains its novices in {v}
train The brothers of {e} spend their afternoons at {v}.
train Visitors to {e} come away talking about its {v}.
ask Which craft is {e} Abbey known for? | What craft do the monks of {e} Abbey practise?
attr monks | number | 12 260
ref houses {v} monks | is home to a community of {v} monks | keeps {v} monks under its roof
ref feeds {v} monks at its long table
train At {e} there are {v} monks today. | The refectory of {e} seats its {v} monks.
ask How many monks live at {e} Abbey? | What is the number of monks at {e} Abbey?
attr consecrated | year
ref was consecrated in {v} | opened its doors in {v} | held its first service in {v}
ref has stood since {v}
train A bishop blessed {e} in {v}. | Prayers have been said at {e} every day from {v} on.
ask In what year was {e} Abbey consecrated? | When did {e} Abbey open?

type game | the board game {n} | {n} | the game
opener Simple to learn but slow to master, | Popular in taverns and schools alike,
opener Played in silence by tradition, | Older than most of its rivals,
colour A single match can last a whole evening, and a friendly one often lasts even longer.
colour Players take turns moving one piece at a time, and a captured piece never returns.
colour Clubs meet on winter nights to hold small tournaments with prizes of cake and cider.
colour Children often learn it from their grandparents before they learn to read the rules.
colour Some players keep notebooks of their best openings and guard them from their rivals.
colour Its rules fit on one printed card, though the arguments about them fill whole books.
other It is often compared with {o}, an older game. | Its rules borrow a little from {o}.
other Clubs that play it often play {o} as well, on the same tables and the same nights.
attr inventor | person
ref was invented by {v} | was devised by {v} | is credited to a schoolmaster named {v}
ref came from the notebooks of {v}
train {v} drew up the first rules of {e}. | Every rulebook of {e} thanks {v} on its first page.
ask Who invented the board game {e}? | Who devised {e}?
attr pieces | list | ivory walnut bone pewter brass jade ebony horn
ref is played with pieces of {v} | uses counters carved from {v}
ref has pieces traditionally cut from {v} | is set up with tokens of {v}
train A set of {e} comes with men made of {v}. | Collectors prize sets of {e} whose men are {v}.
ask What are the pieces of {e} made of? | Which material are the pieces of {e} cut from?
attr squares | number | 20 200
ref is played on a board of {v} squares | needs a grid of {v} squares
ref spreads over {v} squares | has a board with {v} squares
train A board for {e} counts {v} squares in all. | Every game of {e} uses all {v} squares.
ask How many squares does the board of {e} have? | On how many squares is {e} played?
attr hometown | place
ref was first played in {v} | began in the market town of {v} | comes from the town of {v}
ref has its home in the town of {v}
train People in {v} say that {e} was born in their streets.
train The oldest known game of {e} was played in {v}.
ask In which town was {e} first played? | Which town does the board game {e} come from?

filler The weather turned cold early that year, and the roads were quiet.
filler Most of the letters in the collection are about money and the price of bread.
filler A small museum in the square keeps maps, tools and a few old portraits.
filler The second edition of the guide corrected many spelling mistakes of the first.
filler Travel writers of the period rarely agreed with one another about anything.
filler The archive is open on weekday mornings, and the reading room is often empty.
filler Much of what we know comes from diaries kept by ordinary people.
filler Local societies publish a short newsletter every season.
"""
GROUPS = [(2, 2), (1, 1, 2), (1, 2, 1), (2, 1, 1), (1, 3), (3, 1)]  # clauses per sentence


def _parse(text: str) -> tuple[dict, list[str]]:
  types: dict = {}
  filler: list[str] = []
  for line in text.strip().splitlines():
    key, _, rest = line.partition(" ")
    items = rest.split(" | ")
    if key == "type":
      name, full, short, pronoun = items
      t = types[name] = dict(full=full, short=short, pronoun=pronoun, attrs={})
    elif key == "attr":
      name, kind, *values = items
      if kind == "list":
        values = values[0].split()
      elif kind == "number":
        values = tuple(int(x) for x in values[0].split())
      a = t["attrs"][name] = dict(kind=kind, values=YEARS if kind == "year" else values)
    elif key in ("ref", "train", "ask"):
      a.setdefault(key, []).extend(items)
    elif key == "filler":
      filler.extend(items)
    elif key:
      t.setdefault(key, []).extend(items)
  return types, filler


TYPES, FILLER = _parse(WORLD)
_TEMPLATE_WORDS = set(re.findall(r"[a-z]+", WORLD.lower()))


def _word(rng: random.Random, syllables: int) -> str:
  parts = [rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(syllables)]
  codas = [rng.choice(INNER_CODAS) for _ in range(syllables - 1)] + [rng.choice(FINAL_CODAS)]
  return "".join(p + c for p, c in zip(parts, codas)).capitalize()


def _name(rng: random.Random, used: set, words: int) -> str:
  """A name of ``words`` words, none used before in the world nor a template word."""
  while True:
    ws = [_word(rng, rng.choice((2, 2, 3))) for _ in range(words)]
    if len(set(ws)) == words and not any(w in used or w.lower() in _TEMPLATE_WORDS for w in ws):
      used.update(ws)
      return " ".join(ws)


def _cap(s: str) -> str:
  return s[0].upper() + s[1:]


def _entities(n: int, rng: random.Random) -> list[dict]:
  """``n`` entities spread over the types; half of each type (by ``rng``) are train ones."""
  used: set = set()
  out = []
  for i in range(n):
    kind = list(TYPES)[i % len(TYPES)]
    spec = TYPES[kind]["attrs"]
    values = {}
    for a, s in sorted(spec.items(), key=lambda kv: kv[1]["kind"] == "number"):  # years first
      if s["kind"] in ("person", "place"):
        values[a] = _name(rng, used, rng.choice((1, 2, 2)) if s["kind"] == "person" else 1)
      elif s["kind"] == "list":
        values[a] = rng.choice(s["values"])
      else:
        years = [v for y, v in values.items() if spec[y]["kind"] == "year"]
        values[a] = str(rng.randint(*s["values"]))
        while any(values[a] in y for y in years):  # no "184" inside "1842"
          values[a] = str(rng.randint(*s["values"]))
    out.append(dict(id=f"wc-{kind}-{i:04d}", kind=kind, name=_name(rng, used, 1), values=values))
  for kind in TYPES:
    group = [e for e in out if e["kind"] == kind]
    for j, e in enumerate(rng.sample(group, len(group))):
      e["train"] = j < len(group) // 2
  return out


def _reference(rng: random.Random, e: dict, others: list[dict]) -> str:
  spec = TYPES[e["kind"]]
  full, short = spec["full"].format(n=e["name"]), spec["short"].format(n=e["name"])
  attrs = list(spec["attrs"])
  rng.shuffle(attrs)
  long = rng.random() < 0.1
  sentences, start = [], 0
  for size in rng.choice(GROUPS):
    vps = [rng.choice(spec["attrs"][a]["ref"]).format(v=e["values"][a]) for a in attrs[start:]]
    vp = ", ".join(vps[: size - 1]) + " and " + vps[size - 1] if size > 1 else vps[0]
    start += size
    if not sentences:
      opener = rng.choice(spec["opener"]) if long or rng.random() < 0.35 else None
      subject = f"{opener} {full}" if opener else _cap(full)
    else:
      subject = rng.choice(["It", _cap(spec["pronoun"]), _cap(short)])
    sentences.append(f"{subject} {vp}.")
  if rng.random() < 0.2:
    other = rng.choice([o for o in others if o is not e])
    sentences.insert(
      rng.randint(1, len(sentences)), rng.choice(spec["other"]).format(o=other["name"])
    )
  # Colour until a drawn length: 30-65 words, or 85-110 for a tenth (a split reference).
  target, cap = (rng.randint(85, 105), 110) if long else (rng.randint(30, 65), 80)
  colour = rng.sample(spec["colour"], len(spec["colour"]))
  n = len(" ".join(sentences).split())
  while colour and n < target and n + len(colour[-1].split()) <= cap:
    n += len(colour[-1].split())
    sentences.insert(rng.randint(1, len(sentences)), colour.pop())
  return " ".join(sentences)


def _facts(rng: random.Random, e: dict, attrs: list[str]) -> list[str]:
  spec = TYPES[e["kind"]]
  short = spec["short"].format(n=e["name"])
  return [
    _cap(rng.choice(spec["attrs"][a]["train"]).format(e=short, v=e["values"][a])) for a in attrs
  ]


def _train_docs(rng: random.Random, train: list[dict]) -> list[str]:
  """Three documents per train entity, each of 2-3 of its facts (a fifth add 1-2 facts of
  another train entity), then a tenth more of filler without facts."""
  docs = []
  for e in train:
    attrs = list(TYPES[e["kind"]]["attrs"])
    rng.shuffle(attrs)
    for picked in (attrs[:2], attrs[2:], rng.sample(attrs, rng.choice((2, 3)))):
      lines = _facts(rng, e, picked)
      if rng.random() < 0.2:
        o = rng.choice([o for o in train if o is not e])
        lines += _facts(rng, o, rng.sample(list(TYPES[o["kind"]]["attrs"]), rng.choice((1, 2))))
      if rng.random() < 0.3:
        lines.insert(rng.randint(0, len(lines)), rng.choice(FILLER))
      docs.append(" ".join(lines))
  docs += [" ".join(rng.sample(FILLER, rng.choice((2, 3)))) for _ in range(len(docs) // 9)]
  rng.shuffle(docs)
  return docs


def _questions(rng: random.Random, held: list[dict], ents: list[dict]) -> list[dict]:
  """One question per attribute of each held-out entity; 3 distractors of the attribute."""
  pools: dict = {}  # (kind, attribute) -> distinct values (a closed list: all of its words)
  for e in ents:
    for a, v in e["values"].items():
      spec = TYPES[e["kind"]]["attrs"][a]
      pool = pools.setdefault(
        (e["kind"], a), list(spec["values"]) if spec["kind"] == "list" else []
      )
      if v not in pool:
        pool.append(v)
  qa = []
  for e in held:
    for a, spec in TYPES[e["kind"]]["attrs"].items():
      ans, q = e["values"][a], rng.choice(spec["ask"]).format(e=e["name"])
      choices = rng.sample([v for v in pools[(e["kind"], a)] if v != ans], 3) + [ans]
      rng.shuffle(choices)
      qa.append(dict(question=q, answer=ans, choices=choices, gold_ref_id=e["id"], attribute=a))
  return qa


def build(entities: int, seed: int) -> dict:
  """{"entities", "references", "train", "qa"} of a world of ``entities`` entities."""
  if entities < 8 * len(TYPES):
    raise ValueError(f"--entities {entities}: need at least {8 * len(TYPES)} (4 choices each)")
  rng = random.Random(seed)
  ents = _entities(entities, rng)
  by_kind = {k: [e for e in ents if e["kind"] == k] for k in TYPES}
  refs = [dict(id=e["id"], text=_reference(rng, e, by_kind[e["kind"]])) for e in ents]
  train = [dict(text=t) for t in _train_docs(rng, [e for e in ents if e["train"]])]
  qa = _questions(rng, [e for e in ents if not e["train"]], ents)
  return dict(entities=ents, references=refs, train=train, qa=qa)


def main(argv: list[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="directory for the three JSONL files")
  p.add_argument("--entities", type=int, default=900)
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if os.path.exists(args.out):
    stray = sorted(set(os.listdir(args.out)) - set(FILES)) if os.path.isdir(args.out) else ["-"]
    if stray:
      raise SystemExit(
        f"make_world_c: {args.out} is not a directory, or holds files other than"
        f" {', '.join(FILES)} ({', '.join(stray[:5])}); choose a new or empty directory"
      )
  world = build(args.entities, args.seed)
  os.makedirs(args.out, exist_ok=True)
  for name, key in zip(FILES, ("references", "train", "qa")):
    sources.write_jsonl(os.path.join(args.out, name), world[key])
  held = sum(not e["train"] for e in world["entities"])
  print(
    f"world C: {len(world['references'])} references, {len(world['train'])} training documents,"
    f" {len(world['qa'])} questions ({held} held-out entities) -> {args.out}"
  )
  return world


if __name__ == "__main__":
  main()
