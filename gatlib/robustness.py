"""Evaluating robustness and generalisation: Table 1 (classification) and Table 3 of the paper.

The evaluation protocol (chapters 04 and 06; ``book/method.md`` links here)
----------------------------------------------------------------------------

Every model is measured on the same data, with seeds that no training run ever uses.

**Clean** — top-1 accuracy on the MNIST *test* split (10,000 digits; the `paper` profile: the
user's in-domain test folder). ``clean_accuracy``.

**Adversarial (white-box)** — each model is attacked by its *own* GAT attack: the non-targeted
latent attack of eq. 1–2 (``gatlib.attacks.latent``), moving **both** styles and noises of **all**
layers, at most ``max_iters`` = 10 signed-gradient steps, step sizes (ε, δ) of chapter 02, from
``samples`` ≥ 1,000 latents balanced over the classes. The latents come from
``eval_latent_seed(k)`` (seed k of the model) through ``attack_batches``, i.e. torch seeds
``(EVAL_SEED_BASE + k) * 100_003 + batch``, ≥ 2·10⁹, disjoint from every seed the GAT training
pool draws (``GATMode``: ``k * 1_000_003 + refresh``, < 10⁸ for k < 99) and from the learning-curve
latents (``CURVE_SEED_BASE``). Every model of seed k starts from the same latents.
The accuracy is the fraction of **all** samples whose final prediction is the conditioning class
c: a sample F already misclassifies at t = 0 counts as an **error** (unlike the attack statistics
of chapter 02, which leave such samples out); a correctly classified sample counts as correct
exactly when the attack fails to fool F within ``max_iters`` steps. When F is right on every
clean sample this equals ``1 − success rate``. ``white_box_accuracy``.

**Adversarial (label-preserving successes only)** — our class-conditional generator lets the
attack turn a 7 into a 9 (chapter 02: about half of the successes change the digit for the
oracles), and no classifier can be "robust" to a digit that is no longer the label. With the zoo's
label oracles (``gatlib.oracles``: never attacked, other architectures) the white-box attack is
scored a second way: a fooled sample counts as an error only when the oracles' majority still sees
c in the adversarial image; one they see as another digit counts as defended. This is the machine
analogue of the paper's user study, which found 99.2 % of its adversarial images still carried
their label. ``white_box_accuracy(..., oracles=...)`` → ``accuracy_preserved``.

**Adversarial (transfer from Original)** — the paper's protocol is ambiguous
({ref}`dev-adversarial-protocol`), so we also report accuracy on *one fixed set* of adversarial
images per seed k, crafted once by the white-box attack above against the Original model of seed
k (``mnist-classifier-s{k}``), from the same latents. The set keeps **every** sample's final
image (fooled images, images still classified c after 10 steps, and clean images Original got
wrong at t = 0), with its conditioning class as the label; so Original's transfer accuracy equals
its white-box accuracy. ``transfer_accuracy(..., only_fooled=True)`` gives the other reading:
only the images that fooled Original (Original scores 0 % on them by construction).
``craft_fixed_set``, ``transfer_accuracy``.

**Out of domain (Table 3)** — top-1 accuracy on MNIST test (in domain) and on optdigits (out of
domain); the `paper` profile: a binary cars-vs-cats classifier on LSUN test folders, and ImageNet
folders whose car and cat classes ``group_classes`` merges into the two labels.
``out_of_domain_table``.

**Seeds and intervals** — every row (Original, the two controls, GAT) has one model per seed k ∈
{0, 1, 2}; the fine-tuned rows start from the Original model of the same seed. A table cell is the
mean over seeds ± the half-width of a 95 % Student-t confidence interval
(``t_{0.975, n−1} · s / √n``, s the sample standard deviation; ``mean_ci``). With three seeds the
interval is wide (t = 4.30): it describes seed-to-seed variation of training, not the sampling
error of the 1,000 test latents.

**Twins** — two rows fine-tuned from the same Original of each seed (e.g. GAT with and without the
oracle filter) are compared by their per-seed difference, mean ± the same t-interval over the
seeds they share: the Originals' own spread cancels. ``paired_differences``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import classifiers
from .attacks.latent import attack_batches

EVAL_SEED_BASE = 20_000    # white-box / fixed-set latents of seed k: attack_batches(seed=EVAL_SEED_BASE + k)
CURVE_SEED_BASE = 30_000   # learning-curve latents (gatlib.finetune), disjoint from both


def eval_latent_seed(seed: int) -> int:
    """The ``attack_batches`` seed of the evaluation latents for models of training seed ``seed``."""
    return EVAL_SEED_BASE + int(seed)


def _labels(G, samples) -> torch.Tensor:
    """``samples`` as conditioning classes: an int (balanced over the generator's classes) or a tensor."""
    if isinstance(samples, torch.Tensor):
        return samples.long().cpu()
    if int(samples) < 1:
        raise ValueError(f"samples must be a positive number of latents, got {samples}")
    from .attacks.latent import class_labels

    return class_labels(G, int(samples))


def _attack(G, model, samples, seed, eps, delta, max_iters, batch_size, progress):
    return attack_batches(G, model, _labels(G, samples), seed=seed, batch_size=batch_size, progress=progress,
                          eps=eps, delta=delta, moves="both", layers=None, max_iters=max_iters)


# ------------------------------------------------------------------------------------ metrics
def clean_accuracy(model: nn.Module, test_set, device=None) -> float:
    """Top-1 accuracy (a fraction) on a test set (``ImageSet`` or any map-style dataset)."""
    return classifiers.accuracy(model, test_set, device=device)


def _white_box_numbers(result, seconds: float, oracles: dict | None = None) -> dict:
    correct = result.predictions == result.labels
    summary = result.summary()
    # count ratios (classifiers.fraction), not float32 means: equal counts must read as equal
    numbers = {"accuracy": classifiers.fraction(correct), "correct": int(correct.sum()), "samples": len(correct),
               **{k: v for k, v in summary.items() if k != "samples"}, "seconds": seconds}
    if oracles:
        numbers.update(_preserved_numbers(result, correct, oracles))
    return numbers


def _preserved_numbers(result, correct: torch.Tensor, oracles: dict) -> dict:
    """The white-box numbers when only *label-preserving* successes count: a fooled sample whose
    adversarial image the oracles' majority no longer sees as c changed the digit, not the model's
    answer to it, and is counted as a defended sample. Samples misclassified at t = 0 stay errors."""
    from .oracles import majority_agrees

    fooled = (result.success & result.valid).cpu()
    preserved = torch.zeros_like(fooled)
    if fooled.any():
        preserved[fooled] = majority_agrees(oracles, result.images[fooled.to(result.images.device)],
                                            result.labels[fooled.to(result.labels.device)])
    changed_digit = fooled & ~preserved
    valid = int(result.valid.sum())
    return {"accuracy_preserved": classifiers.fraction(correct.cpu() | changed_digit),
            "preserved_success_rate": preserved.sum().item() / valid if valid else float("nan"),
            "preservation": preserved.sum().item() / int(fooled.sum()) if fooled.any() else float("nan")}


def white_box_accuracy(G, model: nn.Module, samples, seed: int, eps: float, delta: float, max_iters: int = 10,
                       batch_size: int = 250, progress: bool = False, oracles: dict | None = None) -> dict:
    """Accuracy of ``model`` under its own GAT attack (both, all layers, ≤ ``max_iters`` steps).

    ``samples``: number of latents (balanced over classes) or a tensor of classes; ``seed``: the
    ``attack_batches`` seed (``eval_latent_seed(k)`` for the book's protocol). Returns
    ``{"accuracy", "correct", "samples", "misclassified_at_start", "success_rate",
    "mean_iterations", ..., "seconds"}``: ``accuracy`` counts samples misclassified at t = 0 as
    errors; ``success_rate`` and the other attack statistics are over the valid samples only
    (``LatentAttackResult.summary``). With ``oracles`` (``{name: classifier}``, never attacked) it
    adds ``accuracy_preserved`` — the accuracy when only label-preserving successes count (the
    oracles' majority still sees c in the adversarial image) — ``preserved_success_rate`` and
    ``preservation`` (the share of successes that preserve the label)."""
    started = time.time()
    result = _attack(G, model, samples, seed, eps, delta, max_iters, batch_size, progress)
    return _white_box_numbers(result, time.time() - started, oracles)


@dataclass
class FixedSet:
    """Adversarial images crafted once against one model (the Original), every sample kept.

    ``images``: each sample's final image; ``labels``: conditioning classes c; ``fooled``: the
    sample fooled the source model within ``max_iters``; ``clean_images``: the unperturbed
    ``g(y, η)``; ``white_box``: the source model's ``white_box_accuracy`` numbers (same attack)."""
    images: torch.Tensor
    labels: torch.Tensor
    fooled: torch.Tensor
    clean_images: torch.Tensor
    white_box: dict
    source: str = "original"

    def __len__(self) -> int:
        return len(self.labels)


def craft_fixed_set(G, original_model: nn.Module, samples, seed: int, eps: float, delta: float, max_iters: int = 10,
                    batch_size: int = 250, source: str = "original", progress: bool = False,
                    oracles: dict | None = None) -> FixedSet:
    """Run the white-box attack against ``original_model`` once and keep every sample's final image
    (the transfer column of Table 1); the same latents as ``white_box_accuracy(..., seed)``."""
    started = time.time()
    result = _attack(G, original_model, samples, seed, eps, delta, max_iters, batch_size, progress)
    return FixedSet(images=result.images, labels=result.labels, fooled=result.success.clone(),
                    clean_images=result.clean_images, white_box=_white_box_numbers(result, time.time() - started, oracles),
                    source=source)


def transfer_accuracy(model: nn.Module, fixed_set: FixedSet, only_fooled: bool = False, device=None) -> float:
    """Accuracy of ``model`` on a fixed adversarial set (all of it, or only the images that fooled
    the source model: the other reading of the paper's protocol)."""
    images, labels = fixed_set.images, fixed_set.labels
    if only_fooled:
        images, labels = images[fixed_set.fooled], labels[fixed_set.fooled]
    if len(labels) == 0:
        return float("nan")
    return classifiers.fraction(classifiers.predict(model, images, device=device) == labels)


# ------------------------------------------------------------------------------- intervals
def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval) over seeds; one value: half-width NaN."""
    from scipy.stats import t

    values = np.asarray([float(v) for v in values], dtype=float)
    if len(values) == 0:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan")
    half = float(t.ppf((1 + confidence) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, half


def format_ci(mean: float, half: float, scale: float = 100.0, decimals: int = 1) -> str:
    """``"93.2 ± 1.4"`` (percent by default); just the mean when the half-width is NaN."""
    if math.isnan(mean):
        return "—"
    text = f"{scale * mean:.{decimals}f}"
    return text if math.isnan(half) else f"{text} ± {scale * half:.{decimals}f}"


def summarize(per_seed: pd.DataFrame, columns: Sequence[str], row: str = "row",
              confidence: float = 0.95) -> pd.DataFrame:
    """Rows × columns of ``"mean ± CI"`` strings (percent) plus raw ``<column>_mean`` /
    ``<column>_ci`` numbers (fractions) and the number of seeds, from a per-seed long table."""
    out = {}
    for name, group in per_seed.groupby(row, sort=False):
        cells = {}
        for column in columns:
            mean, half = mean_ci(group[column].dropna(), confidence) if group[column].notna().any() else (float("nan"),) * 2
            cells[column] = format_ci(mean, half)
            cells[f"{column}_mean"], cells[f"{column}_ci"] = mean, half
        cells["seeds"] = len(group)
        out[name] = cells
    table = pd.DataFrame(out).T
    table.index.name = row
    return table


def paired_differences(per_seed: pd.DataFrame, pairs: dict, columns: Sequence[str], row: str = "row",
                       confidence: float = 0.95) -> pd.DataFrame:
    """Per ``{name: (treated, reference)}`` pair of rows, the per-seed difference treated − reference
    of each column (both rows fine-tuned from the same Original of that seed, so seed-to-seed variation
    of the Original cancels), as mean ± CI over the seeds the two rows share.

    Returns one line per pair with ``<column>`` ("+1.2 ± 0.8" points), ``<column>_mean`` /
    ``<column>_ci`` (fractions), ``<column>_per_seed`` (list) and ``seeds``. A pair whose rows share no
    seed is an error that names them."""
    out = {}
    for name, (treated, reference) in pairs.items():
        missing = [r for r in (treated, reference) if r not in set(per_seed[row])]
        if missing:
            raise ValueError(f"paired_differences: no row {missing} in the table (pair {name!r})")
        treated_by_seed = per_seed[per_seed[row] == treated].set_index("seed")
        reference_by_seed = per_seed[per_seed[row] == reference].set_index("seed")
        shared = sorted(set(treated_by_seed.index) & set(reference_by_seed.index))
        if not shared:
            raise ValueError(f"paired_differences: rows {treated!r} and {reference!r} share no seed")
        cells = {"treated": treated, "reference": reference, "seeds": len(shared)}
        for column in columns:
            differences = [float(treated_by_seed.loc[seed, column]) - float(reference_by_seed.loc[seed, column])
                           for seed in shared]
            mean, half = mean_ci(differences, confidence)
            cells[column] = "—" if math.isnan(mean) else (
                f"{100 * mean:+.1f}" + ("" if math.isnan(half) else f" ± {100 * half:.1f}"))
            cells[f"{column}_mean"], cells[f"{column}_ci"] = mean, half
            cells[f"{column}_per_seed"] = differences
        out[name] = cells
    table = pd.DataFrame(out).T
    table.index.name = "pair"
    return table


# ---------------------------------------------------------------------------------- Table 1
@dataclass
class Table1:
    summary: pd.DataFrame     # rows × (clean, adversarial, transfer) "mean ± CI" and raw numbers
    per_seed: pd.DataFrame    # one row per (row, seed)
    fixed_sets: dict          # seed -> FixedSet crafted against that seed's Original


TABLE1_COLUMNS = ("clean", "adversarial", "transfer")


def table1(models_by_row: dict, G, test_set, *, seeds: Sequence[int], eps: float, delta: float, samples: int = 1000,
           max_iters: int = 10, batch_size: int = 250, original_row: str = "original", device=None,
           progress: bool = True, oracles: dict | None = None) -> Table1:
    """Table 1 (classification) by the protocol of this module's docstring.

    ``models_by_row``: ``{row: [model of seeds[0], model of seeds[1], ...]}``, with the Original
    models under ``original_row`` (their attacks also craft the fixed sets). Columns: ``clean``,
    ``adversarial`` (white-box), ``transfer`` (the fixed set of the same seed, every sample), and
    ``transfer_fooled_only`` (only the images that fooled Original); with ``oracles``, also
    ``adversarial_preserved`` (white-box accuracy when only label-preserving successes count, see
    ``white_box_accuracy``) and ``preservation``."""
    from tqdm.auto import tqdm

    if original_row not in models_by_row:
        raise ValueError(f"table1 needs the Original models under {original_row!r}; rows: {list(models_by_row)}")
    for row, models in models_by_row.items():
        if len(models) != len(seeds):
            raise ValueError(f"row {row!r} has {len(models)} models for {len(seeds)} seeds {list(seeds)}")
    rows, fixed_sets = [], {}
    jobs = [(index, seed, row) for index, seed in enumerate(seeds) for row in models_by_row]
    bar = tqdm(jobs, desc="Table 1", disable=not progress)
    for index, seed, row in bar:
        bar.set_postfix(row=row, seed=seed)
        if seed not in fixed_sets:
            fixed_sets[seed] = craft_fixed_set(G, models_by_row[original_row][index], samples, eval_latent_seed(seed),
                                               eps, delta, max_iters, batch_size, oracles=oracles)
        model = models_by_row[row][index]
        if row == original_row:
            white = fixed_sets[seed].white_box
        else:
            white = white_box_accuracy(G, model, samples, eval_latent_seed(seed), eps, delta, max_iters, batch_size,
                                       oracles=oracles)
        extra = {"adversarial_preserved": white["accuracy_preserved"], "preservation": white["preservation"]} \
            if oracles else {}
        rows.append({"row": row, "seed": seed, "clean": clean_accuracy(model, test_set, device=device),
                     "adversarial": white["accuracy"], "transfer": transfer_accuracy(model, fixed_sets[seed], device=device),
                     "transfer_fooled_only": transfer_accuracy(model, fixed_sets[seed], only_fooled=True, device=device),
                     "success_rate": white["success_rate"], "misclassified_at_start": white["misclassified_at_start"],
                     "mean_iterations": white["mean_iterations"], "attack_seconds": white["seconds"], **extra})
    per_seed = pd.DataFrame(rows)
    summary = summarize(per_seed, TABLE1_COLUMNS + ("transfer_fooled_only",)
                        + (("adversarial_preserved", "preservation") if oracles else ()))
    return Table1(summary=summary, per_seed=per_seed, fixed_sets=fixed_sets)


def table1_white_box(table: Table1, row: str, seed: int) -> dict:
    """The white-box numbers Table 1 measured for ``row`` on ``seed``, in ``white_box_accuracy``'s
    keys, so that a table on the same latents (``model_table(known=...)``) reuses them instead of
    attacking the same model again."""
    line = table.per_seed[(table.per_seed.row == row) & (table.per_seed.seed == seed)]
    if len(line) != 1:
        raise ValueError(f"Table 1 has no single line for row {row!r} and seed {seed}")
    line = line.iloc[0]
    white = {"accuracy": float(line.adversarial), "success_rate": float(line.success_rate),
             "mean_iterations": float(line.mean_iterations)}
    if "adversarial_preserved" in line.index:
        white["accuracy_preserved"], white["preservation"] = float(line.adversarial_preserved), float(line.preservation)
    return white


def robustness_row(G, model, test_set, *, seed: int, eps: float, delta: float, samples: int, max_iters: int = 10,
                   batch_size: int = 250, fixed_set: FixedSet | None = None, device=None,
                   oracles: dict | None = None, white: dict | None = None) -> dict:
    """Clean and white-box accuracy (and transfer accuracy when ``fixed_set`` is given) of one
    model: one line of an ablation table. ``white``: the model's white-box numbers already measured
    on the same ``samples`` latents of ``seed`` (``table1_white_box``); the attack is not rerun."""
    if white is None:
        white = white_box_accuracy(G, model, samples, eval_latent_seed(seed), eps, delta, max_iters, batch_size,
                                   oracles=oracles)
    elif oracles and "accuracy_preserved" not in white:
        raise ValueError("robustness_row: the given white-box numbers have no label-preserving column, "
                         "but oracles were given")
    row = {"clean": clean_accuracy(model, test_set, device=device), "adversarial": white["accuracy"],
           "success_rate": white["success_rate"], "mean_iterations": white["mean_iterations"]}
    if oracles:
        row["adversarial_preserved"], row["preservation"] = white["accuracy_preserved"], white["preservation"]
    if fixed_set is not None:
        row["transfer"] = transfer_accuracy(model, fixed_set, device=device)
    return row


def model_table(models: dict, G, test_set, *, seed: int, eps: float, delta: float, samples: int,
                max_iters: int = 10, batch_size: int = 250, fixed_set: FixedSet | None = None,
                device=None, oracles: dict | None = None, known: dict | None = None) -> pd.DataFrame:
    """``robustness_row`` for several models of one seed (the ablations), one line per name.
    ``known``: ``{name: white-box numbers}`` measured on the same latents (``table1_white_box``)."""
    known = known or {}
    rows = {name: robustness_row(G, model, test_set, seed=seed, eps=eps, delta=delta, samples=samples,
                                 max_iters=max_iters, batch_size=batch_size, fixed_set=fixed_set, device=device,
                                 oracles=oracles, white=known.get(name))
            for name, model in models.items()}
    table = pd.DataFrame(rows).T
    table.index.name = "model"
    return table


# ---------------------------------------------------------------------------------- Table 3
@dataclass
class Table3:
    summary: pd.DataFrame
    per_seed: pd.DataFrame


def out_of_domain_table(models_by_row: dict, in_set, ood_set, seeds: Sequence[int] | None = None,
                        device=None) -> Table3:
    """Table 3: in-domain and out-of-domain accuracy of every model (one per seed per row), mean ±
    95 % CI over seeds, and the gap (in-domain − out-of-domain)."""
    rows = []
    for row, models in models_by_row.items():
        row_seeds = list(seeds) if seeds is not None else list(range(len(models)))
        if len(row_seeds) != len(models):
            raise ValueError(f"row {row!r} has {len(models)} models for {len(row_seeds)} seeds")
        for seed, model in zip(row_seeds, models):
            in_domain = clean_accuracy(model, in_set, device=device)
            out_of_domain = clean_accuracy(model, ood_set, device=device)
            rows.append({"row": row, "seed": seed, "in_domain": in_domain, "out_of_domain": out_of_domain,
                         "gap": in_domain - out_of_domain})
    per_seed = pd.DataFrame(rows)
    return Table3(summary=summarize(per_seed, ("in_domain", "out_of_domain", "gap")), per_seed=per_seed)


def _all_predictions(model, dataset, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return classifiers.predict(model, dataset.images, device=device), dataset.labels.cpu()
    from torch.utils.data import DataLoader

    predicted, labels = [], []
    for images, batch_labels in DataLoader(dataset, batch_size=64):
        predicted.append(classifiers.predict(model, images, device=device))
        labels.append(torch.as_tensor(batch_labels))
    return torch.cat(predicted), torch.cat(labels)


def confusion_matrices(models_by_row: dict, dataset, num_classes: int, device=None) -> dict:
    """Per row, the confusion matrix (sklearn; rows = true class, columns = predicted) on
    ``dataset``, summed over the row's models (seeds)."""
    from sklearn.metrics import confusion_matrix

    out = {}
    for row, models in models_by_row.items():
        total = np.zeros((num_classes, num_classes), dtype=np.int64)
        for model in models:
            predicted, labels = _all_predictions(model, dataset, device)
            total += confusion_matrix(labels.numpy(), predicted.numpy(), labels=list(range(num_classes)))
        out[row] = total
    return out


