"""Choosing the latent attack's step sizes (ε for styles, δ for noise) for a generator.

The paper's values — (ε, δ) = (0.004, 0.2) on LSUN — belong to its StyleGAN v1 generators; for
another generator they mean something else (``book/deviations.md``). Like the paper, we want
attacks that fool the classifier in a few steps (median iterations-to-fool in [2, 10]) while the
images keep their class. So each candidate is scored on fresh latents by: success rate within
``max_iters``, median iterations-to-fool, and label preservation by the independent oracles. The
rule: among the candidates whose median lies in [2, 10] and whose majority preservation is at
least 0.9, take the one with the highest success rate (the smaller step on a tie).

When no candidate reaches the preservation bar (on a class-conditional digit generator, an attack
that fools F mostly does so by turning the digit into another one; chapter 02), ``choose`` falls
back to the candidate in the median range with the most *label-preserving* successes —
``success_rate × preservation``, the share of all valid samples that fool F while the oracles'
majority still sees c — and marks the choice with ``meets_preservation = False`` so that the
chapter reports the miss. ``strict=True`` raises instead. Without oracles (no label raters, e.g.
on the ``paper`` profile) preservation is unknown: the rule keeps the median range, takes the
highest success rate and sets ``meets_preservation = None``.
"""
from __future__ import annotations

import pandas as pd

from ..oracles import preservation_of_attack
from .latent import attack_batches, class_labels

MEDIAN_RANGE = (2.0, 10.0)
MIN_PRESERVATION = 0.9


def score_step_sizes(G, classifier, oracles: dict, candidates: list[tuple[float, float]], moves: str,
                     samples: int, seed: int, max_iters: int = 10, layers=None, batch_size: int = 250,
                     progress: bool = True) -> pd.DataFrame:
    """One row per candidate (ε, δ): success rate, iterations, image change, label preservation."""
    from tqdm.auto import tqdm

    labels = class_labels(G, samples)
    rows = []
    for eps, delta in tqdm(candidates, desc=f"step sizes ({moves})", disable=not progress):
        result = attack_batches(G, classifier, labels, seed=seed, batch_size=batch_size, progress=False,
                                eps=eps, delta=delta, moves=moves, layers=layers, max_iters=max_iters)
        # no oracles (the paper profile without label raters): preservation is unknown, not zero
        preservation = preservation_of_attack(oracles, result)["majority"] if oracles else float("nan")
        rows.append({"moves": moves, "eps": eps, "delta": delta, **result.summary(), "preservation": preservation})
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, strict: bool = False) -> pd.Series:
    """The rule of this module's docstring. The returned row has ``meets_preservation`` (bool) and
    ``preserved_success`` (success rate × preservation). Raises when no candidate has its median
    in range, or (``strict``) when none reaches the preservation bar."""
    low, high = MEDIAN_RANGE
    table = table.assign(preserved_success=table.success_rate * table.preservation.fillna(0.0))
    in_range = table[(table.median_iterations >= low) & (table.median_iterations <= high)]
    eligible = in_range[in_range.preservation >= MIN_PRESERVATION]
    if not eligible.empty:
        best = eligible.sort_values(["success_rate", "eps", "delta"], ascending=[False, True, True]).iloc[0]
        return pd.concat([best, pd.Series({"meets_preservation": True})])
    if table.preservation.isna().all() and not in_range.empty and not strict:
        # no oracles scored any candidate: only the median range can be checked (meets_preservation None)
        best = in_range.sort_values(["success_rate", "eps", "delta"], ascending=[False, True, True]).iloc[0]
        return pd.concat([best, pd.Series({"meets_preservation": None})])
    if strict or in_range.empty:
        raise ValueError(f"no step size has a median iterations-to-fool in [{low:g}, {high:g}]"
                         + ("" if in_range.empty else f" with label preservation >= {MIN_PRESERVATION}")
                         + f"; widen the grid. Scores:\n{table.to_string()}")
    best = in_range.sort_values(["preserved_success", "eps", "delta"], ascending=[False, True, True]).iloc[0]
    return pd.concat([best, pd.Series({"meets_preservation": False})])


def beyond_the_edge(G, classifier, oracles: dict, table: pd.DataFrame, choice: pd.Series, moves: str, samples: int,
                    seed: int, max_iters: int = 10, factors=(2.0, 4.0), progress: bool = True) -> pd.DataFrame:
    """Scores past the top of the grid when ``choice`` is its largest candidate.

    A choice on the grid's edge only says that the rule preferred the largest step it was shown; a
    larger one might score higher still. This scores ``choice × factor`` for each of ``factors`` with
    :func:`score_step_sizes` (same ``samples`` and ``seed``, so the same latents as the grid) and
    returns those rows; an empty frame when the choice lies inside the grid. ``choose`` on the grid
    plus these rows says what a wider grid would pick."""
    column = {"style": "eps", "noise": "delta"}.get(moves)
    if column is None:
        raise ValueError(f"beyond_the_edge scores one variable at a time: moves must be 'style' or 'noise', got {moves!r}")
    candidates = table[table.moves == moves][column]
    if candidates.empty:
        raise ValueError(f"the table has no {moves!r} rows")
    if float(choice[column]) < float(candidates.max()):
        return table.iloc[:0]
    values = [float(f"{float(choice[column]) * factor:.6g}") for factor in factors]
    steps = [(value, 0.0) if moves == "style" else (0.0, value) for value in values]
    return score_step_sizes(G, classifier, oracles, steps, moves, samples, seed=seed, max_iters=max_iters,
                            progress=progress)


def geometric_grid(low: float, high: float, count: int) -> list[float]:
    """``count`` values from ``low`` to ``high``, evenly spaced on a log scale (rounded to 3 significant digits)."""
    if count == 1:
        return [low]
    ratio = (high / low) ** (1 / (count - 1))
    return [float(f"{low * ratio ** i:.3g}") for i in range(count)]
