"""Attack statistics the chapters tabulate: every (what moves × which layers) combination over
several seeds — the supplementary's "average number of iterations" table, for our generator."""
from __future__ import annotations

import pandas as pd

from ..oracles import preservation_of_attack
from .latent import MOVES, attack_batches, class_labels


def layer_groups_with_all(G) -> dict:
    """``coarse`` / ``middle`` / ``fine`` thirds of the generator's layers, plus ``all``."""
    return {**G.layer_groups(), "all": list(range(G.num_layers))}


def moves_by_layers(G, classifier, oracles: dict, eps: float, delta: float, samples: int, seeds, max_iters: int = 10,
                    target: int | None = None, batch_size: int = 250, progress: bool = True) -> pd.DataFrame:
    """One row per (moves, layer group, seed): success rate, mean / median iterations-to-fool, image
    change (L2, L∞) and label preservation by the oracles' majority. ``samples`` latents per seed,
    balanced over classes; seeds are the latents' seeds (keep them disjoint from training)."""
    from tqdm.auto import tqdm

    labels = class_labels(G, samples)
    if target is not None:
        labels = labels[labels != target]
    combos = [(moves, group, layers, seed) for moves in MOVES for group, layers in layer_groups_with_all(G).items()
              for seed in seeds]
    rows = []
    for moves, group, layers, seed in tqdm(combos, desc="moves x layers", disable=not progress):
        result = attack_batches(G, classifier, labels, seed=seed, batch_size=batch_size, progress=False, eps=eps,
                                delta=delta, moves=moves, layers=layers, max_iters=max_iters, target=target)
        rows.append({"moves": moves, "layers": group, "seed": seed, **result.summary(),
                     "preservation": preservation_of_attack(oracles, result)["majority"] if oracles else float("nan")})
    return pd.DataFrame(rows)


def mean_over_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds of every statistic, indexed by (moves, layers)."""
    stats = ["success_rate", "mean_iterations", "median_iterations", "mean_l2", "mean_linf", "preservation"]
    grouped = table.groupby(["moves", "layers"], sort=False)[stats]
    out = grouped.mean().round(3)
    spread = grouped.std(ddof=0).round(3)
    for column in ("success_rate", "mean_iterations"):
        out[f"{column}_std"] = spread[column]
    return out
