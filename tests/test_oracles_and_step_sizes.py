"""Label preservation by majority vote, and the rule that picks the attack's step sizes."""
import pandas as pd
import pytest
import torch
from torch import nn

from gatlib.attacks import step_sizes
from gatlib.oracles import label_preservation


class Constant(nn.Module):
    """A 'classifier' that always answers ``answer`` (enough to check vote counting)."""

    def __init__(self, answer):
        super().__init__()
        self.answer = answer
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images):
        logits = torch.zeros(len(images), 10)
        logits[:, self.answer] = 1
        return logits


def test_preservation_counts_each_oracle_and_the_majority():
    images = torch.rand(4, 1, 32, 32)
    labels = torch.tensor([3, 3, 5, 5])
    result = label_preservation({"a": Constant(3), "b": Constant(3), "c": Constant(5)}, images, labels)
    assert result == {"a": 0.5, "b": 0.5, "c": 0.5, "majority": 0.5}
    tie = label_preservation({"a": Constant(3), "b": Constant(5)}, images, labels)
    assert tie["majority"] == 0.0, "half the oracles is not a majority"


def test_preservation_needs_oracles():
    with pytest.raises(ValueError, match="at least one oracle"):
        label_preservation({}, torch.rand(1, 1, 32, 32), torch.tensor([0]))


def test_the_rule_prefers_success_within_the_bars():
    table = pd.DataFrame([
        {"eps": 0.01, "delta": 0.1, "success_rate": 0.70, "median_iterations": 6, "preservation": 0.97},
        {"eps": 0.02, "delta": 0.2, "success_rate": 0.95, "median_iterations": 3, "preservation": 0.93},
        {"eps": 0.08, "delta": 0.8, "success_rate": 1.00, "median_iterations": 1, "preservation": 0.95},
        {"eps": 0.04, "delta": 0.4, "success_rate": 0.99, "median_iterations": 2, "preservation": 0.80},
    ])
    chosen = step_sizes.choose(table)
    assert (chosen.eps, chosen.delta) == (0.02, 0.2) and chosen.meets_preservation
    # nobody in the median range reaches the bar: the most label-preserving successes, flagged
    fallback = step_sizes.choose(table[table.eps >= 0.04])
    assert (fallback.eps, fallback.meets_preservation) == (0.04, False)
    assert fallback.preserved_success == pytest.approx(0.99 * 0.80)
    with pytest.raises(ValueError, match="widen the grid"):
        step_sizes.choose(table[table.eps >= 0.04], strict=True)
    with pytest.raises(ValueError, match="widen the grid"):     # no median in range at all
        step_sizes.choose(table[table.eps >= 0.08])


def test_without_oracles_the_rule_keeps_the_median_range_and_says_preservation_is_unchecked():
    table = pd.DataFrame([
        {"eps": 0.01, "delta": 0.0, "success_rate": 0.70, "median_iterations": 6, "preservation": float("nan")},
        {"eps": 0.02, "delta": 0.0, "success_rate": 0.95, "median_iterations": 3, "preservation": float("nan")},
        {"eps": 0.08, "delta": 0.0, "success_rate": 1.00, "median_iterations": 1, "preservation": float("nan")},
    ])
    chosen = step_sizes.choose(table)
    assert chosen.eps == 0.02 and chosen.meets_preservation is None
    with pytest.raises(ValueError, match="widen the grid"):
        step_sizes.choose(table, strict=True)


def test_geometric_grid():
    assert step_sizes.geometric_grid(0.01, 1.0, 3) == [0.01, 0.1, 1.0]
    assert step_sizes.geometric_grid(0.5, 2.0, 1) == [0.5]


def test_beyond_the_edge_scores_larger_steps_only_when_the_choice_is_the_largest(monkeypatch):
    calls = []

    def fake_score(G, classifier, oracles, candidates, moves, samples, seed, max_iters=10, progress=True):
        calls.append((candidates, moves, samples, seed))
        return pd.DataFrame([{"moves": moves, "eps": e, "delta": d} for e, d in candidates])

    monkeypatch.setattr(step_sizes, "score_step_sizes", fake_score)
    table = pd.DataFrame([{"moves": "noise", "eps": 0.0, "delta": d} for d in (0.8, 1.6, 3.2)]
                         + [{"moves": "style", "eps": e, "delta": 0.0} for e in (0.02, 0.04, 0.08)])
    inside = step_sizes.beyond_the_edge(None, None, {}, table, table.iloc[4], "style", 300, seed=10)
    assert inside.empty and not calls
    edge = step_sizes.beyond_the_edge(None, None, {}, table, table.iloc[2], "noise", 300, seed=10)
    assert calls == [([(0.0, 6.4), (0.0, 12.8)], "noise", 300, 10)]   # the grid's own latents
    assert list(edge.delta) == [6.4, 12.8]
    step_sizes.beyond_the_edge(None, None, {}, table, table.iloc[5], "style", 300, seed=10, factors=(2.0,))
    assert calls[-1][0] == [(0.16, 0.0)]
    with pytest.raises(ValueError, match="moves must be 'style' or 'noise'"):
        step_sizes.beyond_the_edge(None, None, {}, table, table.iloc[2], "both", 300, seed=10)
