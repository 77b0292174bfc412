"""How good is a generator? The numbers chapter 01 prints for the embedded StyleGAN2.

* **Label agreement** — the fraction of images generated for class ``c`` that a classifier puts in
  class ``c``. With the attacked classifier and with every independent oracle: the label of a
  generated image is its conditioning class (``book/method.md``), so this must be high. Where it
  falls short, ``agreement_breakdown`` tells the generator's misses (digits that *every* judge
  puts in another class) from a judge's own errors (digits only that judge rejects), beside each
  judge's accuracy on real test digits; ``agreement_by_truncation`` shows where in the latent
  distribution the misses sit.
* **Fréchet distance** (Heusel et al., 2017) between generated and real test digits, computed by
  torchmetrics' ``FrechetInceptionDistance`` with an *independent* zoo classifier's penultimate
  features in place of Inception (no Inception weights offline, and Inception features mean little
  on 32x32 digits). Its scale is arbitrary, so it is read against a floor: the distance between the
  two halves of the real test set.
* **k-NN precision and recall** (Kynkäänniemi et al., 2019), per class, in the same feature space:
  precision = share of generated samples inside the real manifold (union of k-NN balls of real
  features), recall = share of real samples inside the generated manifold. A mode-collapsed
  generator keeps a high precision but loses recall.
"""
from __future__ import annotations

import torch
from torch import nn

from . import classifiers


