"""Looking inside a generator: samples per class, style mixing, moving one layer group's styles,
and what the noise variables change (chapter 01, Figure 1 of the paper).

Every function takes a ``Generator`` (``gatlib.generators.stylegan2``) and returns images in
[0, 1], ready for ``gatlib.plots.show_grid``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .stylegan2 import Generator


def _rng(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _classes(G: Generator, label: int, count: int):
    """``count`` copies of ``label`` for a conditional generator; None for an unconditional one."""
    if not G.num_classes:
        return None
    return torch.full((count,), label, dtype=torch.long, device=G.const.device)


@torch.no_grad()
def generate(G: Generator, labels: torch.Tensor, seed: int = 0, truncation_psi: float = 1.0,
             batch_size: int = 500) -> torch.Tensor:
    """Images of the given classes from seeded latents and noises (batched, no gradients)."""
    labels = torch.as_tensor(labels).long()
    rng = _rng(seed)
    device = G.const.device
    out = []
    for start in range(0, len(labels), batch_size):
        count = len(labels[start:start + batch_size])
        c = labels[start:start + batch_size].to(device) if G.num_classes else None
        z = G.sample_z(count, rng)
        noises = G.make_noise(count, rng)
        w = G.mapping(z, c, truncation_psi=truncation_psi)
        out.append(G.to_unit(G.synthesize(G.styles(w), noises)).cpu())
    return torch.cat(out) if out else torch.empty(0, G.image_channels, G.resolution, G.resolution)


def per_class_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """``[0]*per_class + [1]*per_class + ...``: one grid row per class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


@torch.no_grad()
def style_mixing(G: Generator, label: int, layers: Sequence[int], count: int = 6, seed: int = 0,
                 truncation_psi: float = 1.0) -> torch.Tensor:
    """The style-mixing grid of StyleGAN: a ``(count + 1) x (count + 1)`` grid whose first row holds
    the *source* images, first column the *destination* images, and cell (i, j) the destination i
    with the styles of ``layers`` taken from source j. Noise is fixed per destination, so only the
    styles differ along a row. Cell (0, 0) is blank."""
    rng = _rng(seed)
    c = _classes(G, label, count)
    w_src = G.mapping(G.sample_z(count, rng), c, truncation_psi=truncation_psi)
    w_dst = G.mapping(G.sample_z(count, rng), c, truncation_psi=truncation_psi)
    noises = G.make_noise(count, rng)
    sources = G.to_unit(G.synthesize(G.styles(w_src), noises))
    destinations = G.to_unit(G.synthesize(G.styles(w_dst), noises))
    rows = [torch.cat([torch.ones_like(sources[:1]), sources])]
    layers = list(layers)
    for i in range(count):
        ws = G.broadcast(w_dst[i:i + 1].expand(count, -1))
        ws[:, layers] = w_src[:, None, :]
        same_noise = [n[i:i + 1].expand(count, -1, -1, -1) for n in noises]
        mixed = G.to_unit(G.synthesize(G.styles(ws), same_noise))
        rows.append(torch.cat([destinations[i:i + 1], mixed]))
    return torch.cat(rows).cpu()


@torch.no_grad()
def resample_layers(G: Generator, label: int, layers: Sequence[int], count: int = 8, seed: int = 0,
                    truncation_psi: float = 1.0) -> torch.Tensor:
    """One image (first) and ``count`` variants in which only the w of ``layers`` is redrawn:
    what the styles of those layers control. Noise is held fixed."""
    rng = _rng(seed)
    w = G.mapping(G.sample_z(1, rng), _classes(G, label, 1), truncation_psi=truncation_psi)
    others = G.mapping(G.sample_z(count, rng), _classes(G, label, count), truncation_psi=truncation_psi)
    ws = G.broadcast(w.expand(count + 1, -1))
    ws[1:, list(layers)] = others[:, None, :]
    noise = [n.expand(count + 1, -1, -1, -1) for n in G.make_noise(1, rng)]
    return G.to_unit(G.synthesize(G.styles(ws), noise)).cpu()


@torch.no_grad()
def noise_variation(G: Generator, label: int, layers: Sequence[int] | None, draws: int = 32, seed: int = 0,
                    truncation_psi: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed styles, ``draws`` fresh noises in ``layers`` (None = all layers; the other layers keep
    one fixed noise). Returns ``(images, std_map)``: the images and the per-pixel standard deviation
    over the draws — where the noise variables act."""
    rng = _rng(seed)
    w = G.mapping(G.sample_z(1, rng), _classes(G, label, 1), truncation_psi=truncation_psi).expand(draws, -1)
    fixed = [n.expand(draws, -1, -1, -1) for n in G.make_noise(1, rng)]
    fresh = G.make_noise(draws, rng)
    chosen = set(range(G.num_layers)) if layers is None else set(layers)
    noises = [fresh[i] if i in chosen else fixed[i] for i in range(len(fresh))]
    images = G.to_unit(G.synthesize(G.styles(w), noises)).cpu()
    return images, images.std(dim=0)


@torch.no_grad()
def truncation_sweep(G: Generator, label: int, psis: Sequence[float], count: int = 8, seed: int = 0) -> torch.Tensor:
    """The same latents and noises at each truncation ``psi`` (a row per psi)."""
    rng = _rng(seed)
    c = _classes(G, label, count)
    z = G.sample_z(count, rng)
    noises = G.make_noise(count, rng)
    rows = [G.to_unit(G.synthesize(G.styles(G.mapping(z, c, truncation_psi=psi)), noises)) for psi in psis]
    return torch.cat(rows).cpu()
