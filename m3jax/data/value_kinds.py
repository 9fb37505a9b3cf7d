"""The kind of value each attribute of a QA file asks for, inferred from its answers.

A rare invented name, a closed-list word (a color, a job) and a number are read from
memory differently (docs/design.md), so evaluation breaks accuracy down by kind
(m3jax.evaluate.kinds) and the counterfactual swap keeps a closed-list value among its
attribute's options (m3jax.data.counterfactual). Inferred from the answers, so any world
gets it without a schema:

* ``number``: every answer of the attribute is digits;
* ``name``: most answers are distinct (distinct values / questions > 1/2);
* ``closed_list``: the rest (few values, each shared by many entities).
"""

from __future__ import annotations

from typing import Sequence

KINDS = ("name", "closed_list", "number")


def value_kinds(items: Sequence[dict]) -> dict[str, str]:
  """attribute -> kind, for every attribute of ``items`` (items without one are skipped)."""
  answers: dict[str, list[str]] = {}
  for it in items:
    if it.get("attribute") is not None:
      answers.setdefault(str(it["attribute"]), []).append(str(it["answer"]).strip())
  kinds = {}
  for attr, vals in answers.items():
    if all(v.replace(",", "").isdigit() for v in vals):
      kinds[attr] = "number"
    elif len(set(vals)) / len(vals) > 0.5:
      kinds[attr] = "name"
    else:
      kinds[attr] = "closed_list"
  return kinds