class Features(nn.Module):
    """A classifier's ``embed`` as a torchmetrics feature extractor (``num_features`` attribute)."""

    def __init__(self, model: nn.Module, batch_size: int = 500):
        super().__init__()
        if not hasattr(model, "embed"):
            raise ValueError(f"{type(model).__name__} has no .embed(images): cannot use it as a feature space")
        self.model = model.eval()
        self.batch_size = batch_size
        with torch.no_grad():
            device = next(model.parameters()).device
            self.num_features = int(model.embed(torch.zeros(2, 1, 32, 32, device=device)).shape[-1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return torch.cat([self.model.embed(images[i:i + self.batch_size].to(device)).float().cpu()
                          for i in range(0, len(images), self.batch_size)])


def label_agreement(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` that ``model`` classifies as their conditioning ``labels``: an exact
    count ratio (9,500 of 10,000 is 0.95, which a float32 mean would round to 0.94999999 and fail
    a ≥ 0.95 bar)."""
    if len(images) == 0:
        raise ValueError("label_agreement needs at least one image")
    return int((classifiers.predict(model, images) == labels.cpu()).sum()) / len(images)


def agreement_breakdown(predictions: dict, labels: torch.Tensor, real_accuracy: dict | None = None) -> dict:
    """Why a judge disagrees with the conditioning class: the generator's miss or the judge's own.

    ``predictions`` maps each judge to its predicted classes for the same generated images;
    ``labels`` are their conditioning classes. Returns a dict with

    * ``agreement``: ``{judge: share predicted as c}`` and ``interval``: its Wilson 95 % interval;
    * ``rejected_by_all``: the share that *every* judge puts outside ``c``. No judge reads such a
      digit as ``c``: the generator drew something else;
    * ``rejected_alone``: ``{judge: share}`` that only this judge puts outside ``c`` (its own error,
      or a borderline digit);
    * ``real_accuracy``: passed through, ``{judge: accuracy on real test digits}``, the judge's own
      error floor.
    """
    if not predictions:
        raise ValueError("agreement_breakdown needs the predictions of at least one judge")
    labels = labels.cpu()
    if len(labels) == 0:
        raise ValueError("agreement_breakdown needs at least one generated image")
    rejected = {}
    for name, predicted in predictions.items():
        if predicted.shape != labels.shape:
            raise ValueError(f"judge {name!r} predicted {tuple(predicted.shape)} classes for {tuple(labels.shape)} labels")
        rejected[name] = predicted.cpu() != labels
    from .userstudy import wilson_interval

    stacked = torch.stack(list(rejected.values()))
    count = len(labels)
    interval = {}
    for name, miss in rejected.items():
        low, high = wilson_interval(count - int(miss.sum()), count)
        interval[name] = (float(low), float(high))
    alone = {name: classifiers.fraction(miss & ~torch.cat([stacked[:i], stacked[i + 1:]]).any(0))
             for i, (name, miss) in enumerate(rejected.items())} if len(rejected) > 1 else {}
    return {"agreement": {name: classifiers.fraction(~miss) for name, miss in rejected.items()},
            "interval": interval, "rejected_by_all": classifiers.fraction(stacked.all(0)),
            "rejected_alone": alone, "real_accuracy": dict(real_accuracy or {})}


def agreement_by_truncation(G, classifiers_by_name: dict, psis, samples: int = 10_000, seed: int = 0) -> dict:
    """``{psi: {judge: agreement}}`` on ``samples`` class-balanced digits from the same seeded latents
    at each truncation ``psi`` (1 = no truncation). Agreement that rises quickly as ``psi`` drops
    means the off-class digits come from the tails of the latent distribution."""
    from .generators.explore import generate

    labels = torch.arange(samples) % (G.num_classes or 1)
    result = {}
    for psi in psis:
        images = generate(G, labels, seed=seed, truncation_psi=float(psi))
        result[float(psi)] = {name: label_agreement(model, images, labels) for name, model in classifiers_by_name.items()}
    return result


def frechet_distance(features: Features, real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance between two image sets in ``features``' space (torchmetrics)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise ValueError("the Fréchet distance needs at least two images in each set")
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    for start in range(0, len(real), 1000):
        metric.update(real[start:start + 1000], real=True)
    for start in range(0, len(fake), 1000):
        metric.update(fake[start:start + 1000], real=False)
    return metric.compute().item()


def _radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of every sample to its k-th nearest neighbour within the same set."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # +1: each point is its own nearest neighbour


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of ``queries`` inside at least one ball (centre in ``support``, radius ``radii``)."""
    inside = torch.zeros(len(queries), dtype=torch.bool)
    for start in range(0, len(queries), 1000):
        distances = torch.cdist(queries[start:start + 1000], support)
        inside[start:start + 1000] = (distances <= radii[None]).any(dim=1)
    return classifiers.fraction(inside)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of fake vs real feature sets."""
    if min(len(real_features), len(fake_features)) <= k:
        raise ValueError(f"k-NN precision/recall needs more than k={k} samples in each set")
    precision = _coverage(fake_features, real_features, _radii(real_features, k))
    recall = _coverage(real_features, fake_features, _radii(fake_features, k))
    return precision, recall


def per_class_precision_recall(features: Features, real: torch.Tensor, real_labels: torch.Tensor,
                               fake: torch.Tensor, fake_labels: torch.Tensor, k: int = 3) -> dict:
    """``{class: (precision, recall)}``: the manifolds are estimated within each class, so a
    generator that draws one style per class (mode collapse inside a class) fails recall."""
    real_features, fake_features = features(real), features(fake)
    result = {}
    for label in sorted(set(real_labels.tolist())):
        result[label] = precision_recall(real_features[real_labels == label],
                                         fake_features[fake_labels.cpu() == label], k)
    return result


def evaluate_generator(G, classifiers_by_name: dict, feature_model: nn.Module, real, samples: int = 10_000,
                       seed: int = 0, truncation_psi: float = 1.0, k: int = 3) -> dict:
    """Every quality number of chapter 01 for a class-conditional generator ``G``.

    ``samples`` images, balanced over the classes, from seeded latents; ``real`` is the real test
    set (an ``ImageSet``); use ``samples >= len(real) / 2`` so the Fréchet distances compare equal
    sample sizes. Returns ``{"agreement": {name: fraction}, "breakdown": agreement_breakdown(...)`` (with
    each judge's accuracy on ``real``), ``"frechet": ..., "frechet_floor":
    ..., "frechet_ratio": ..., "precision": {class: p}, "recall": {class: r}, "images": ..., "labels": ...}``.
    The Fréchet floor is the distance between two random halves of ``real``; the generator's
    distance is measured against the first half with as many generated images as the second half.
    """
    from .generators.explore import generate

    num_classes = G.num_classes or 1
    labels = torch.arange(samples) % num_classes
    images = generate(G, labels, seed=seed, truncation_psi=truncation_psi)
    predictions = {name: classifiers.predict(model, images) for name, model in classifiers_by_name.items()}
    real_accuracy = {name: label_agreement(model, real.images, real.labels) for name, model in classifiers_by_name.items()}
    breakdown = agreement_breakdown(predictions, labels, real_accuracy)
    features = Features(feature_model)
    # The Fréchet distance is biased upward at small sample sizes, so both distances are measured
    # at the same sizes against the same reference: real half A vs real half B (the floor), and
    # real half A vs as many generated images as half B holds.
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    half = len(real) // 2
    reference, other_half = real.images[order[:half]], real.images[order[half:]]
    floor = frechet_distance(features, reference, other_half)
    distance = frechet_distance(features, reference, images[:len(other_half)])
    per_class = per_class_precision_recall(features, real.images, real.labels, images, labels, k=k)
    return {"agreement": breakdown["agreement"], "breakdown": breakdown, "frechet": distance, "frechet_floor": floor,
            "frechet_ratio": distance / max(floor, 1e-12),
            "precision": {c: p for c, (p, _) in per_class.items()},
            "recall": {c: r for c, (_, r) in per_class.items()},
            "images": images, "labels": labels}
