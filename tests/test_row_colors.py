"""Every figure gives a model row the same colour (gatlib.plots.row_colors)."""
from gatlib import finetune, plots


def test_every_known_row_has_its_own_fixed_colour():
    colors = plots.row_colors()
    rows = [finetune.ORIGINAL, *finetune.ALL_ROWS]
    assert set(rows) <= set(colors)
    assert len({colors[row] for row in rows}) == len(rows), "two rows share a colour"
    # a chapter showing a subset, or in another order, keeps each row's colour
    assert plots.row_colors(["gat", "original"])["gat"] == colors["gat"]


def test_unknown_rows_get_distinct_leftover_colours():
    colors = plots.row_colors(["my-model", "gat", "other-model"])
    assert colors["gat"] == plots.row_colors()["gat"]
    assert colors["my-model"] != colors["other-model"]
    assert colors["my-model"] not in [colors[row] for row in (finetune.ORIGINAL, *finetune.ALL_ROWS)]
