"""Set-level realism numbers of chapter 09: the Fréchet (and kernel) distance of each kind of image
to real digits, read against a real-vs-real floor.

Two things make a naive per-kind Fréchet distance misleading, and ``frechet_by_kind`` fixes both:

* **Class mix.** Real digits of different classes sit in different parts of the feature space, so
  two sets with different class mixes are far apart even when every image is a perfect digit. The
  real reference and the real-vs-real control of each kind are therefore **class-matched**: for
  every class, as many real and as many control digits as the kind has of that class, drawn at
  random (seeded, without replacement). The kind, its reference and its control then share one
  class histogram, and the floor (reference vs control) measures only the sampling noise at that
  histogram.
* **Sample size.** The Fréchet distance is biased upward at small sample sizes, and the bias
  depends on the size. Every kind is measured at **one common count**: the size of the smallest
  kind (or a smaller ``count``). A larger kind is subsampled to that count *class-proportionally*
  (largest-remainder apportionment of its own class histogram, then a seeded draw within each
  class), so that it keeps its class mix; reference and control are then matched to the subsample.

With fewer images than feature dimensions (e.g. ~100-200 digits in a 256-dimensional space) the
covariance estimates are singular. The Fréchet distance is still defined (torchmetrics takes the
square root of the eigenvalues of the covariance product) but it is noisy, which is why each
distance is read against its own floor and why a second statistic, which estimates no covariance,
is reported beside it: the kernel distance (``kernel_distance``), KID's squared maximum mean
discrepancy (Bińkowski et al., 2018) with torchmetrics' cubic polynomial kernel on the same
features, estimated without bias for class-matched sets. Its expectation is 0 for two sets from the
same distribution (single values can be slightly negative), so it is reported with its own floor
rather than as a ratio.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from . import quality

MIN_COUNT = 2   # the Fréchet distance and the unbiased kernel distance need two images per set


@dataclass
class KindDistances:
    """What ``frechet_by_kind`` returns.

    ``count``: the common number of images of every set; ``rows``: ``{kind: {"images", "frechet",
    "frechet_floor", "frechet_ratio", "kid", "kid_floor"}}`` (the ``kid`` entries only when
    computed); ``picks``: ``{kind: {"kind": indices into the kind's images, "real": indices into
    ``real``, "control": indices into ``control``}}``, the three sets of equal size and class mix.
    """
    count: int
    rows: dict = field(default_factory=dict)
    picks: dict = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per kind (the ``rows``), for the chapter."""
        return pd.DataFrame(self.rows).T


def _as_labels(labels, length: int, name: str) -> Tensor:
    labels = torch.as_tensor(labels).long().cpu().flatten()
    if len(labels) != length:
        raise ValueError(f"{name}: {length} images but {len(labels)} labels")
    return labels


def _apportion(class_counts: dict, total: int) -> dict:
    """``{class: quota}`` summing to ``total``, proportional to ``class_counts`` (largest remainder;
    ties go to the smaller class index, so the result is deterministic). Every quota is at most the
    class's count."""
    size = sum(class_counts.values())
    exact = {label: n * total / size for label, n in class_counts.items()}
    quotas = {label: int(value) for label, value in exact.items()}
    left = total - sum(quotas.values())
    for label in sorted(exact, key=lambda c: (-(exact[c] - quotas[c]), c))[:left]:
        quotas[label] += 1
    return quotas


def _draw(where: Tensor, count: int, generator: torch.Generator) -> Tensor:
    return where[torch.randperm(len(where), generator=generator)[:count]]


def kernel_distance(features: quality.Features, x: Tensor, y: Tensor) -> float:
    """Unbiased squared MMD between two sets of ``m`` images each, with KID's kernel (torchmetrics'
    ``poly_kernel``: cubic, ``gamma = 1 / num_features``, ``coef = 1``), as the U-statistic over the
    pairs ``(x[i], y[i])`` (Gretton et al., 2012)::

        1 / (m (m - 1)) · Σ_{i ≠ j} k(x_i, x_j) + k(y_i, y_j) − k(x_i, y_j) − k(x_j, y_i)

    Unlike torchmetrics' ``KernelInceptionDistance`` (whose cross term keeps ``i = j``), this stays
    unbiased when ``x`` and ``y`` are drawn class by class with ``x[i]`` and ``y[i]`` of the same
    class, as ``frechet_by_kind`` draws them: KID's estimate of two such real sets is then
    clearly below 0, since their within-set terms leave out same-class pairs that its cross term
    keeps. Its expectation is 0 when both sets come from the same distribution (single values
    can be slightly negative)."""
    from torchmetrics.image.kid import poly_kernel

    if len(x) != len(y) or len(x) < MIN_COUNT:
        raise ValueError(f"kernel_distance needs two sets of the same size, at least {MIN_COUNT}; got {len(x)} and "
                         f"{len(y)}")
    fx, fy = features(x).double(), features(y).double()
    kxy = poly_kernel(fx, fy)
    h = poly_kernel(fx, fx) + poly_kernel(fy, fy) - kxy - kxy.T
    m = len(x)
    return ((h.sum() - h.diagonal().sum()) / (m * (m - 1))).item()


