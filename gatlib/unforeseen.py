"""Table 2 of GAT (Poursaeed et al., ICCV 2021, §4.1): every defense against every attack.

Rows are models (Original, GAT and the baseline defenses of ``gatlib.defenses``), columns are
Clean, the GAT latent attack and four image-space attacks nobody but their own defense trained on:
L∞ PGD (``attacks.pgd``), StAdv (``attacks.spatial``), ReColorAdv (``attacks.recolor``) and a
perceptual attack (``attacks.perceptual``). The last column is the **mean over unseen attacks**
under one stated rule: the mean of the five attack columns leaving out the row's own training
attack (``TRAINED_AGAINST``; Original, trained against nothing, averages all five). The paper's
printed means do not all follow one rule; ``paper_table`` shows them beside the recomputed ones.

* :func:`image_attacks` — the four attacks at the MNIST (``default``) or the paper's budgets;
* :func:`evaluate_rows` — the tidy per-seed table (``gatlib.evaluate`` for the image attacks,
  ``robustness.white_box_accuracy`` for the GAT column);
* :func:`table2` / :func:`mean_unseen` — the wide table of means with the unseen mean;
  :func:`table2_ci` — the same as mean ± 95 % CI over the evaluation seeds;
* :func:`strength_checks`, :func:`transfer_check`, :func:`bound_curve` — is the evaluation strong?
  (5× the iterations, 5× the random starts, transfer from Original vs white-box, accuracy vs bound).
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .classifiers import fraction

ROWS = ("original", "gat", "at-pgd", "advprop", "at-spatial", "at-recolor", "pat")
ATTACK_COLUMNS = ("gat", "pgd", "spatial", "recolor", "perceptual")
COLUMNS = ("clean",) + ATTACK_COLUMNS
#: the attack each row was trained against (None: trained against nothing)
TRAINED_AGAINST = {"original": None, "gat": "gat", "at-pgd": "pgd", "advprop": "pgd", "at-spatial": "spatial",
                   "at-recolor": "recolor", "pat": "perceptual"}
#: our row names -> the paper's Table 2 row names (``paper_numbers.json``)
PAPER_NAMES = {"gat": "GAT", "at-pgd": "AT PGD", "advprop": "AT AdvProp", "at-spatial": "AT Spatial",
               "at-recolor": "AT Recolor", "pat": "PAT"}
PERCEPTUAL_KINDS = ("ppgd", "lpa")


def image_attacks(profile: str = "default", perceptual_kind: str = "ppgd", distance: nn.Module | None = None,
                  **overrides) -> dict:
    """The four image-space attacks of Table 2, keyed by column: ``pgd``, ``spatial``, ``recolor``,
    ``perceptual``. ``profile`` ``"paper"`` uses PAT's ImageNet-100 budgets (and needs the AlexNet-LPIPS
    ``distance``); anything else the MNIST budgets. ``overrides`` (e.g. ``steps=5``) apply to all four."""
    from .attacks import perceptual, pgd, recolor, spatial

    if perceptual_kind not in PERCEPTUAL_KINDS:
        raise ValueError(f"perceptual_kind must be one of {PERCEPTUAL_KINDS}, got {perceptual_kind!r}")
    if profile == "paper":
        return {"pgd": pgd.paper(**overrides), "spatial": spatial.paper(**overrides),
                "recolor": recolor.paper(**overrides),
                "perceptual": perceptual.paper(perceptual_kind, distance=distance, **overrides)}
    extra = {"distance": distance} if distance is not None else {}
    return {"pgd": pgd.mnist(**overrides), "spatial": spatial.mnist(**overrides), "recolor": recolor.mnist(**overrides),
            "perceptual": perceptual.mnist(perceptual_kind, **extra, **overrides)}


def stronger(attack, steps_factor: int = 1, restarts: int = 1, random_start: bool | None = None):
    """A copy of ``attack`` with ``steps_factor``× the iterations per run (same step size) and
    ``restarts``× its random starts (an attack that already runs 5 starts gets 5·``restarts``;
    random starts switched on when restarting). ``random_start`` sets the copy's random start
    explicitly (e.g. a single extra run that must not replay a deterministic one)."""
    if steps_factor < 1 or restarts < 1:
        raise ValueError(f"steps_factor ({steps_factor}) and restarts ({restarts}) must be ≥ 1")
    out = copy.copy(attack)
    out.steps = attack.steps * int(steps_factor)
    out.restarts = attack.restarts * int(restarts)
    if random_start is not None:
        out.random_start = bool(random_start)
    elif restarts > 1:
        out.random_start = True
    return out


def evaluate_rows(models: Mapping[str, nn.Module], test_set, attacks: Mapping[str, object], *, seeds: Sequence[int],
                  count: int | None, G=None, eps: float = 0.0, delta: float = 0.0, gat_samples: int = 0,
                  max_iters: int = 10, progress: bool = True) -> pd.DataFrame:
    """Tidy accuracies: one line per (row, seed, column) with ``accuracy`` (a fraction), ``samples``
    and ``seconds``. Image attacks run on ``count`` test images drawn with each seed
    (``gatlib.evaluate``); the GAT column (when ``G`` is given and ``gat_samples`` > 0) is each
    model's own white-box latent attack on ``gat_samples`` latents of ``eval_latent_seed(seed)``."""
    from .evaluation import evaluate
    from .robustness import eval_latent_seed, white_box_accuracy

    records = []
    for row, model in models.items():
        table = evaluate(model, test_set, attacks, seeds=seeds, count=count, progress=progress)
        for line in table.itertuples():
            records.append({"row": row, "seed": line.seed, "column": line.attack, "accuracy": line.accuracy,
                            "samples": line.samples, "seconds": line.seconds})
        if G is not None and gat_samples > 0:
            for seed in seeds:
                started = time.time()
                white = white_box_accuracy(G, model, gat_samples, eval_latent_seed(seed), eps, delta, max_iters)
                records.append({"row": row, "seed": seed, "column": "gat", "accuracy": white["accuracy"],
                                "samples": white["samples"], "seconds": time.time() - started})
    return pd.DataFrame(records, columns=["row", "seed", "column", "accuracy", "samples", "seconds"])


