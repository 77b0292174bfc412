"""Controls for the label-preservation measurement: when the oracles say a successful latent
attack changed the digit, is that the attack's doing, and is it real?

Chapter 02 finds that the independent oracles (``gatlib.oracles``) still see the conditioning class
c in only about half of the successful adversarial digits, where the paper's raters saw it in 99.2 %.
Two explanations would make that number an artefact, and each has a control here:

* **The step sizes are simply too large** — any latent move of that size would wreck the digit.
  :func:`random_move` renders each sample after a move of exactly the attack's size in a random
  direction: every coordinate of y and η moves by the same amount |Δ| as the attack moved it, with
  a random sign. Same per-coordinate size (so the same L∞, L1 and L2 distance in latent space),
  no gradient. If those digits keep their class, the size is not the cause; the direction is.
* **The oracles are fooled, not the digit changed** — adversarial examples transfer between
  neural networks, so trained oracles could share F's mistake. :class:`PixelKNN` is an oracle with
  no gradient and no learned features: the majority class of the k nearest *real* training digits
  in pixel space (Fix & Hodges' k-NN). It says which real digits an image looks like; no attack on
  F can transfer to it through shared features. If it agrees with the trained oracles, the pixels
  really moved toward another class.

A third explanation is about our generator rather than the measurement: it is class-conditional and
draws all ten digits, where each of the paper's LSUN generators draws one category, so perhaps the
attack changes the digit only because the generator knows how to draw the others.
:func:`specialist_comparison` attacks the digits of one class on two generators — ours, and the
same generator trained on that digit alone until it draws the other nine much worse (the zoo's
``mnist-stylegan2-sevens``) — and reports, beside success and preservation, how well each still
draws the other classes.

A fourth is about the attacked classifier: ours is 99.6 % right on MNIST test, the paper's LSUN
classifier 88.9 % on its test set. A near-perfect classifier leaves few mistakes that a person
would not also make, so the quickest way to fool it may be to draw another digit. :func:`classifier_comparison`
attacks the same latents, with the same step sizes, on classifiers of different accuracy (the
zoo's ``mnist-classifier-few-*``, the same SmallCNN trained on only 100 to 3,000 digits) and
reports each one's test accuracy beside its success and preservation.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["PixelKNN", "classifier_comparison", "random_move", "specialist_comparison"]


class PixelKNN(nn.Module):
    """A k-nearest-neighbour classifier over real images in pixel space, as a module: ``forward``
    returns the share of the k neighbours in each class, (B, num_classes), so ``argmax`` is the
    majority vote (ties go to the lower class index, as in scikit-learn) and
    ``gatlib.classifiers.predict`` works on it (it has no parameters; the vote runs on the CPU).

    Build it with :meth:`fit` from a ``DigitDataset`` (or any images and labels); the distances are
    Euclidean on the flattened [0, 1] images (scikit-learn's ``KNeighborsClassifier``, brute force).
    Images must have the training images' shape."""

    def __init__(self, images: Tensor, labels: Tensor, k: int = 5, num_classes: int | None = None):
        super().__init__()
        from sklearn.neighbors import KNeighborsClassifier

        if not isinstance(images, Tensor) or images.ndim != 4:
            raise ValueError(f"PixelKNN: images must be a (N, C, H, W) tensor, got "
                             f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
        if len(labels) != len(images):
            raise ValueError(f"PixelKNN: {len(images)} images but {len(labels)} labels")
        if int(k) != k or k < 1 or k > len(images):
            raise ValueError(f"PixelKNN: k must be an integer in 1..{len(images)} (the number of images), got {k!r}")
        if not torch.isfinite(images).all():
            raise ValueError("PixelKNN: the reference images contain NaN or infinite values")
        labels = torch.as_tensor(labels).long().cpu()
        self.k, self.image_shape = int(k), tuple(images.shape[1:])
        self.num_classes = int(num_classes) if num_classes is not None else int(labels.max()) + 1
        self._knn = KNeighborsClassifier(n_neighbors=self.k, algorithm="brute")
        self._knn.fit(images.detach().cpu().flatten(1).numpy().astype(np.float32), labels.numpy())

    @classmethod
    def fit(cls, dataset, k: int = 5, count: int | None = None, seed: int = 0) -> "PixelKNN":
        """From a ``DigitDataset`` (any ``gatlib.data.ImageSet``): all of it, or ``count`` images
        drawn with ``seed`` (``ImageSet.subset``)."""
        if count is not None:
            dataset = dataset.subset(count, seed)
        return cls(dataset.images, dataset.labels, k=k, num_classes=getattr(dataset, "num_classes", None))

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"PixelKNN: expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("PixelKNN: images contain NaN or infinite values")
        flat = images.detach().cpu().flatten(1).numpy().astype(np.float32)
        # scikit-learn's shares cover only the classes seen in fitting: place them among all classes
        votes = torch.zeros(len(images), self.num_classes)
        votes[:, torch.from_numpy(self._knn.classes_.astype(np.int64))] = torch.from_numpy(
            self._knn.predict_proba(flat)).float()
        return votes.to(images.device)

    def extra_repr(self) -> str:
        return f"k={self.k}, references={self._knn.n_samples_fit_}, image_shape={self.image_shape}"


def random_move(G, styles, noises: list, result, seed: int = 0, noise_space: str = "input") -> Tensor:
    """Images after a latent move of the attack's size in a random direction.

    ``styles``/``noises`` are the starting y and η that ``result`` (a ``LatentAttackResult`` from
    ``latent_attack`` on them, which keeps its final ``styles`` and ``noises``) started from. Every
    coordinate moves by the attack's own |Δ| with an independent random sign drawn with ``seed``:
    y' = y + |y_adv − y| ⊙ s, η' = η + |η_adv − η| ⊙ s', s, s' uniform in {−1, +1}. Coordinates the
    attack did not move do not move. Returns ``G.to_unit(g(y', η'))``, images in [0, 1], one per
    sample of ``result``."""
    if result.styles is None or result.noises is None:
        raise ValueError("random_move needs the attack's final styles and noises: pass the result of "
                         "latent_attack itself (attack_batches' joined result drops them)")
    if len(styles.conv) != len(result.styles.conv) or len(noises) != len(result.noises):
        raise ValueError("random_move: the starting latents do not have the layers of the attack's result")
    batch = len(result.labels)
    if len(styles.conv[0]) != batch:
        raise ValueError(f"random_move: {len(styles.conv[0])} starting latents for an attack on {batch} samples")
    generator = torch.Generator().manual_seed(seed)

    def moved(start: Tensor, end: Tensor) -> Tensor:
        start, end = start.detach().expand_as(end), end.detach()   # a broadcast noise becomes per-sample
        size = (end - start).abs()
        sign = torch.randint(0, 2, size.shape, generator=generator).to(size) * 2 - 1
        return start + size * sign

    new_styles = type(styles)([moved(s, e) for s, e in zip(styles.conv, result.styles.conv)],
                              [moved(s, e) for s, e in zip(styles.torgb, result.styles.torgb)])
    new_noises = [None if start is None or end is None else moved(start, end)
                  for start, end in zip(noises, result.noises)]
    with torch.no_grad():
        return G.to_unit(G.synthesize(new_styles, new_noises, noise_space=noise_space)).clamp(0, 1)


def specialist_comparison(generators: dict, classifier: nn.Module, oracles: dict, digit: int, count: int,
                          seed: int, eps: float, delta: float, max_iters: int = 10, moves: str = "both",
                          examples: int = 8):
    """The same non-targeted attack (eq. 1–2) on ``count`` latents of class ``digit`` for each
    class-conditional generator of ``generators`` (``{row name: G}``), from the same seed.

    Returns a ``pandas.DataFrame``, one row per generator: ``draws the other classes`` (the share of
    ``count`` samples of the *other* classes, balanced, that ``classifier`` assigns to their class: how
    much the generator can still draw them), ``F right at t = 0`` (on the ``digit`` samples),
    ``success rate`` (of those), ``preservation`` (the oracles' majority still sees ``digit`` in the
    successful examples; ``gatlib.oracles``), ``pixel L2 change`` (mean over successes) and
    ``successes``; shares are count ratios (``classifiers.fraction``). Also returns, per generator, up
    to ``examples`` images of each kind: ``{name: {"unperturbed": ..., "adversarial": ..., "other
    classes": ...}}`` (the first fooled samples before and after the attack, and its first attempts
    at the other classes), for a figure."""
    import pandas as pd

    from .attacks.latent import attack_batches
    from .classifiers import fraction, predict
    from .generators.explore import generate

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rows, shown = {}, {}
    for name, G in generators.items():
        if not G.num_classes or not 0 <= digit < G.num_classes:
            raise ValueError(f"generator {name!r} must be class-conditional with a class {digit} "
                             f"(it has {G.num_classes} classes)")
        others = torch.tensor([c for c in range(G.num_classes) if c != digit]).repeat(count)[:count]
        drawn = generate(G, others, seed=seed + 1)
        result = attack_batches(G, classifier, torch.full((count,), digit), seed=seed, eps=eps, delta=delta,
                                moves=moves, max_iters=max_iters, progress=False)
        summary = _attack_row(result, oracles)
        rows[name] = {"draws the other classes": fraction(predict(classifier, drawn) == others),
                      **{key: summary[key] for key in ("F right at t = 0", "success rate", "preservation",
                                                       "pixel L2 change", "successes")}}
        picks = result.success.nonzero().squeeze(1)[:examples]
        shown[name] = {"unperturbed": result.clean_images[picks], "adversarial": result.images[picks],
                       "other classes": drawn[:examples]}
    return pd.DataFrame.from_dict(rows, orient="index"), shown   # from_dict: successes stay ints


def classifier_comparison(G, models: dict, oracles: dict, test_set, count: int, seed: int, eps: float,
                          delta: float, max_iters: int = 10, moves: str = "both"):
    """The same non-targeted attack (eq. 1–2), from the same ``count`` latents (balanced over the
    classes) and with the same step sizes, against each classifier of ``models`` (``{row name: F}``).

    Returns a ``pandas.DataFrame``, one row per classifier: ``test accuracy`` (on ``test_set``),
    ``F right at t = 0`` (on the generated samples), ``success rate`` (of those), ``median
    iterations`` (to fool, over the successes), ``preservation`` (the oracles' majority still sees
    the conditioning class in the successful examples; ``gatlib.oracles``), ``pixel L2 change``
    (mean over successes) and ``successes``; shares are count ratios (``classifiers.fraction``)."""
    import pandas as pd

    from .attacks.latent import attack_batches, class_labels
    from .classifiers import accuracy

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if not models:
        raise ValueError("models is empty: give at least one classifier to attack")
    labels = class_labels(G, count)
    rows = {}
    for name, model in models.items():
        result = attack_batches(G, model, labels, seed=seed, eps=eps, delta=delta, moves=moves,
                                max_iters=max_iters, progress=False)
        rows[name] = {"test accuracy": accuracy(model, test_set), **_attack_row(result, oracles)}
    return pd.DataFrame.from_dict(rows, orient="index")


def _attack_row(result, oracles: dict) -> dict:
    """One comparison row from a ``LatentAttackResult`` (whose ``success`` already excludes the
    samples F got wrong at t = 0): its ``summary`` statistics and the oracles' preservation."""
    from .classifiers import fraction
    from .oracles import preservation_of_attack

    summary = result.summary()
    return {"F right at t = 0": fraction(result.valid), "success rate": summary["success_rate"],
            "median iterations": summary["median_iterations"],
            "preservation": preservation_of_attack(oracles, result)["majority"],
            "pixel L2 change": summary["mean_l2"], "successes": int(result.success.sum())}
