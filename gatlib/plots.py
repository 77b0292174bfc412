"""Figures that several chapters draw: image grids (torchvision ``make_grid``) and class-balance bars."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torchvision.utils import make_grid


def show_grid(images: torch.Tensor, nrow: int = 8, title: str | None = None, ax=None, padding: int = 2):
    """Draw a batch ``(N, C, H, W)`` in [0, 1] as one grid image; returns the axes."""
    if images.ndim != 4:
        raise ValueError(f"show_grid expects (N, C, H, W) images, got shape {tuple(images.shape)}")
    grid = make_grid(images.detach().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    if ax is None:
        _, ax = plt.subplots(figsize=(nrow * 0.6, (len(images) + nrow - 1) // nrow * 0.6 + 0.4))
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def per_class_examples(dataset, per_class: int = 4, seed: int = 0) -> torch.Tensor:
    """``per_class`` images of every class, ordered class by class (a row per class in a grid)."""
    generator = torch.Generator().manual_seed(seed)
    picked = []
    for label in range(int(dataset.labels.max()) + 1):
        indices = torch.nonzero(dataset.labels == label).flatten()
        if len(indices) < per_class:
            raise ValueError(f"{dataset.name}: class {label} has only {len(indices)} images, {per_class} asked for")
        picked.append(indices[torch.randperm(len(indices), generator=generator)[:per_class]])
    return dataset.images[torch.cat(picked)]


def class_balance(datasets: dict, ax=None):
    """Bar plot of the fraction of each class in every dataset (seaborn); returns the axes."""
    rows = []
    for name, dataset in datasets.items():
        counts = dataset.class_counts()
        for label, count in enumerate(counts):
            rows.append({"dataset": name, "class": label, "fraction": count / counts.sum()})
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 2.8))
    sns.barplot(data=pd.DataFrame(rows), x="class", y="fraction", hue="dataset", ax=ax)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--")
    ax.set_ylabel("fraction of images")
    return ax


def labelled_grid(rows: dict, labels: dict | None = None, cell: float = 1.1, title: str | None = None):
    """A grid of images with a caption under each: ``rows`` maps a row name to images ``(N, C, H, W)``,
    ``labels`` the same names to N captions (e.g. the classifier's predictions). Returns the figure."""
    names = list(rows)
    columns = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(names), columns, figsize=(columns * cell, len(names) * (cell + 0.25)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(rows[name]):
                continue
            image = rows[name][c].detach().cpu().clamp(0, 1)
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            if labels and name in labels:
                ax.set_xlabel(str(labels[name][c]), fontsize=8)
        axes[r, 0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def row_colors(rows=()) -> dict:
    """One colour per model row, the same in every figure and chapter: Table 1's rows first
    (Original, the controls, GAT, the variants trained on every seed), then the other ablations and
    Table 2's defenses (``gatlib.finetune``); ``rows`` not among them (a user's own) get the colours
    left over, in the order given. Pass it as seaborn's ``palette``."""
    from . import finetune

    known = [finetune.ORIGINAL, *finetune.TRAINED_ROWS, *finetune.MULTI_SEED_ABLATIONS,
             *(name for name in finetune.ABLATIONS if name not in finetune.MULTI_SEED_ABLATIONS),
             *finetune.DEFENSE_ROWS]
    order = known + [row for row in dict.fromkeys(rows) if row not in known]
    colors = sns.color_palette("tab10") + sns.color_palette("Dark2") + sns.color_palette("Set1")
    if len(order) > len(colors):
        colors = colors + sns.color_palette("husl", len(order) - len(colors))
    return dict(zip(order, colors))
