"""Song et al. (NeurIPS 2018), "Constructing Unrestricted Adversarial Examples with Generative
Models": the baseline that GAT's related work (§2) and supplementary compare against, on our
class-conditional generator.

Song et al. search the latent **z** of an AC-GAN for an image of source class ``c`` that fools the
target classifier F while the GAN's auxiliary classifier still sees ``c``. Starting from a random
``z0`` they minimise, with Adam, per sample::

    L(z) = L0 + λ1 · mean_i max(|z_i − z0_i| − ε_z, 0) + λ2 · CE(aux(g(z, c)), c)

* ``L0`` — targeted: ``CE(F(g(z, c)), T)``; non-targeted (our addition, following the book's eq. 1
  convention): ``CE`` toward the least-likely class of the unperturbed image, held fixed;
* the second term is a *soft* box around ``z0`` (zero inside the box, linear outside);
* the third keeps the class: ``aux`` is an independent classifier standing in for AC-GAN's
  auxiliary head (our StyleGAN2 has none): a zoo model that is neither F nor a label oracle.

Defaults are Song et al.'s: λ1 = λ2 = 100, ε_z = 0.1, Adam with lr 0.01. The differences from
GAT's attack (``gatlib.attacks.latent``): Song moves z (before the mapping network, so every layer's
style changes together), not the per-layer styles y and noises η, and optimises many Adam steps
under a soft constraint instead of taking a few signed-gradient steps. The noises η are drawn once
per sample and held fixed.

A sample succeeds when F is fooled (non-targeted: ``argmax F ≠ c``; targeted: ``= T``) *and* the
auxiliary classifier still says ``c``; it leaves the search at that step. As for GAT, samples that F
misclassifies at the start are left out of every statistic (``valid`` is False).

``SongMode`` is the matching training mode for ``gatlib.training.train_classifier``: every batch is
the clean batch plus as many Song examples (half and half), the supplementary's adversarial
training with Song et al.'s examples, which it reports to cost clean accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..pool import PoolMode
from .latent import _attack_mode

DEFAULTS = {"lambda_box": 100.0, "lambda_aux": 100.0, "z_eps": 0.1, "lr": 0.01}


@dataclass
class SongResult:
    """What ``song_attack`` returns, one row per sample.

    ``images``: the image at success (else after ``max_steps``), in [0, 1]; ``clean_images``:
    ``g(z0, c)``; ``z``/``z0``: final and starting latents; ``labels``: source classes c;
    ``targets``: T (targeted) or the least-likely class (non-targeted); ``valid``: F classified the
    clean image as c; ``fooled``: F fooled by ``images``; ``aux_agrees``: the auxiliary classifier
    says c on ``images``; ``success``: valid, fooled and aux agrees; ``iterations``: Adam steps taken;
    ``predictions``: F's classes for ``images``; ``box_excess``: the soft-box term at the end.
    """
    images: Tensor
    clean_images: Tensor
    z: Tensor
    z0: Tensor
    labels: Tensor
    targets: Tensor
    targeted: bool
    valid: Tensor
    fooled: Tensor
    aux_agrees: Tensor
    success: Tensor
    iterations: Tensor
    predictions: Tensor
    box_excess: Tensor
    max_steps: int

    def summary(self) -> dict:
        """Statistics over the valid samples."""
        count = int(self.valid.sum())
        success = self.success & self.valid
        steps = self.iterations[success].float()
        rate = lambda mask: (mask & self.valid).sum().item() / count if count else float("nan")  # noqa: E731
        return {"samples": len(self.valid), "misclassified_at_start": 1 - count / max(len(self.valid), 1),
                "success_rate": rate(self.success), "fooled_rate": rate(self.fooled),
                "aux_agreement": rate(self.aux_agrees),
                "mean_iterations": steps.mean().item() if len(steps) else float("nan"),
                "mean_box_excess": self.box_excess[success].mean().item() if len(steps) else float("nan")}


def soft_box_penalty(z: Tensor, z0: Tensor, z_eps: float) -> Tensor:
    """Song et al.'s soft box, per sample: ``mean_i max(|z_i − z0_i| − z_eps, 0)`` (shape (B,)); zero
    while every coordinate stays within ``z_eps`` of its start."""
    if z.shape != z0.shape:
        raise ValueError(f"z and z0 must have the same shape, got {tuple(z.shape)} and {tuple(z0.shape)}")
    if z_eps < 0:
        raise ValueError(f"z_eps must be non-negative, got {z_eps}")
    return F.relu((z - z0).abs() - z_eps).flatten(1).mean(1)


def _check(lambda_box, lambda_aux, z_eps, lr, max_steps):
    if max_steps < 1:
        raise ValueError(f"max_steps must be at least 1, got {max_steps}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    if lambda_box < 0 or lambda_aux < 0:
        raise ValueError(f"lambda_box and lambda_aux must be non-negative, got {lambda_box} and {lambda_aux}")
    if z_eps < 0:
        raise ValueError(f"z_eps must be non-negative, got {z_eps}")


def song_attack(G, classifier: nn.Module, aux_classifier: nn.Module, labels: Tensor, *, seed: int = 0,
                z0: Tensor | None = None, noises: list | None = None, target: int | Tensor | None = None,
                lambda_box: float = DEFAULTS["lambda_box"], lambda_aux: float = DEFAULTS["lambda_aux"],
                z_eps: float = DEFAULTS["z_eps"], lr: float = DEFAULTS["lr"], max_steps: int = 100,
                truncation_psi: float = 1.0) -> SongResult:
    """Song et al.'s latent search on a batch; see the module docstring.

    Args:
        G: a class-conditional ``gatlib.generators.stylegan2.Generator``.
        classifier: F, the attacked classifier (images in [0, 1]).
        aux_classifier: the independent classifier that must keep seeing class c.
        labels: source classes c, shape (B,).
        seed: draws ``z0`` and the fixed noises when they are not given.
        target: None (non-targeted) or T (an int or a (B,) tensor, T ≠ c).
        max_steps: at most this many Adam steps per sample.
    """
    _check(lambda_box, lambda_aux, z_eps, lr, max_steps)
    if not G.num_classes:
        raise ValueError("Song et al.'s attack needs a class-conditional generator (G.num_classes > 0)")
    device = G.const.device
    labels = labels.long().to(device)
    batch = len(labels)
    if batch == 0:
        raise ValueError("labels is empty: nothing to attack")
    rng = torch.Generator().manual_seed(seed)
    z0 = G.sample_z(batch, rng) if z0 is None else z0.to(device)
    noises = G.make_noise(batch, rng) if noises is None else noises
    if z0.shape != (batch, G.z_dim):
        raise ValueError(f"z0 must have shape ({batch}, {G.z_dim}), got {tuple(z0.shape)}")
    targeted = target is not None
    if targeted:
        targets = torch.as_tensor(target, device=device).long().expand(batch).clone()
        if (targets == labels).any():
            raise ValueError("a targeted attack needs T different from the source class c of every sample")

    z = z0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=lr)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    success = torch.zeros(batch, dtype=torch.bool, device=device)
    iterations = torch.full((batch,), max_steps, dtype=torch.long, device=device)
    final_images = final_z = predictions = aux_predictions = None
    with _attack_mode(G, classifier, aux_classifier):
        for step in range(max_steps + 1):
            images = G.to_unit(G.synthesize(G.styles(G.mapping(z, labels, truncation_psi)), noises))
            logits, aux_logits = classifier(images), aux_classifier(images)
            predicted, aux_predicted = logits.argmax(1).detach(), aux_logits.argmax(1).detach()
            if step == 0:
                clean = images.detach().clone()
                valid = predicted == labels
                if not targeted:
                    targets = logits.argmin(1).detach()      # the least-likely class, held fixed
                final_images, final_z = clean.clone(), z.detach().clone()
                predictions, aux_predictions = predicted.clone(), aux_predicted.clone()
                iterations[~valid] = 0
                done |= ~valid                               # misclassified at the start: left out
            active = ~done
            final_images[active] = images.detach()[active]
            final_z[active] = z.detach()[active]
            predictions[active] = predicted[active]
            aux_predictions[active] = aux_predicted[active]
            fooled_now = (predicted == targets) if targeted else (predicted != labels)
            reached = active & fooled_now & (aux_predicted == labels)
            success |= reached
            iterations[reached] = step
            done |= reached
            if step == max_steps or done.all():
                break
            per_sample = (F.cross_entropy(logits, targets, reduction="none")
                          + lambda_box * soft_box_penalty(z, z0, z_eps)
                          + lambda_aux * F.cross_entropy(aux_logits, labels, reduction="none"))
            optimizer.zero_grad(set_to_none=True)
            per_sample[~done].sum().backward()
            optimizer.step()

    fooled = (predictions == targets) if targeted else (predictions != labels)
    return SongResult(
        images=final_images.cpu(), clean_images=clean.cpu(), z=final_z.cpu(), z0=z0.detach().cpu(),
        labels=labels.cpu(), targets=targets.cpu(), targeted=targeted, valid=valid.cpu(),
        fooled=(fooled & valid).cpu(), aux_agrees=(aux_predictions == labels).cpu(), success=(success & valid).cpu(),
        iterations=iterations.cpu(), predictions=predictions.cpu(),
        box_excess=soft_box_penalty(final_z, z0.detach(), z_eps).cpu(), max_steps=max_steps)


def song_batches(G, classifier, aux_classifier, labels: Tensor, seed: int, batch_size: int = 250,
                 progress: bool = True, **attack_kwargs) -> SongResult:
    """``song_attack`` over many samples in batches (seed + batch index per batch), results joined."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    parts = []
    starts = range(0, len(labels), batch_size)
    for number, begin in enumerate(tqdm(starts, desc="Song et al. attack", disable=not progress, leave=False)):
        parts.append(song_attack(G, classifier, aux_classifier, labels[begin:begin + batch_size],
                                 seed=seed * 100_003 + number, **attack_kwargs))
    if not parts:
        raise ValueError("labels is empty: nothing to attack")
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    fields = ("images", "clean_images", "z", "z0", "labels", "targets", "valid", "fooled", "aux_agrees", "success",
              "iterations", "predictions", "box_excess")
    return SongResult(**{name: cat(name) for name in fields}, targeted=parts[0].targeted,
                      max_steps=parts[0].max_steps)