def mean_unseen(wide: pd.DataFrame, trained_against: Mapping[str, str | None] = TRAINED_AGAINST) -> pd.Series:
    """Per row, the mean of the attack columns present in ``wide`` except the row's own training
    attack (all of them for a row trained against nothing or not in ``trained_against``)."""
    columns = [c for c in ATTACK_COLUMNS if c in wide.columns]
    out = {}
    for row, line in wide.iterrows():
        unseen = [c for c in columns if c != trained_against.get(row)]
        out[row] = line[unseen].astype(float).mean()
    return pd.Series(out, name="mean_unseen")


def table2(per_seed: pd.DataFrame, trained_against: Mapping[str, str | None] = TRAINED_AGAINST) -> pd.DataFrame:
    """Rows × columns of the mean accuracy over seeds (fractions), in ``COLUMNS`` order, plus
    ``mean_unseen``."""
    wide = per_seed.groupby(["row", "column"], sort=False).accuracy.mean().unstack("column")
    wide = wide[[c for c in COLUMNS if c in wide.columns]]
    wide = wide.reindex([r for r in per_seed.row.unique()])
    wide["mean_unseen"] = mean_unseen(wide, trained_against)
    return wide


def table2_from_numbers(numbers: Mapping[str, object]) -> pd.DataFrame:
    """Table 2 (fractions, ``COLUMNS`` + ``mean_unseen``) read back from the numbers chapter 05
    records (``results.json``'s ``numbers``: keys ``table2.<row>.<column>``), rows in ``ROWS`` order:
    what a later check needs to recompute something from a finished run."""
    cells: dict[str, dict[str, float]] = {}
    for key, value in numbers.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == "table2" and parts[1] in ROWS and parts[2] in COLUMNS + ("mean_unseen",):
            cells.setdefault(parts[1], {})[parts[2]] = float(value)
    if not cells:
        raise ValueError("table2_from_numbers: no table2.<row>.<column> numbers (not a chapter 05 run?)")
    wide = pd.DataFrame(cells).T
    return wide.reindex(index=[r for r in ROWS if r in cells],
                        columns=[c for c in COLUMNS + ("mean_unseen",) if c in wide.columns])


def table2_ci(per_seed: pd.DataFrame, trained_against: Mapping[str, str | None] = TRAINED_AGAINST,
              confidence: float = 0.95) -> pd.DataFrame:
    """Table 2 as ``"mean ± CI"`` strings (percent) over the evaluation seeds, the unseen mean
    computed per seed first (so its interval is the spread of that mean), plus the raw
    ``<column>_mean`` / ``<column>_ci`` fractions and ``seeds`` (``robustness.summarize``)."""
    from .robustness import summarize

    wide = per_seed.pivot_table(index=["row", "seed"], columns="column", values="accuracy", sort=False)
    columns = [c for c in COLUMNS if c in wide.columns]
    per_row_seed = wide[columns].copy()
    per_row_seed["mean_unseen"] = [
        line[[c for c in ATTACK_COLUMNS if c in columns and c != trained_against.get(row)]].astype(float).mean()
        for (row, _), line in per_row_seed.iterrows()]
    long = per_row_seed.reset_index()
    order = list(per_seed.row.unique())
    summary = summarize(long, columns + ["mean_unseen"])
    return summary.reindex(order)


