"""Input-conditioned generation (Poursaeed et al., ICCV 2021, §3.1.1): project real images into the
generator, then attack from the projected latents.

§3.1.1: "We first synthesize images similar to the given input image I by optimizing values of y
and η such that g(y, η) is close to I. More specifically, we minimize the perceptual distance [19]
between g(y, η) and I. We can then proceed similar to equations 1–4 to perturb these tensors."

``project`` does the first part with the recipe of the StyleGAN2 projector (Karras et al., CVPR
2020, Appendix D; NVlabs ``projector.py``), adapted to the variables GAT attacks:

* **variables**: by default the style variables y themselves (``optimise_space="styles"``: every
  ``Styles.conv[i]`` and ``Styles.torgb[j]``, as the paper says "optimizing values of y and η"),
  started from ``G.styles(mean w)`` — the mean w of the image's class for a conditional generator
  given ``labels``, the global mean otherwise. ``optimise_space="w"`` optimises a per-layer w
  (w+, started from the same mean) and returns ``G.styles(w+)``: a more constrained search that
  keeps y on the image of the affine maps A. The noise variables η (one per conv, in the
  unit-variance ``noise_space="input"`` in which the attack's δ is defined) are optimised too.
* **loss**, per image: ``perceptual(g, I) + mse_weight * MSE(g, I) + noise_reg_weight * R(η)``,
  where ``perceptual`` is a ``gatlib.perceptual.PerceptualDistance`` (LPIPS-style; on a network
  that is *not* the attacked classifier) and ``R`` is StyleGAN2's noise regulariser: the squared
  autocorrelation of every noise map at one-pixel shifts in x and y, summed over a pyramid of
  2x2-average-pooled versions down to 8x8. Without it η memorises the image (η is a free image per
  layer) and the attack would start from noise maps no generator sample has. After every step each
  noise map is renormalised to zero mean and unit variance (again per image).
* **schedule**: Adam (β = 0.9, 0.999) with NVlabs' learning-rate ramp — a cosine ramp-down over the
  last ``lr_rampdown`` of the steps and a linear ramp-up over the first ``lr_rampup`` — and
  Gaussian noise added to the latent with scale ``latent_noise * std * max(0, 1 - t/noise_ramp)^2``
  (``std`` as in NVlabs: the root of the total variance of the variable over random samples).

A batch is optimised jointly, but every loss term is a per-image sum and Adam is elementwise, so
each image's projection is independent of the others in its batch (up to the shared schedule).

``attack_projected`` then runs the GAT latent attack (eq. 1–4, ``gatlib.attacks.latent``) from the
projected (y, η): the input-conditioned adversarial examples of the paper's Figure 4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .attacks.latent import LatentAttackResult, _attack_mode, latent_attack
from .generators.stylegan2 import Styles

SPACES = ("styles", "w")


@dataclass
class ProjectionResult:
    """Latents that reproduce the input images, one row per image.

    ``styles``/``noises``: the projected y and η (on G's device, η in the ``"input"`` noise space),
    ready for ``latent_attack``; ``images``: the reconstructions ``g(y, η)`` in [0, 1];
    ``targets``: the input images; ``labels``: their classes (or None); ``pixel_mse`` and
    ``perceptual``: (B,) reconstruction errors of ``images`` against ``targets`` (mean squared
    pixel difference in [0, 1] units, and the ``PerceptualDistance``); ``start_*``: the same at
    the starting point (mean w, random η); ``history``: per-step means over the batch (``loss``,
    ``perceptual``, ``pixel_mse``, ``noise_reg``, ``lr``), measured on the noisy latents the
    optimiser saw; ``w``: the optimised w+ for ``optimise_space="w"``, else None.
    """
    styles: Styles
    noises: list
    images: Tensor
    targets: Tensor
    labels: Tensor | None
    pixel_mse: Tensor
    perceptual: Tensor
    start_pixel_mse: Tensor
    start_perceptual: Tensor
    history: dict = field(default_factory=dict)
    w: Tensor | None = None

    def summary(self) -> dict:
        """Mean and median reconstruction errors, at the start and after projection."""
        return {
            "images": len(self.images),
            "pixel_mse": self.pixel_mse.mean().item(),
            "pixel_mse_median": self.pixel_mse.median().item(),
            "perceptual": self.perceptual.mean().item(),
            "perceptual_median": self.perceptual.median().item(),
            "start_pixel_mse": self.start_pixel_mse.mean().item(),
            "start_perceptual": self.start_perceptual.mean().item(),
        }


# ------------------------------------------------------------------------------ pieces
def learning_rate(t: float, lr: float, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """NVlabs' projector schedule at progress ``t`` in [0, 1): linear ramp-up over the first
    ``rampup``, cosine ramp-down over the last ``rampdown``."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp *= min(1.0, t / rampup) if rampup > 0 else 1.0
    return lr * ramp


def noise_regularisation(noises: list) -> Tensor:
    """StyleGAN2's noise regulariser, per image: for every noise map and each of its 2x2-average-
    pooled versions down to 8x8, the squared mean of ``n * roll(n, 1)`` along x and along y (the
    autocorrelation at a one-pixel shift, 0 for white noise). Returns (B,)."""
    total = 0.0
    for noise in noises:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (noise * noise.roll(1, dims=2)).mean(dim=(1, 2, 3)).square()
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


@torch.no_grad()
def normalise_noise_(noises: list) -> None:
    """In place: every noise map of every image to zero mean and unit variance."""
    for noise in noises:
        noise -= noise.mean(dim=(1, 2, 3), keepdim=True)
        noise *= noise.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def check_images(G, images: Tensor, labels: Tensor | None = None) -> None:
    """Clear errors for inputs that G cannot reproduce: wrong shape, non-finite, outside [0, 1]."""
    expected = (G.image_channels, G.resolution, G.resolution)
    if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"G renders images of shape (B, {', '.join(map(str, expected))}); got {shape} "
                         "(resize the inputs, or convert their channels, first)")
    if len(images) == 0:
        raise ValueError("no images to project")
    if not torch.isfinite(images).all():
        raise ValueError("the images to project contain NaN or infinite values")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"the images to project must lie in [0, 1], got [{images.min().item():.3g}, "
                         f"{images.max().item():.3g}]")
    if labels is not None:
        if labels.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        if G.num_classes and (labels.min() < 0 or labels.max() >= G.num_classes):
            raise ValueError(f"labels must lie in 0..{G.num_classes - 1}")