def top_confusions(matrix: np.ndarray, count: int = 5, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``count`` most frequent errors (true → predicted) of a confusion matrix, with their
    share of all errors."""
    errors = matrix.copy()
    np.fill_diagonal(errors, 0)
    total = errors.sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(matrix))]
    order = np.argsort(errors, axis=None)[::-1][:count]
    rows = []
    for flat in order:
        true, predicted = divmod(int(flat), len(matrix))
        if errors[true, predicted] == 0:
            break
        rows.append({"true": names[true], "predicted": names[predicted], "count": int(errors[true, predicted]),
                     "share_of_errors": errors[true, predicted] / total})
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share_of_errors"])


def plot_confusions(matrices: dict, class_names: Sequence[str] | None = None, errors_only: bool = True,
                    title: str | None = None):
    """Seaborn heatmaps of confusion matrices side by side (``errors_only``: the diagonal blanked,
    so the colour shows where the errors go). Returns the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(matrices), figsize=(4.2 * len(matrices), 3.8), squeeze=False)
    for ax, (row, matrix) in zip(axes[0], matrices.items()):
        shown = matrix.astype(float)
        mask = np.eye(len(matrix), dtype=bool) if errors_only else None
        names = list(class_names) if class_names is not None else list(range(len(matrix)))
        sns.heatmap(shown, mask=mask, annot=True, fmt=".0f", cmap="Reds", cbar=False, ax=ax,
                    xticklabels=names, yticklabels=names, annot_kws={"fontsize": 7})
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        errors = matrix.sum() - np.trace(matrix)
        ax.set_title(f"{row}: {errors} errors")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- paper profile (ImageNet)