def own_attack_winners(wide: pd.DataFrame, trained_against: Mapping[str, str | None] = TRAINED_AGAINST) -> dict:
    """For every row trained against an attack column of ``wide``: is it the most robust row on that
    column among the rows *not* trained against it (ties count as most robust)? Rows that share a
    training attack (AT-PGD and AdvProp both train on PGD) are not each other's competitors: the
    question is whether training on X buys robustness to X that training on something else does not.
    The strict reading (every other row) fails on the paper's own Table 2, where AdvProp's 57.6 beats
    AT-PGD's 56.7 on PGD. ``{row: {"attack", "accuracy", "best_other", "best_other_row",
    "most_robust", "same_attack_rows"}}`` (``same_attack_rows``: the rows left out of the comparison)."""
    out = {}
    for row, attack in trained_against.items():
        if attack is None or row not in wide.index or attack not in wide.columns:
            continue
        same = [other for other in wide.index if other != row and trained_against.get(other) == attack]
        others = wide.drop(index=[row, *same])[attack].astype(float).dropna()
        own = float(wide.loc[row, attack])
        if len(others):
            best, best_row = float(others.max()), str(others.idxmax())
        else:
            best, best_row = float("nan"), None
        out[row] = {"attack": attack, "accuracy": own, "best_other": best, "best_other_row": best_row,
                    "most_robust": bool(not len(others) or own >= best), "same_attack_rows": same}
    return out


def paper_table() -> pd.DataFrame:
    """The paper's Table 2 (percent as printed) under our row and column names, with its printed
    mean and the mean recomputed by this module's rule."""
    from . import paper

    t2 = paper.value("table2")
    columns = t2["columns"]
    by_name = {v: k for k, v in PAPER_NAMES.items()}
    frame = pd.DataFrame({by_name[name]: dict(zip(columns, values)) for name, values in t2["rows"].items()}).T
    attacks = [c for c in ATTACK_COLUMNS if c in frame.columns]
    frame["mean_recomputed"] = [frame.loc[row, [c for c in attacks if c != TRAINED_AGAINST.get(row)]].mean()
                                for row in frame.index]
    return frame


def strength_checks(models: Mapping[str, nn.Module], test_set, attacks: Mapping[str, object], *, count: int,
                    seed: int = 0, steps_factor: int = 5, restarts: int = 5, min_accuracy: float = 0.05,
                    progress: bool = True) -> pd.DataFrame:
    """Is the standard budget enough? For every (row, attack) whose accuracy at the standard budget
    is at least ``min_accuracy`` (nothing to lose otherwise), the same ``count`` images (drawn with
    ``seed``) also face the attack with ``steps_factor``× the iterations, then ``restarts``× its
    random starts in all (an attack of 5 starts: 25).

    The stages run in sequence, as AutoAttack runs its attacks, each only on the images every
    earlier stage left correct: the standard attack on all of them; ``steps_factor``× the
    iterations on its survivors; then (``restarts`` − 1)× the attack's starts as further random
    restarts (the standard run's were the first; drawn from ``seed + 1``, so no start is replayed)
    on what is still correct. An
    image counts as robust only if it survives every stage, so the worst-case accuracy ``worst`` is
    what a sound evaluation would report, and ``drop_total`` = standard − worst is the share of all
    ``count`` images that only the stronger attacks break (never negative). Columns: ``standard``,
    ``steps_x{k}`` (after the longer attack), ``worst`` (after the restarts too), ``drop_steps_x{k}``
    (what the longer attack finds), ``drop_restarts_{r}`` (what the restarts find beyond it) and
    ``drop_total``. The book's bar is ``drop_total`` ≤ 0.02."""
    from tqdm.auto import tqdm

    from .evaluation import _indices, correct_mask

    indices = _indices(len(test_set), count, seed)
    jobs = [(row, name) for row in models for name in attacks]
    steps_name, restarts_name = f"steps_x{steps_factor}", f"restarts_{restarts}"
    records = []
    for row, name in tqdm(jobs, desc="strength checks", disable=not progress):
        model, attack = models[row], attacks[name]
        total = len(indices)
        left = indices[correct_mask(model, test_set, attack, indices, seed=seed)]
        standard = len(left)                       # digits still correct after each stage
        if standard / total < min_accuracy:
            continue
        if len(left) and steps_factor > 1:
            left = left[correct_mask(model, test_set, stronger(attack, steps_factor=steps_factor), left, seed=seed)]
        after_steps = len(left)
        if len(left) and restarts > 1:
            # even a single extra run must be random: it must not replay the standard one
            restarted = stronger(attack, restarts=restarts - 1, random_start=True)
            left = left[correct_mask(model, test_set, restarted, left, seed=seed + 1)]
        worst = len(left)
        # every share from integer counts: one digit of 50 is exactly 0.02, so it meets a ≤ 0.02 bar
        records.append({"row": row, "attack": name, "standard": standard / total, steps_name: after_steps / total,
                        "worst": worst / total, f"drop_{steps_name}": (standard - after_steps) / total,
                        f"drop_{restarts_name}": (after_steps - worst) / total, "drop_total": (standard - worst) / total})
    return pd.DataFrame(records)


