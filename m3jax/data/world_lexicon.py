"""The invented world's lexicon: syllables for names, the closed value pools, each
attribute's value kind, KB key and templates, and the filler sentences
(``m3jax.data.synthetic`` builds the world from them). Data only, no logic."""

from __future__ import annotations

from typing import Any

ONSETS = [
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
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea", "io", "y"]
CODAS = ["", "", "", "n", "r", "l", "s", "th", "k", "m", "nd", "x"]

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
INTROS = {
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
FILLER_SUBJECTS = [
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
FILLER_PREDICATES = [
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