class GroupedImageFolder(torch.utils.data.Dataset):
    """An ImageFolder restricted to some of its classes, each mapped to the index of its group."""

    def __init__(self, folder, class_to_group: dict, groups: list[str]):
        self.folder, self.groups = folder, list(groups)
        self.classes = list(groups)
        self.root = getattr(folder, "root", "images")
        index_of = {name: i for i, name in enumerate(folder.classes)}
        target_group = {index_of[name]: group for name, group in class_to_group.items()}
        self.indices = [i for i, (_, target) in enumerate(folder.samples) if target in target_group]
        self.targets = [target_group[folder.samples[i][1]] for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index):
        image, _ = self.folder[self.indices[index]]
        return image, self.targets[index]

    def counts(self) -> dict:
        return {group: self.targets.count(i) for i, group in enumerate(self.groups)}


def group_classes(imagefolder, class_groups: dict, transform=None) -> GroupedImageFolder:
    """Merge the classes of an ImageFolder into labelled groups (Table 3's ImageNet column).

    ``imagefolder``: a ``torchvision.datasets.ImageFolder`` or a folder path (``<root>/<class>/
    <images>``; then ``transform`` applies). ``class_groups``: ``{"car": [folder names, e.g.
    ImageNet wnids], "cat": [...]}``; the label of a group is its position in ``class_groups``, which
    must therefore follow the classifier's class order (the in-domain folder's sorted names).
    Images of classes in no group are left out; a name that is not a class folder is an error."""
    if isinstance(imagefolder, (str, Path)):
        from torchvision import datasets

        root = Path(imagefolder)
        if not root.is_dir():
            raise FileNotFoundError(f"no image folder at {root} (expected {root}/<class>/<images>)")
        imagefolder = datasets.ImageFolder(str(root), transform=transform)
    if not class_groups:
        raise ValueError("class_groups is empty: give {group: [class folder names]}")
    known = set(imagefolder.classes)
    class_to_group, problems = {}, []
    for group_index, (group, names) in enumerate(class_groups.items()):
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            problems.append(f"group {group!r} lists no classes")
        for name in names:
            if name not in known:
                problems.append(f"{name!r} (group {group!r}) is not a class folder")
            elif name in class_to_group:
                problems.append(f"{name!r} is in two groups")
            else:
                class_to_group[name] = group_index
    if problems:
        sample = ", ".join(sorted(known)[:8]) + (", …" if len(known) > 8 else "")
        raise ValueError(f"cannot group the classes of {getattr(imagefolder, 'root', 'the folder')}: "
                         + "; ".join(problems) + f". Its {len(known)} class folders: {sample}")
    return GroupedImageFolder(imagefolder, class_to_group, list(class_groups))
