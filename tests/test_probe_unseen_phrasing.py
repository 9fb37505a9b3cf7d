"""experiments/probe_unseen_phrasing.py: the prose prompts cut before the value, and the
entity a question names."""

from experiments import probe_unseen_phrasing as probe
from experiments.make_unseen_world import _SCHEMA


def test_prose_prefixes_name_the_entity_and_stop_before_the_value():
  prefixes = probe.prose_prefixes()
  attrs = {a for attrs in _SCHEMA.values() for a in attrs}
  assert set(prefixes) <= attrs and len(prefixes) >= len(attrs) - 2
  for attr, prefix in prefixes.items():
    assert "{e}" in prefix and "{v}" not in prefix
    assert not prefix.endswith(" ")
  assert prefixes["captain"] == "Sailors on the {e} answer to"


def test_entity_of_is_the_last_capitalized_word_the_reference_holds():
  item = {"question": "Who is the captain of the ship Zorcad?"}
  assert probe.entity_of(item, "The ship Zorcad; Zorcad was launched in 1842.") == "Zorcad"
  assert probe.entity_of(item, "The guild Belbel meets in Vosvos.") is None
  item = {"question": "Where does the guild Belbel meet?"}
  assert probe.entity_of(item, "Belbel is an old guild; Belbel meets in Vosvos.") == "Belbel"