class SongMode(PoolMode):
    """A training mode (``mode(model, images, labels, step)``) for ``train_classifier``: the clean
    batch followed by as many Song et al. examples with their source classes (half and half).

    The examples come from a pool made against the *current* model every ``refresh_every`` steps
    (``gatlib.pool.PoolMode``, as for ``gatlib.gat.GATMode``); ``keep="successful"`` keeps only
    examples that fooled the model while the auxiliary classifier agreed (like GAT's filter),
    ``keep="all"`` every attacked valid sample's final image. While the pool is empty the batch is
    the clean batch alone.
    """

    rate_key = "success_rate"

    def __init__(self, G, aux_classifier: nn.Module, *, pool_size: int = 256, refresh_every: int = 50,
                 chunk: int = 64, max_steps: int = 50, keep: str = "successful", max_attempts: int = 4,
                 seed: int = 0, **attack_kwargs):
        super().__init__(G, pool_size=pool_size, refresh_every=refresh_every, chunk=chunk,
                         max_attempts=max_attempts, seed=seed)
        if keep not in ("successful", "all"):
            raise ValueError(f"keep must be 'successful' or 'all', got {keep!r}")
        _check(attack_kwargs.get("lambda_box", 0.0), attack_kwargs.get("lambda_aux", 0.0),
               attack_kwargs.get("z_eps", 0.0), attack_kwargs.get("lr", DEFAULTS["lr"]), max_steps)
        self.aux, self.max_steps, self.keep = aux_classifier, max_steps, keep
        self.attack_kwargs = attack_kwargs

    def make(self, model, labels, latent_seed):
        """One chunk of Song examples against ``model``."""
        result = song_attack(self.G, model, self.aux, labels, seed=latent_seed, max_steps=self.max_steps,
                             **self.attack_kwargs)
        keep = result.success if self.keep == "successful" else result.valid
        return result.images, result.labels, keep, int(result.success.sum())


def register_song_mode(G, aux_classifier: nn.Module, name: str = "song", **mode_kwargs) -> SongMode:
    """Register a ``SongMode`` under ``name`` with ``gatlib.training.register_mode`` (so that
    ``train_classifier(..., mode="song")`` uses it) and return it (its ``log`` records the pool)."""
    from ..training import register_mode

    mode = SongMode(G, aux_classifier, **mode_kwargs)
    register_mode(name, mode)
    return mode
