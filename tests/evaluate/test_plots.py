"""Plots people read: Wilson intervals, chance line, n, integer layer axes, a run report."""

import pytest

from m3jax.evaluate import plots, report


@pytest.mark.parametrize(
  "p,n,lo,hi",
  [
    (0.5, 100, 0.4038, 0.5962),  # textbook values (Wilson 1927 score interval, z=1.96)
    (0.0, 10, 0.0, 0.2775),
    (1.0, 10, 0.7225, 1.0),
  ],
)
def test_wilson_interval_matches_reference_values(p, n, lo, hi):
  got = plots.wilson(p, n)
  assert got == pytest.approx((lo, hi), abs=5e-4)


def test_accuracy_plot_has_chance_line_n_and_intervals(tmp_path, monkeypatch):
  import matplotlib.axes

  seen = {}
  orig_axhline, orig_title = matplotlib.axes.Axes.axhline, matplotlib.axes.Axes.set_title
  monkeypatch.setattr(
    matplotlib.axes.Axes,
    "axhline",
    lambda self, y, **kw: seen.setdefault("chance", y) and orig_axhline(self, y, **kw),
  )
  monkeypatch.setattr(
    matplotlib.axes.Axes,
    "set_title",
    lambda self, t, **kw: seen.setdefault("title", t) and orig_title(self, t, **kw),
  )
  res = {
    "qa_exact_match": {"no_memory": 0.1, "memory": 0.4},
    "qa_multiple_choice": {"no_memory": 0.3, "memory": 0.6},
    "num_questions": 48,
    "mc_chance": 0.25,
  }
  assert plots.accuracy_by_condition(res, str(tmp_path / "a.png"))
  assert seen["chance"] == 0.25 and "n = 48" in seen["title"]


def test_memory_mass_axis_has_integer_ticks(tmp_path, monkeypatch):
  import matplotlib.axes

  ticks = []
  orig = matplotlib.axes.Axes.set_xticks
  monkeypatch.setattr(
    matplotlib.axes.Axes,
    "set_xticks",
    lambda self, t, *a, **kw: ticks.append(list(t)) or orig(self, t, *a, **kw),
  )
  plots.memory_mass_by_layer({"memory": [0.1, 0.2, 0.3]}, str(tmp_path / "m.png"))
  assert ticks == [[0, 1, 2]]


def test_html_report_holds_table_and_plots(tmp_path):
  png = plots.memory_mass_by_layer({"memory": [0.1, 0.2]}, str(tmp_path / "m.png"))
  res = {"qa_multiple_choice": {"memory": 0.5}, "plots": {"memory_mass": png}, "num_questions": 4}
  page = tmp_path / "r.html"
  report.write_html(str(page), res)
  text = page.read_text()
  assert "multiple choice" in text and "data:image/png;base64," in text


@pytest.mark.parametrize("n", [1, 7, 28, 63, 100, 255, 256, 1024])
@pytest.mark.parametrize("k", ["all", "none", "one"])
def test_wilson_interval_always_holds_the_proportion(n, k):
  # At p = 1 the upper bound rounded to 0.999… once, and matplotlib refused the negative
  # error bar: the whole eval died after QA ("'yerr' must not contain negative values").
  p = {"all": n / n, "none": 0 / n, "one": 1 / n}[k]
  lo, hi = plots.wilson(p, n)
  assert 0.0 <= lo <= p <= hi <= 1.0
