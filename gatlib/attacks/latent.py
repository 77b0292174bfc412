"""The GAT latent attack: equations 1–4 of Poursaeed et al. (ICCV 2021), §3.1.

A generated image is ``x = g(y, η)``; the attack moves the generator's **style variables** y and/or
**noise variables** η of chosen layers by signed-gradient steps on the classifier's loss ``J``:

* non-targeted (eq. 1–2), toward the least-likely class ``ll = argmin F(g(y, η))`` of the
  *unperturbed* image (computed once, at t = 0, and held fixed)::

      y ← y − ε · sign(∇_y J(F(g(y, η)), ll))          (eq. 1)
      η ← η − δ · sign(∇_η J(F(g(y, η)), ll))          (eq. 2)

* targeted (eq. 3–4), the same toward a target class ``T ≠ c``.

Rules (``book/method.md``): the correct label of a generated image is its generator's conditioning
class c (LSUN: the per-category generator's category; the ``paper`` profile with an ImageNet
classifier: the *grouped* set of classes, e.g. all car classes — ``label_groups``); a non-targeted
attack succeeds when ``argmax F`` leaves the correct set (``≠ c`` without groups), a targeted one
when ``argmax F = T``; samples that F already misclassifies at t = 0 are left out of every
statistic (their rate is reported).
Each sample leaves the batch as soon as it is fooled — no compute is spent on it afterwards — or
after ``max_iters`` steps. There is no norm bound on the image: only the number of steps bounds how
far the latents move, as in the paper; the result reports how large the image change is.

When only layers from ``k`` on move, the activations before layer ``k`` never change: they are
computed once (``G.cache``) and every iteration re-renders from layer ``k`` (``start_layer``).
"""
from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MOVES = ("style", "noise", "both")

#: ``label_groups``: ``{group name: class indices}`` (like ``robustness.group_classes``' ``class_groups``,
#: with F's class indices for the folder names) or a list of class-index collections.
LabelGroups = Union[Mapping, Sequence]

# The paper's step sizes (ε for styles, δ for noise), §3.1 / §4: the `paper` profile's defaults.
PAPER_STEP_SIZES = {
    ("lsun", "non_targeted"): (0.004, 0.2),
    ("lsun", "targeted"): (0.005, 0.2),
    ("celeba-hq", "non_targeted"): (0.004, 0.1),
    ("celeba-hq", "targeted"): (0.004, 0.1),
}


@dataclass
class LatentAttackResult:
    """What a latent attack returns, one row per sample.

    ``images``: adversarial images in [0, 1] (for a fooled sample: the image that fooled F);
    ``clean_images``: the unperturbed ``g(y, η)``; ``styles``/``noises``: the final y and η;
    ``labels``: conditioning classes c; ``targets``: ll (non-targeted) or T (targeted);
    ``valid``: F classified the clean image as c (only these count); ``success``: fooled within
    ``max_iters``; ``iterations``: steps taken (the iterations-to-fool for a success);
    ``predictions``: F's class for ``images``; ``l2``/``linf``: image change vs the clean image.
    """
    images: Tensor
    clean_images: Tensor
    styles: object
    noises: list
    labels: Tensor
    targets: Tensor
    targeted: bool
    valid: Tensor
    success: Tensor
    iterations: Tensor
    predictions: Tensor
    l2: Tensor
    linf: Tensor
    max_iters: int

    def captions(self) -> list[str]:
        """One caption per adversarial image: F's prediction and the step at which it fell
        (✗: not within ``max_iters``; "wrong at t=0": left out, F already erred on the clean image)."""
        out = []
        for predicted, steps, fooled, valid in zip(self.predictions, self.iterations, self.success, self.valid):
            if not valid:
                out.append(f"F={int(predicted)} wrong at t=0")
            else:
                out.append(f"F={int(predicted)} t={int(steps)}" + ("" if fooled else " ✗"))
        return out

    def summary(self) -> dict:
        """Attack statistics over the valid samples (those F got right at t = 0)."""
        valid = self.valid
        fooled = self.success & valid
        count = int(valid.sum())
        iterations = self.iterations[fooled].float()
        return {
            "samples": len(valid),
            "misclassified_at_start": 1 - count / max(len(valid), 1),
            "success_rate": fooled.sum().item() / count if count else float("nan"),
            "mean_iterations": iterations.mean().item() if len(iterations) else float("nan"),
            "median_iterations": iterations.median().item() if len(iterations) else float("nan"),
            "mean_l2": self.l2[fooled].mean().item() if len(iterations) else float("nan"),
            "mean_linf": self.linf[fooled].mean().item() if len(iterations) else float("nan"),
        }