@torch.no_grad()
def _starting_point(G, labels: Tensor | None, batch: int, samples: int, rng: torch.Generator):
    """The mean w (per class when G is conditional and labels are given) and the std of w over
    random samples (NVlabs: the root of the total variance), plus the per-tensor std of the styles."""
    device = G.const.device
    if G.num_classes and labels is not None:
        w0 = G.mean_w(labels.to(device), n=samples, generator=rng)
    else:
        w0 = G.mean_w(None, n=samples, generator=rng).expand(batch, -1)
    z = G.sample_z(samples, rng)
    c = None
    if G.num_classes:
        c = torch.randint(G.num_classes, (samples,), generator=rng, device=rng.device).to(device)
    w = G.mapping(z, c, update_w_avg=False)
    total_std = lambda x: x.sub(x.mean(0)).square().sum(1).mean().sqrt().item()  # noqa: E731
    styles = G.styles(w)
    return w0.clone(), total_std(w), [total_std(y) for y in styles.conv + styles.torgb]


def _distances(perceptual, images: Tensor, targets: Tensor, target_features: list):
    """(pixel MSE, perceptual distance) of every image to its target, each (B,)."""
    return (images - targets).square().mean(dim=(1, 2, 3)), perceptual.to_features(images, target_features)


# ------------------------------------------------------------------------------ projection
def project(G, images: Tensor, labels: Tensor | None = None, *, perceptual, steps: int = 300, lr: float = 0.1,
            mse_weight: float = 1.0, noise_reg_weight: float = 1e5, optimise_space: str = "styles",
            optimise_noise: bool = True, latent_noise: float = 0.05, noise_ramp: float = 0.75,
            lr_rampup: float = 0.05, lr_rampdown: float = 0.25, w_avg_samples: int = 4096,
            batch_size: int | None = None, seed: int = 0, progress: bool = True) -> ProjectionResult:
    """Find (y, η) with ``g(y, η) ≈ images`` (§3.1.1; StyleGAN2 projector, Karras et al. 2020, App. D).

    Args:
        G: a ``gatlib.generators.stylegan2.Generator`` (left unchanged: eval mode, no gradients).
        images: (B, C, H, W) in [0, 1], C/H/W those of G.
        labels: (B,) classes of the images; a conditional G starts from each class's mean w. None:
            the global mean w.
        perceptual: a ``gatlib.perceptual.PerceptualDistance`` on G's device — not the attacked
            classifier (the attack must not start from images tuned to its features).
        steps: optimisation steps (NVlabs: 1000). lr: Adam's peak learning rate.
        mse_weight: weight of the pixel MSE (in [0, 1] units) next to the perceptual distance.
        noise_reg_weight: weight of the noise regulariser (NVlabs: 1e5).
        optimise_space: ``"styles"`` (y directly) or ``"w"`` (per-layer w+, returned as styles).
        optimise_noise: also optimise η (the paper does); False keeps the random η fixed.
        latent_noise, noise_ramp: the exploration noise on the latent (NVlabs: 0.05, 0.75).
        lr_rampup, lr_rampdown: fractions of the steps of the learning-rate ramps (0.05, 0.25).
        w_avg_samples: samples of z for the mean w and the latent std (NVlabs: 10000).
        batch_size: project at most this many images at once (None: all together).
        seed: seeds the starting noise and the latent noise.
    """
    if optimise_space not in SPACES:
        raise ValueError(f"optimise_space must be one of {SPACES}, got {optimise_space!r}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    if lr <= 0 or mse_weight < 0 or noise_reg_weight < 0 or latent_noise < 0:
        raise ValueError("lr must be positive and the weights non-negative")
    if labels is not None:
        labels = torch.as_tensor(labels).long()
    check_images(G, images, labels)
    if batch_size is not None and batch_size < len(images):
        parts = [project(G, images[i:i + batch_size], None if labels is None else labels[i:i + batch_size],
                         perceptual=perceptual, steps=steps, lr=lr, mse_weight=mse_weight,
                         noise_reg_weight=noise_reg_weight, optimise_space=optimise_space,
                         optimise_noise=optimise_noise, latent_noise=latent_noise, noise_ramp=noise_ramp,
                         lr_rampup=lr_rampup, lr_rampdown=lr_rampdown, w_avg_samples=w_avg_samples,
                         seed=seed + number, progress=progress)
                 for number, i in enumerate(range(0, len(images), batch_size))]
        return concatenate(parts)

    device = G.const.device
    targets = images.to(device=device, dtype=G.const.dtype)
    batch = len(targets)
    rng = torch.Generator(device=device).manual_seed(seed)
    with _attack_mode(G, perceptual), torch.enable_grad():
        w0, w_std, style_stds = _starting_point(G, labels, batch, w_avg_samples, rng)
        noises = [n.requires_grad_(optimise_noise) for n in G.make_noise(batch, generator=rng)]
        normalise_noise_(noises)
        if optimise_space == "w":
            variables = [G.broadcast(w0).requires_grad_(True)]
            stds = [w_std]
        else:
            start = G.styles(w0)
            variables = [y.detach().clone().requires_grad_(True) for y in start.conv + start.torgb]
            stds = style_stds
        num_conv = len(G.layers)

        def styles_of(latents):
            if optimise_space == "w":
                return G.styles(latents[0])
            return Styles(list(latents[:num_conv]), list(latents[num_conv:]))

        def render(latents):
            return G.synthesize(styles_of(latents), noises, noise_space="input").add(1).mul(0.5)

        with torch.no_grad():
            target_features = [f.detach() for f in perceptual.features(targets)]
            start_mse, start_perceptual = _distances(perceptual, render(variables).clamp(0, 1), targets, target_features)

        optimizer = torch.optim.Adam(variables + (noises if optimise_noise else []), lr=lr, betas=(0.9, 0.999))
        history = {key: [] for key in ("loss", "perceptual", "pixel_mse", "noise_reg", "lr")}
        from tqdm.auto import tqdm

        bar = tqdm(range(steps), desc="projection", disable=not progress, leave=False)
        for step in bar:
            t = step / steps
            step_lr = learning_rate(t, lr, lr_rampup, lr_rampdown)
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            scale = latent_noise * max(0.0, 1.0 - t / noise_ramp) ** 2 if noise_ramp > 0 else 0.0
            noisy = [v + torch.randn(v.shape, generator=rng, device=rng.device).to(device) * (std * scale)
                     if scale > 0 else v for v, std in zip(variables, stds)]
            current = render(noisy)
            mse, distance = _distances(perceptual, current, targets, target_features)
            reg = noise_regularisation(noises) if optimise_noise else torch.zeros_like(mse)
            loss = (distance + mse_weight * mse + noise_reg_weight * reg).sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if optimise_noise:
                normalise_noise_(noises)
            for key, value in (("loss", loss.item() / batch), ("perceptual", distance.mean().item()),
                               ("pixel_mse", mse.mean().item()), ("noise_reg", reg.mean().item()), ("lr", step_lr)):
                history[key].append(value)
            if step % max(1, steps // 50) == 0 or step == steps - 1:
                bar.set_postfix(perceptual=f"{history['perceptual'][-1]:.4f}", mse=f"{history['pixel_mse'][-1]:.4f}")

        with torch.no_grad():
            final = [v.detach() for v in variables]
            styles = styles_of(final).detach()
            noises = [n.detach() for n in noises]
            reconstruction = render(final).clamp(0, 1)
            pixel_mse, distance = _distances(perceptual, reconstruction, targets, target_features)
    return ProjectionResult(
        styles=styles, noises=noises, images=reconstruction.cpu(), targets=images.cpu(),
        labels=None if labels is None else labels.cpu(), pixel_mse=pixel_mse.cpu(), perceptual=distance.cpu(),
        start_pixel_mse=start_mse.cpu(), start_perceptual=start_perceptual.cpu(), history=history,
        w=final[0] if optimise_space == "w" else None)


def concatenate(parts: list[ProjectionResult]) -> ProjectionResult:
    """Join the projections of several batches (``history``: the mean over the batches per step,
    weighted by their sizes)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    sizes = [len(p.images) for p in parts]
    history = {key: [sum(p.history[key][i] * n for p, n in zip(parts, sizes)) / sum(sizes)
                     for i in range(len(parts[0].history[key]))] for key in parts[0].history}
    return ProjectionResult(
        styles=Styles([torch.cat(ys) for ys in zip(*(p.styles.conv for p in parts))],
                      [torch.cat(ys) for ys in zip(*(p.styles.torgb for p in parts))]),
        noises=[torch.cat(ns) for ns in zip(*(p.noises for p in parts))],
        images=cat("images"), targets=cat("targets"),
        labels=None if parts[0].labels is None else cat("labels"),
        pixel_mse=cat("pixel_mse"), perceptual=cat("perceptual"), start_pixel_mse=cat("start_pixel_mse"),
        start_perceptual=cat("start_perceptual"), history=history,
        w=None if parts[0].w is None else cat("w"))


def attack_projected(G, classifier, projection: ProjectionResult, labels: Tensor | None = None,
                     **attack_kwargs) -> LatentAttackResult:
    """The input-conditioned attack (§3.1.1, Figure 4): ``latent_attack`` (eq. 1–4) started from the
    projected (y, η). ``labels`` default to the projection's labels (the inputs' true classes); as in
    every latent attack, images that F misclassifies at t = 0 — here: projections that already
    lost their class — are left out of the statistics (``valid``). Keyword arguments go to
    ``latent_attack`` (``eps``, ``delta``, ``moves``, ``layers``, ``target``, ``max_iters``, ...)."""
    labels = projection.labels if labels is None else torch.as_tensor(labels).long()
    if labels is None:
        raise ValueError("attack_projected needs the inputs' labels (the projection has none)")
    if len(labels) != len(projection.images):
        raise ValueError(f"{len(labels)} labels for {len(projection.images)} projected images")
    if attack_kwargs.get("noise_space", "input") != "input":
        raise ValueError("projected noises live in the 'input' noise space")
    return latent_attack(G, classifier, projection.styles, projection.noises, labels, **attack_kwargs)


# ------------------------------------------------------------------------------ reporting
@torch.no_grad()
def fresh_noise_error(G, projection: ProjectionResult, perceptual, seed: int = 0):
    """Reconstruction errors (pixel MSE, perceptual; each (B,)) when the projected styles are
    rendered with *fresh* random noise instead of the projected η: close to the projection's own
    errors when η holds no image content (what the noise regulariser is for)."""
    device = G.const.device
    rng = torch.Generator(device=device).manual_seed(seed)
    noises = G.make_noise(len(projection.images), generator=rng)
    with _attack_mode(G, perceptual):
        images = G.to_unit(G.synthesize(projection.styles, noises, noise_space="input"))
        targets = projection.targets.to(device)
        return _distances(perceptual, images, targets, perceptual.features(targets))


def reconstruction_report(G, projection: ProjectionResult, classifier, perceptual, seed: int = 0) -> dict:
    """What an input-conditioned result must be read with (§3.1.1: the attack is only as faithful
    to I as g(ŷ, η̂) is to I): mean reconstruction errors at the start and after projection, with
    fresh noise, and the share of projections the attacked classifier F still puts in the input's
    class (next to F's accuracy on the inputs themselves)."""
    from .classifiers import fraction, predict

    fresh_mse, fresh_perceptual = fresh_noise_error(G, projection, perceptual, seed)
    report = {
        "pixel_mse": projection.pixel_mse.mean().item(),
        "perceptual": projection.perceptual.mean().item(),
        "start_pixel_mse": projection.start_pixel_mse.mean().item(),
        "start_perceptual": projection.start_perceptual.mean().item(),
        "fresh_noise_pixel_mse": fresh_mse.mean().item(),
        "fresh_noise_perceptual": fresh_perceptual.mean().item(),
    }
    if projection.labels is not None:
        report["classified_as_input"] = fraction(predict(classifier, projection.images) == projection.labels)
        report["input_accuracy"] = fraction(predict(classifier, projection.targets) == projection.labels)
    return report


def figure4(projection: ProjectionResult, attack: LatentAttackResult, count: int = 8, classifier=None):
    """The paper's Figure 4 for our data: rows input / projection g(ŷ, η̂) / adversarial image, each
    captioned with F's predicted class (the input's row with its true label, and F's prediction on
    it when ``classifier`` is given). Shows ``count`` samples: those the attack counted (valid: F
    classified the projection correctly), fooled ones first, then the others. Returns the figure."""
    import matplotlib.pyplot as plt

    from .classifiers import predict

    order = sorted(range(len(attack.valid)), key=lambda i: (not bool(attack.valid[i]), not bool(attack.success[i]), i))
    picked = order[:count]
    count = len(picked)
    input_predictions = predict(classifier, projection.targets[picked]) if classifier is not None else None
    rows = [("input", projection.targets), ("projection", attack.clean_images), ("adversarial", attack.images)]
    fig, axes = plt.subplots(3, count, figsize=(1.15 * count, 3.9), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for k, i in enumerate(picked):
            ax = axes[r, k]
            image = images[i].detach().cpu().clamp(0, 1)
            ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                caption = f"label {int(attack.labels[i])}"
                if input_predictions is not None:
                    caption += f"\nF: {int(input_predictions[k])}"
            elif r == 1:
                # an invalid sample leaves the attack at t = 0, so its prediction is F's on the projection
                caption = f"F: {int(attack.labels[i]) if attack.valid[i] else int(attack.predictions[i])}"
            else:
                fooled = bool(attack.success[i])
                caption = f"F: {int(attack.predictions[i])}"
                caption += f" ({int(attack.iterations[i])} it.)" if fooled else " (not fooled)"
            ax.set_xlabel(caption, fontsize=7)
            if k == 0:
                ax.set_ylabel(name, fontsize=9)
    fig.tight_layout()
    return fig
