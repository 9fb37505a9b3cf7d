"""QA accuracy by the *kind* of value asked for: rare names, closed-list words, numbers.

Which facts memory answers depends on the value's kind more than on the attribute's name
(docs/design.md): a rare invented name is one token pattern that only its reference holds;
a closed-list word (a color, a job) is shared by many entities, so reading it requires
finding the asked attribute in the right reference; a number is a closed list too, with
many near-identical members. The kind is inferred from the answers themselves, so any
world gets the breakdown without a schema:

* ``number``: every answer of the attribute is digits;
* ``name``: most answers are distinct (distinct values / questions > 1/2);
* ``closed_list``: the rest (few values, each shared by many entities).

An item's ``value_kind`` field, when present, wins over the inference.
"""

from __future__ import annotations

from typing import Sequence

from m3jax.data.value_kinds import KINDS, value_kinds

__all__ = ["KINDS", "by_kind", "item_kinds", "value_kinds"]


def item_kinds(items: Sequence[dict], kinds: dict[str, str] | None = None) -> list[str | None]:
  """Each item's kind: its own ``value_kind`` field, else ``kinds[attribute]`` (default:
  inferred from ``items``; pass the kinds of the whole QA file when ``items`` is a sample,
  since a small sample makes a closed list look like names)."""
  kinds = value_kinds(items) if kinds is None else kinds
  return [it.get("value_kind") or kinds.get(str(it.get("attribute"))) for it in items]


def by_kind(
  items: Sequence[dict], preds: Sequence[dict], kinds: dict[str, str] | None = None
) -> dict:
  """{kind: {"exact_match", "multiple_choice" (None without choices), "count"}}.

  ``preds[i]`` is evaluate_qa's per-item record of ``items[i]`` (``correct``,
  ``mc_correct``); items whose kind is unknown are left out.
  """
  groups: dict[str, list[dict]] = {}
  for kind, p in zip(item_kinds(items, kinds), preds):
    if kind is not None:
      groups.setdefault(kind, []).append(p)
  out = {}
  for kind, ps in sorted(groups.items()):
    mc = [bool(p["mc_correct"]) for p in ps if "mc_correct" in p]
    out[kind] = {
      "exact_match": sum(bool(p["correct"]) for p in ps) / len(ps),
      "multiple_choice": sum(mc) / len(mc) if mc else None,
      "count": len(ps),
    }
  return out