@contextmanager
def _attack_mode(*modules: nn.Module):
    """Eval mode and no parameter gradients for the duration of an attack (BatchNorm uses its
    running statistics; only y and η get gradients); the modules' previous state is restored."""
    saved = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    try:
        for module in modules:
            module.eval()
            module.requires_grad_(False)
        yield
    finally:
        for module, training, flags in saved:
            module.train(training)
            for parameter, flag in zip(module.parameters(), flags):
                parameter.requires_grad_(flag)


def _select(G, layers: Sequence[int] | None, moves: str, include_torgb: bool, num_convs: int):
    """Which tensors move: conv-style indices, ToRGB-style indices, noise indices; and the first
    layer whose activations change (the attack re-renders from there)."""
    layers = list(range(G.num_layers)) if layers is None else sorted(set(int(l) for l in layers))
    if not layers:
        raise ValueError("the attack needs at least one layer to move")
    if layers[0] < 0 or layers[-1] >= G.num_layers:
        raise ValueError(f"layers must lie in 0..{G.num_layers - 1}, got {layers}")
    conv = [l for l in layers if l < num_convs]
    style_conv = conv if moves in ("style", "both") else []
    style_torgb = G.torgb_of_layers(layers) if include_torgb and moves in ("style", "both") else []
    noise = conv if moves in ("noise", "both") else []
    if not (style_conv or style_torgb or noise):
        raise ValueError(f"layers {layers} with moves={moves!r} leave nothing to move")
    starts = style_conv + noise + [G.torgb_layers[j] for j in style_torgb]
    return style_conv, style_torgb, noise, min(starts)


def _parse_label_groups(label_groups) -> list[tuple[str, list[int]]]:
    """``label_groups`` as ``[(group name, [class indices])]``, checked for shape only (the class
    range is checked against F's output size on the first forward, see ``_group_ids``)."""
    if isinstance(label_groups, Tensor) or isinstance(label_groups, (str, bytes)):
        raise TypeError("label_groups must be {group name: [class indices]} or a list of class-index collections, "
                        f"not a {type(label_groups).__name__}")
    if isinstance(label_groups, Mapping):
        named = [(str(name), members) for name, members in label_groups.items()]
    elif isinstance(label_groups, Iterable):
        named = [(f"#{number}", members) for number, members in enumerate(label_groups)]
    else:
        raise TypeError(f"label_groups must be {{group name: [class indices]}} or a list of class-index collections, "
                        f"got {label_groups!r}")
    if not named:
        raise ValueError("label_groups is empty: give {group name: [class indices]} (or None for no groups)")
    groups, owner = [], {}
    for name, members in named:
        if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
            raise TypeError(f"label_groups: group {name} must be a collection of class indices, got {members!r} "
                            "(one group of classes 1, 2, 3 is [[1, 2, 3]], not [1, 2, 3])")
        try:
            indices = [operator.index(k) for k in members]
        except TypeError:
            raise TypeError(f"label_groups: group {name} must hold integer class indices, got {members!r}") from None
        if not indices:
            raise ValueError(f"label_groups: group {name} lists no classes")
        for k in indices:
            if k < 0:
                raise ValueError(f"label_groups: group {name} names class {k}; classes are indices >= 0")
            if owner.get(k, name) != name:
                raise ValueError(f"label_groups: class {k} is in two groups, {owner[k]} and {name}")
            owner[k] = name
        groups.append((name, sorted(set(indices))))
    return groups


def _group_ids(groups: list[tuple[str, list[int]]], num_classes: int, device) -> Tensor:
    """(num_classes,) group id of every class of F: a listed group's classes share one id; a class
    in no group is a group of its own (its correct set is just itself, as without groups)."""
    group_of = torch.arange(num_classes, device=device)
    for number, (name, members) in enumerate(groups):
        outside = [k for k in members if k >= num_classes]
        if outside:
            raise ValueError(f"label_groups: group {name} names classes {outside}, but F outputs {num_classes} "
                             f"logits (classes 0..{num_classes - 1})")
        group_of[torch.tensor(members, device=device)] = num_classes + number
    return group_of