def worst_case_table(wide: pd.DataFrame, strength: pd.DataFrame,
                     trained_against: Mapping[str, str | None] = TRAINED_AGAINST) -> pd.DataFrame:
    """Table 2 (``table2``'s wide table, fractions) with every cell that ``strength_checks`` examined
    lowered by that cell's ``drop_total`` (floored at 0) and ``mean_unseen`` recomputed under the
    same rule: an estimate of what the table would read under the stronger attacks.

    An estimate, not a measurement: Table 2's cells are means over the evaluation seeds, the drops
    come from the ``count`` images of one seed, so a cell moves by the share of images the standard
    budget missed *on those images*. Cells the checks skipped (already below their ``min_accuracy``)
    or rows they did not attack keep their value. Adds ``checked`` (the attack columns lowered, in
    ``ATTACK_COLUMNS`` order) per row."""
    missing = {"row", "attack", "drop_total"} - set(strength.columns)
    if len(strength) and missing:
        raise ValueError(f"worst_case_table: strength has no columns {sorted(missing)}; pass strength_checks' table")
    out = wide.copy()
    checked: dict[str, list[str]] = {row: [] for row in out.index}
    for line in strength.itertuples():
        if line.row not in out.index or line.attack not in out.columns:
            raise ValueError(f"worst_case_table: strength checked ({line.row}, {line.attack}), "
                             "which is not a cell of Table 2")
        out.loc[line.row, line.attack] = max(0.0, float(out.loc[line.row, line.attack]) - float(line.drop_total))
        checked[line.row].append(line.attack)
    out["mean_unseen"] = mean_unseen(out.drop(columns=["mean_unseen"], errors="ignore"), trained_against)
    out["checked"] = [", ".join(c for c in ATTACK_COLUMNS if c in checked[row]) for row in out.index]
    return out


def transfer_check(models: Mapping[str, nn.Module], test_set, attacks: Mapping[str, object], *, source: str = "original",
                   count: int, seed: int = 0, white_box: pd.DataFrame | None = None) -> pd.DataFrame:
    """Adversarial images crafted once against ``models[source]`` and shown to every other model,
    beside each model's white-box accuracy (from ``white_box``, an ``evaluate_rows`` table on the
    same ``(count, seed)``). A sound evaluation has transfer accuracy ≥ white-box accuracy."""
    from .evaluation import _indices
    from .attacks.latent import _attack_mode

    indices = _indices(len(test_set), count, seed)
    images, labels = test_set.images[indices], test_set.labels[indices].long()
    records = []
    for name, attack in attacks.items():
        crafted = attack(models[source], images, labels, generator=torch.Generator().manual_seed(seed))
        for row, model in models.items():
            if row == source:
                continue
            with _attack_mode(model), torch.no_grad():
                accuracy = fraction(model(crafted).argmax(1) == labels)
            record = {"row": row, "attack": name, "transfer": accuracy}
            if white_box is not None:
                hit = white_box[(white_box.row == row) & (white_box.column == name) & (white_box.seed == seed)]
                record["white_box"] = float(hit.accuracy.iloc[0]) if len(hit) else float("nan")
            records.append(record)
    return pd.DataFrame(records)


def bound_curve(models: Mapping[str, nn.Module], test_set, make_attack: Callable[[float], object],
                bounds: Sequence[float], *, count: int, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Accuracy of every model under ``make_attack(bound)`` for each bound: ``row, bound, accuracy``."""
    from .evaluation import evaluate

    attacks = {f"{bound:g}": make_attack(bound) for bound in bounds}
    records = []
    for row, model in models.items():
        table = evaluate(model, test_set, attacks, seeds=[seed], count=count, include_clean=False, progress=progress)
        records += [{"row": row, "bound": float(line.attack), "accuracy": line.accuracy} for line in table.itertuples()]
    return pd.DataFrame(records)
