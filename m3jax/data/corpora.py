"""Real English that ships offline: ISO country, subdivision and language facts (pycountry).

pycountry bundles the ISO 3166/639 databases, so this needs no download. The facts become
(a) prose documents for pretraining, interleaved with the synthetic world, and (b) extra
knowledge-base references in the same terse ``key = value`` format as the synthetic KB
(ids ``geo-<alpha3>``). Real text keeps the vocabulary and the model from over-fitting the
invented world's handful of templates.
"""

from __future__ import annotations

import collections
import random


def _countries():
  import pycountry

  return sorted(pycountry.countries, key=lambda c: c.alpha_3)


def _subdivisions_by_country() -> dict[str, list]:
  import pycountry

  out = collections.defaultdict(list)
  for s in pycountry.subdivisions:
    out[s.country_code].append(s)
  for v in out.values():
    v.sort(key=lambda s: s.code)
  return out


def country_references(limit: int | None = None) -> list[dict]:
  subs = _subdivisions_by_country()
  refs = []
  for c in _countries()[:limit]:
    official = getattr(c, "official_name", c.name)
    regions = subs.get(c.alpha_2, [])
    kinds = collections.Counter(s.type.lower() for s in regions)
    kind = kinds.most_common(1)[0][0] if kinds else "region"
    fields = [
      f"official name = {official}",
      f"code = {c.alpha_2}",
      f"iso = {c.alpha_3}",
      f"number = {c.numeric}",
      f"{kind} count = {len(regions)}",
    ]
    refs.append(dict(id=f"geo-{c.alpha_3}", text=f"{c.name} (country) | " + " | ".join(fields)))
  return refs


def country_documents(seed: int = 0, limit: int | None = None, max_regions: int = 12) -> list[dict]:
  """One prose document per country, naming some of its subdivisions."""
  rng = random.Random(seed)
  subs = _subdivisions_by_country()
  docs = []
  for c in _countries()[:limit]:
    official = getattr(c, "official_name", None)
    sents = [f"{c.name} is a country."]
    if official and official != c.name:
      sents.append(
        rng.choice(
          [f"Its full name is the {official}.", f"Officially, it is called the {official}."]
        )
      )
    sents.append(f"Its short code is {c.alpha_2}, and its longer code is {c.alpha_3}.")
    regions = subs.get(c.alpha_2, [])
    if regions:
      sents.append(f"{c.name} is divided into {len(regions)} parts.")
      for s in rng.sample(regions, min(max_regions, len(regions))):
        sents.append(
          rng.choice(
            [
              f"{s.name} is a {s.type.lower()} of {c.name}.",
              f"One {s.type.lower()} of {c.name} is {s.name}.",
            ]
          )
        )
    docs.append(dict(text=" ".join(sents)))
  return docs


def language_documents(seed: int = 0, per_doc: int = 8, limit: int | None = 1200) -> list[dict]:
  import pycountry

  rng = random.Random(seed)
  langs = sorted(
    (l for l in pycountry.languages if getattr(l, "alpha_2", None) or rng.random() < 0.15),
    key=lambda l: l.alpha_3,
  )[:limit]
  docs = []
  for i in range(0, len(langs), per_doc):
    sents = [
      rng.choice(
        [
          f"The {l.name} language has the code {l.alpha_3}.",
          f"{l.name} is a language; its code is {l.alpha_3}.",
        ]
      )
      for l in langs[i : i + per_doc]
    ]
    docs.append(dict(text=" ".join(sents)))
  return docs


def real_documents(seed: int = 0, limit: int | None = None) -> list[dict]:
  return country_documents(seed, limit) + language_documents(seed, limit=limit and 8 * limit)