def _out_of_range(values: Tensor, num_classes: int) -> list[int]:
    """The distinct entries of ``values`` that are not classes of F (0..num_classes-1); one host sync."""
    bad = (values < 0) | (values >= num_classes)
    return sorted(set(values[bad].tolist())) if bool(bad.any()) else []


def latent_attack(G, classifier: nn.Module, styles, noises: list, labels: Tensor, *, eps: float, delta: float,
                  moves: str = "both", layers: Sequence[int] | None = None, target: int | Tensor | None = None,
                  max_iters: int = 10, include_torgb: bool = False, noise_space: str = "input",
                  use_cache: bool = True, label_groups: LabelGroups | None = None) -> LatentAttackResult:
    """Run eq. 1–2 (``target=None``) or eq. 3–4 (``target`` = T) on a batch of latents.

    The rule (``book/method.md``, "Rules this book fixes"): the correct label of a generated image is
    its generator's conditioning class c (LSUN: the per-category generator's category; with an
    ImageNet classifier: the grouped set of classes, e.g. all car classes). Without
    ``label_groups`` the correct set of a sample is ``{c}``; with it, every class of c's group. Then:

    * a sample whose clean image F puts outside its correct set (t = 0) is left out (``valid``);
    * non-targeted (eq. 1–2): ll is the least-likely class *outside* the correct set at t = 0,
      held fixed; success = ``argmax F`` outside the correct set (a switch between two car
      classes is not a success);
    * targeted (eq. 3–4): success = ``argmax F == T``; T must lie outside the correct set.

    Args:
        G: a ``gatlib.generators.stylegan2.Generator``.
        classifier: F, taking images in [0, 1]; put in eval mode for the attack, then restored.
        styles, noises: the starting y (``G.styles(w)``) and η (``G.make_noise``); not modified.
        labels: the conditioning classes c, shape (B,).
        eps, delta: step sizes of eq. 1/3 (styles) and eq. 2/4 (noise).
        moves: ``"style"``, ``"noise"`` or ``"both"``.
        layers: w-indices whose variables move (None = all); see ``G.layer_groups()``.
        target: None (non-targeted, toward ll) or the target class T (an int or a (B,) tensor).
        max_iters: at most this many steps per sample (the paper: 2–10 suffice).
        include_torgb: also move the ToRGB styles of the chosen layers.
        noise_space: ``"input"`` (η ~ N(0, 1), the paper's δ applies) or ``"scaled"``.
        use_cache: re-render only from the first moved layer on (same images, less compute).
        label_groups: classes of F that count as one correct label, e.g. ImageNet car and cat
            classes (torchvision's indices; which ones count as "car" is the caller's choice):
            ``{"car": [407, 436, 468, 511, 609, 627, 656, 661, 717, 751, 817], "cat": [281, 282,
            283, 284, 285]}`` — the shape of ``robustness.group_classes``' ``class_groups`` (Table 3),
            with F's class indices in place of folder names — or a list of index collections
            (``[{...}, {...}]``). A class in no group stays a group of its own; a class in two groups
            is an error. None (default): every class is its own group, the attack is unchanged.

    Errors name the problem: labels, a target or a group class outside F's classes (F's output
    size, read on the first forward); a zero step (``eps``/``delta``) for a variable that moves;
    ``noises`` not one per conv; a target inside its sample's correct set.
    """
    if moves not in MOVES:
        raise ValueError(f"moves must be one of {MOVES}, got {moves!r}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps (the style step) must be a finite number >= 0, got {eps}")
    if not (math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta (the noise step) must be a finite number >= 0, got {delta}")
    groups = _parse_label_groups(label_groups) if label_groups is not None else None
    labels = labels.long().to(styles.conv[0].device)
    batch = len(labels)
    if any(len(style) != batch for style in styles.conv):
        raise ValueError(f"labels has {batch} entries but the styles hold {len(styles.conv[0])} samples")
    if not all(torch.isfinite(style).all() for style in styles.conv):
        raise ValueError("styles contain NaN or infinite values (is the mapping network broken?)")
    num_convs = getattr(G, "num_convs", len(styles.conv))
    if len(noises) != num_convs:
        raise ValueError(f"noises has {len(noises)} entries but G has {num_convs} convs: give one η per conv "
                         "(G.make_noise(batch)), None for a conv without noise")
    for index, noise in enumerate(noises):
        if noise is not None and noise.shape[0] not in (1, batch):
            raise ValueError(f"noises[{index}] holds {noise.shape[0]} samples; need {batch} (one per label) or 1 "
                             "(shared by the batch)")
    style_conv, style_torgb, noise_layers, start = _select(G, layers, moves, include_torgb, len(styles.conv))
    # a zero step for a variable that moves would silently leave it where it is
    if (style_conv or style_torgb) and eps == 0:
        raise ValueError(f"eps (the style step) is 0 but moves={moves!r} moves the styles of layers "
                         f"{sorted(set(style_conv) | {G.torgb_layers[j] for j in style_torgb})}: they would never "
                         "change (give eps > 0, or moves='noise')")
    if noise_layers and delta == 0:
        raise ValueError(f"delta (the noise step) is 0 but moves={moves!r} moves the noise of layers {noise_layers}: "
                         "it would never change (give delta > 0, or moves='style')")
    start = start if use_cache else 0

    # working copies: the caller's tensors are never modified
    styles = styles.detach().clone()
    noises = [n.detach().clone() if n is not None else None for n in noises]
    for index in noise_layers:
        if noises[index] is None:
            raise ValueError(f"layer {index} has no noise tensor to move")
        if noises[index].shape[0] != batch:   # a broadcast noise becomes per-sample before it moves
            noises[index] = noises[index].expand(batch, *noises[index].shape[1:]).clone()

    targeted = target is not None
    if targeted:
        target = torch.as_tensor(target, device=labels.device).long()
        if target.ndim > 1 or (target.ndim == 1 and len(target) not in (1, batch)):
            raise ValueError(f"target must be one class T or one per sample ({batch}), got shape {tuple(target.shape)}")
    with _attack_mode(G, classifier), torch.no_grad():
        cache = G.cache(styles, noises, start, noise_space=noise_space) if start > 0 else None

    def render(rows, moved, active_cache):
        """g(y, η) for the samples ``rows`` (None: the whole batch, no copies); ``moved`` are leaf
        tensors to differentiate w.r.t.; ``active_cache`` is the cache already cut to ``rows``."""
        pick = (lambda t: t) if rows is None else (lambda t: t[rows])  # noqa: E731
        sub_styles = type(styles)([pick(s) for s in styles.conv], [pick(s) for s in styles.torgb])
        sub_noises = [pick(n) if n is not None and n.shape[0] == batch else n for n in noises]
        for (kind, index), tensor in moved.items():
            if kind == "conv":
                sub_styles.conv[index] = tensor
            elif kind == "torgb":
                sub_styles.torgb[index] = tensor
            else:
                sub_noises[index] = tensor
        raw = G.synthesize(sub_styles, sub_noises, start_layer=start, cache=active_cache, noise_space=noise_space)
        return G.to_unit(raw)

    iterations = torch.full((batch,), max_iters, dtype=torch.long)
    success = torch.zeros(batch, dtype=torch.bool)
    final_images = None
    predictions = torch.empty(batch, dtype=torch.long)
    active = torch.arange(batch, device=labels.device)
    active_cache = cache        # the cached activations of the active samples, cut once per drop
    with _attack_mode(G, classifier):
        for step in range(max_iters + 1):
            # while no sample has left, work on the whole batch without gathering copies
            rows = None if len(active) == batch else active
            pick = (lambda t: t) if rows is None else (lambda t: t[rows])  # noqa: E731
            moved = {}   # fresh leaves (detach: the update below writes into the shared storage)
            for index in style_conv:
                moved[("conv", index)] = pick(styles.conv[index]).detach().requires_grad_(True)
            for index in style_torgb:
                moved[("torgb", index)] = pick(styles.torgb[index]).detach().requires_grad_(True)
            for index in noise_layers:
                moved[("noise", index)] = pick(noises[index]).detach().requires_grad_(True)
            with torch.set_grad_enabled(step < max_iters):
                current = render(rows, moved, active_cache)
                logits = classifier(current)
            predicted = logits.argmax(1).detach()
            if final_images is None:
                final_images = torch.empty_like(current.detach())
            final_images[active] = current.detach()
            predictions[active.cpu()] = predicted.cpu()
            if step == 0:
                if logits.ndim != 2 or len(logits) != batch:
                    raise ValueError(f"F must return (batch, classes) logits; for {batch} images it returned shape "
                                     f"{tuple(logits.shape)}")
                num_classes = logits.shape[1]
                bad = _out_of_range(labels, num_classes)
                if bad:
                    raise ValueError(f"labels {bad} are not classes of F, which outputs {num_classes} logits "
                                     f"(classes 0..{num_classes - 1})")
                if targeted:
                    targets = target.expand(batch).clone()
                    bad = _out_of_range(targets, num_classes)
                    if bad:
                        raise ValueError(f"target {bad} is not a class of F, which outputs {num_classes} logits "
                                         f"(classes 0..{num_classes - 1})")
                clean = current.detach().clone()
                if groups is None:
                    valid = (predicted == labels).cpu()
                    if targeted:
                        if (targets == labels).any():
                            raise ValueError("a targeted attack needs T different from the label c of every sample")
                    else:
                        targets = logits.argmin(1).detach()   # ll, held fixed from here on
                else:
                    group_of = _group_ids(groups, num_classes, labels.device)
                    label_group = group_of[labels]            # the correct set of a sample: its label's group
                    valid = (group_of[predicted] == label_group).cpu()
                    same = group_of[None, :] == label_group[:, None]     # (batch, classes): the correct sets
                    if targeted:
                        if (group_of[targets] == label_group).any():
                            raise ValueError("a targeted attack needs T outside the group of the label c of every "
                                             "sample (label_groups): reaching a class of c's own group is no success")
                    else:
                        if bool(same.all(1).any()):
                            raise ValueError("label_groups: a label's group holds every class of F, so no "
                                             "prediction could be wrong (no non-targeted attack possible)")
                        # ll is the least-likely class *outside* the correct set, held fixed from here on:
                        # the plain argmin may be a class of c's own group (say the least likely of the car
                        # classes), and descending J toward it would pull the image to a prediction that
                        # is still correct — the attack could reach its target without fooling F. Outside
                        # the group, "least likely" keeps the meaning of eq. 1–2 (the class farthest from
                        # F's belief that counts as wrong); without groups it is the plain argmin.
                        targets = logits.detach().masked_fill(same, math.inf).argmin(1)
                rows_kept = valid.to(labels.device)      # misclassified at t = 0: left out at once
            else:
                if targeted:
                    done = predicted == targets[active]
                elif groups is None:
                    done = predicted != labels[active]
                else:
                    done = group_of[predicted] != label_group[active]   # argmax F left the correct set
                success[active[done].cpu()] = True
                iterations[active[done].cpu()] = step
                rows_kept = ~done
            if step == max_iters:
                break
            if step == 0:
                iterations[~valid] = 0
            kept = int(rows_kept.sum())   # the one host sync of the iteration
            if kept == 0:
                break
            everyone = kept == len(active)
            loss = F.cross_entropy(logits if everyone else logits[rows_kept],
                                   targets[active] if everyone else targets[active][rows_kept], reduction="sum")
            grads = torch.autograd.grad(loss, list(moved.values()))
            with torch.no_grad():
                kept_rows = active if everyone else active[rows_kept]
                for ((kind, index), _), grad in zip(moved.items(), grads):
                    step_size = delta if kind == "noise" else eps
                    update = step_size * (grad if everyone else grad[rows_kept]).sign()
                    target_tensor = (styles.conv[index] if kind == "conv" else styles.torgb[index] if kind == "torgb"
                                     else noises[index])
                    if rows is None and everyone:
                        target_tensor -= update
                    else:
                        target_tensor[kept_rows] -= update
            if not everyone:
                active = active[rows_kept]
                if active_cache is not None:
                    active_cache = {k: (x[rows_kept], img[rows_kept] if img is not None else None)
                                    for k, (x, img) in active_cache.items()}

    change = (final_images - clean).flatten(1)
    return LatentAttackResult(
        images=final_images.cpu(), clean_images=clean.cpu(), styles=styles, noises=noises, labels=labels.cpu(),
        targets=targets.cpu(), targeted=targeted, valid=valid, success=success & valid, iterations=iterations,
        predictions=predictions, l2=change.norm(dim=1).cpu(), linf=change.abs().amax(dim=1).cpu(),
        max_iters=max_iters)


def category_groups(category_classes: str, category: int) -> dict | None:
    """``label_groups`` for one generator category from a chapter parameter: ``"407,436,468"`` (every
    class of F that counts as the category, e.g. all ImageNet car classes) and ``category``, F's
    index of the generator's category (it must be one of them). ``""`` gives None: the category's
    class alone is correct. Returns ``{"category": {class indices}}``."""
    text = str(category_classes).strip()
    if not text:
        return None
    try:
        members = {int(value) for value in text.split(",") if value.strip()}
    except ValueError:
        raise ValueError(f"category_classes must be comma-separated class indices of F, got {category_classes!r}") from None
    if int(category) < 0:
        raise ValueError("category_classes needs generator_class, F's index of the generator's own category")
    if int(category) not in members:
        raise ValueError(f"generator_class {category} is not among category_classes {sorted(members)}")
    return {"category": members}


@torch.no_grad()
def class_labels(G, count: int, generator: torch.Generator | None = None) -> Tensor:
    """The classes c of ``count`` generated samples (the labels every attack scores against).

    A class-conditional generator: balanced over its classes (``k % num_classes``), or drawn
    uniformly with ``generator``. An unconditional generator makes one category — the paper's
    per-category LSUN models — so every sample is of ``G.category``, the *classifier's* index of
    that category (``zoo.generator(path, category=k)``); without it there is no correct label."""
    count = int(count)
    if G.num_classes:
        if generator is not None:
            return torch.randint(G.num_classes, (count,), generator=generator)
        return torch.arange(count) % G.num_classes
    category = getattr(G, "category", None)
    if category is None:
        raise ValueError("this generator is unconditional (one category, like the paper's LSUN models): give the "
                         "classifier's class index of its category (the chapter parameter generator_class, or "
                         "zoo.generator(path, category=k)) so that its images have a label")
    return torch.full((count,), int(category), dtype=torch.long)


def sample_latents(G, labels: Tensor, seed: int, truncation_psi: float = 1.0):
    """Starting points of an attack: seeded z → w → styles y, and seeded noises η, for classes
    ``labels`` (seeds disjoint from training keep evaluation fresh)."""
    rng = torch.Generator().manual_seed(seed)
    labels = labels.long()
    z = G.sample_z(len(labels), rng)
    noises = G.make_noise(len(labels), rng)
    c = labels.to(G.const.device) if G.num_classes else None
    w = G.mapping(z, c, truncation_psi=truncation_psi)
    return G.styles(w), noises


def attack_batches(G, classifier, labels: Tensor, seed: int, batch_size: int = 250, truncation_psi: float = 1.0,
                   progress: bool = True, **attack_kwargs) -> LatentAttackResult:
    """``latent_attack`` over many samples in batches (seed + batch index per batch), results joined.
    A per-sample ``target`` tensor (eq. 3–4 with one T per sample) is split into the same batches."""
    from tqdm.auto import tqdm

    from .base import positive_int   # base imports this module

    batch_size = positive_int(batch_size, "batch_size")
    target = attack_kwargs.get("target")
    per_sample = isinstance(target, Tensor) and target.ndim > 0
    if per_sample and len(target) != len(labels):
        raise ValueError(f"target has {len(target)} entries for {len(labels)} labels")
    parts = []
    starts = range(0, len(labels), batch_size)
    for number, begin in enumerate(tqdm(starts, desc="latent attack", disable=not progress, leave=False)):
        batch_labels = labels[begin:begin + batch_size]
        styles, noises = sample_latents(G, batch_labels, seed * 100_003 + number, truncation_psi)
        kwargs = {**attack_kwargs, "target": target[begin:begin + batch_size]} if per_sample else attack_kwargs
        parts.append(latent_attack(G, classifier, styles, noises, batch_labels, **kwargs))
    return concatenate(parts)


def concatenate(parts: list[LatentAttackResult]) -> LatentAttackResult:
    """Join the results of several batches (styles and noises are dropped: they do not batch up
    across differently sized runs; keep the parts if you need them)."""
    if not parts:
        raise ValueError("nothing to concatenate")
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    return LatentAttackResult(
        images=cat("images"), clean_images=cat("clean_images"), styles=None, noises=[], labels=cat("labels"),
        targets=cat("targets"), targeted=parts[0].targeted, valid=cat("valid"), success=cat("success"),
        iterations=cat("iterations"), predictions=cat("predictions"), l2=cat("l2"), linf=cat("linf"),
        max_iters=parts[0].max_iters)