def frechet_by_kind(features: quality.Features, real: Tensor, real_labels, control: Tensor, control_labels,
                    kinds: dict, *, seed: int = 0, count: int | None = None, kid: bool = True) -> KindDistances:
    """Fréchet distance of each kind to class-matched real digits, at one common count.

    Args:
        features: the feature space (a ``gatlib.quality.Features``).
        real, real_labels: the real reference digits (chapter 09: the ``real`` kind, MNIST test).
        control, control_labels: a second, independent set of real digits (chapter 09: MNIST's
            validation split) for the real-vs-real floor.
        kinds: ``{name: (images, labels)}``, the sets to measure (not the reference itself).
        seed: seeds every draw; the draws of a kind depend on ``seed``, its name and ``count``
            only, not on which other kinds are measured.
        count: the common number of images; by default the size of the smallest kind. Larger
            kinds are subsampled to it keeping their class proportions.
        kid: also compute the kernel distance (``kid``) and its floor (``kid_floor``).

    For every kind, with ``n_c`` its (subsampled) images of class ``c``: ``n_c`` real and ``n_c``
    control digits of class ``c`` are drawn without replacement; ``frechet`` is the distance
    kind-vs-real, ``frechet_floor`` real-vs-control (same real digits), ``frechet_ratio`` their
    ratio (1 = as close to real digits as real digits are to each other).

    Raises ``ValueError`` when ``kinds`` is empty, a kind has fewer than two images (or fewer than
    ``count``), or a class of a kind needs more digits than ``real`` or ``control`` hold of it.
    """
    if not kinds:
        raise ValueError("kinds is empty: give {name: (images, labels)}")
    real_labels = _as_labels(real_labels, len(real), "real")
    control_labels = _as_labels(control_labels, len(control), "control")
    labelled = {}
    for name, (images, labels) in kinds.items():
        labelled[name] = (images, _as_labels(labels, len(images), f"kind {name!r}"))
        if len(images) < MIN_COUNT:
            raise ValueError(f"kind {name!r} has {len(images)} image(s): the Fréchet distance needs at least "
                             f"{MIN_COUNT} per set (leave the kind out or make more images)")
    smallest = min(labelled, key=lambda name: len(labelled[name][0]))
    if count is None:
        count = len(labelled[smallest][0])
    if count < MIN_COUNT:
        raise ValueError(f"count must be at least {MIN_COUNT}, got {count}")
    if count > len(labelled[smallest][0]):
        raise ValueError(f"count={count} but kind {smallest!r} has only {len(labelled[smallest][0])} images: "
                         "every kind is measured at the same count")

    result = KindDistances(count=count)
    for name, (images, labels) in labelled.items():
        generator = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        histogram = {int(c): int(n) for c, n in zip(*torch.unique(labels, return_counts=True))}
        quotas = _apportion(histogram, count)
        chosen = {"kind": [], "real": [], "control": []}
        for label, quota in sorted(quotas.items()):
            if quota == 0:
                continue
            for side, side_labels in (("real", real_labels), ("control", control_labels)):
                available = int((side_labels == label).sum())
                if available < quota:
                    raise ValueError(f"kind {name!r} needs {quota} digits of class {label} (of {count} images) but "
                                     f"the {side} set has only {available}: give a {side} set with more of that "
                                     "class or a smaller count")
            chosen["kind"].append(_draw(torch.nonzero(labels == label).flatten(), quota, generator))
            chosen["real"].append(_draw(torch.nonzero(real_labels == label).flatten(), quota, generator))
            chosen["control"].append(_draw(torch.nonzero(control_labels == label).flatten(), quota, generator))
        picks = {side: torch.cat(parts) for side, parts in chosen.items()}
        kind_images, reference, other = images[picks["kind"]], real[picks["real"]], control[picks["control"]]
        distance = quality.frechet_distance(features, reference, kind_images)
        floor = quality.frechet_distance(features, reference, other)
        row = {"images": count, "frechet": distance, "frechet_floor": floor,
               "frechet_ratio": distance / max(floor, 1e-12)}
        if kid:
            # the three sets are concatenated class by class in the same order: pairs share a class
            row["kid"] = kernel_distance(features, reference, kind_images)
            row["kid_floor"] = kernel_distance(features, reference, other)
        result.rows[name] = row
        result.picks[name] = picks
    return result
