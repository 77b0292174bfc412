"""StyleGAN (v1, Karras et al., CVPR 2019) in one file, pure PyTorch (CPU and GPU): the generator the
paper attacks, behind the same API as ``gatlib.generators.stylegan2.Generator``.

Poursaeed et al. (ICCV 2021, §3.1, Figure 1) perturb StyleGAN v1's two kinds of latent variables:

* **style variables y = (y_s, y_b)** — the learned affine map A applied to w, one pair per layer,
  used by adaptive instance normalisation: ``AdaIN(x, y) = y_s * (x - mean(x)) / std(x) + y_b``
  (per sample, per channel);
* **noise variables eta** — one single-channel Gaussian image per layer, scaled by the learned
  per-channel factors B and added to the layer's activations before AdaIN.

Usage is the same as for the StyleGAN2 ``Generator`` (every attack in ``gatlib.attacks`` works
unchanged)::

    G = GeneratorV1(resolution=256)                  # 14 layers; 1024 px -> 18 layers
    w = G.mapping(z)                                 # f: 8-layer MLP, (B, 512)
    styles = G.styles(w)                             # A: Styles(conv=[y_0..y_13], torgb=[])
    noises = G.make_noise(B, generator=gen)          # eta: [n_0..n_13], each (B, 1, r, r) ~ N(0, 1)
    raw = G.synthesize(styles, noises)               # g: raw output, approx. in [-1, 1]
    images = G(z, truncation_psi=0.7)                # [0, 1]; v1 truncates only layers < 8

Checkpoints: ``gatlib.generators.checkpoints.load_generator("karras2019stylegan-...pkl")`` reads the
official TensorFlow pickles into this module without executing anything from the file.

Architecture (NVlabs ``training/networks_stylegan.py``: ``G_style``, ``G_mapping``, ``G_synthesis``)

Mapping f
    z (and, for a class-conditional network, ``onehot(c) @ E`` with a learned (num_classes, z_dim)
    matrix E, v1's ``LabelConcat``: concatenated to z) -> pixel norm of the concatenation -> 8
    equalized-lr dense layers with learning-rate multiplier 0.01, each followed by a leaky ReLU
    (slope 0.2). v1 puts the He gain sqrt(2) into the weight of each layer (``input_gain``), not
    after the activation as StyleGAN2 does.
Layers
    ``num_layers = 2 * log2(resolution) - 2`` (18 at 1024 px), two per resolution: layer 0 is the
    learned constant 4x4 input, layer 1 a 3x3 conv at 4x4; at every higher resolution the first
    layer (even index) up-samples by 2 with a 3x3 conv, then applies v1's [1,2,1] blur, and the
    second (odd index) is a plain 3x3 conv. Up-sampling follows v1's ``fused_scale='auto'``: below
    128 px nearest-neighbour up-sampling then the conv; from 128 px on TF's "fused" transposed conv
    with the 4x4 sum of the shifted 3x3 kernel, which is *not* the same function (it amounts to the
    nearest-neighbour version with the 3x3 kernel flipped; see ``StyleLayer._up_conv``). Both run
    here as one stride-2 transposed conv. Every layer ends with v1's ``layer_epilogue``::

        x = x + B * eta          # noise: eta (B, 1, r, r), B one learned factor per channel
        x = x + bias
        x = leaky_relu(x, 0.2)
        x = instance_norm(x)     # per sample and channel, eps 1e-8
        x = y_s * x + y_b        # AdaIN with the style of this layer

    Convs have equalized-lr weights with gain sqrt(2) (``EqualConv2d(input_gain=sqrt 2)``).
Styles y
    ``G.styles(w).conv[i]`` is the output of layer i's affine map A_i (equalized-lr dense, gain 1,
    w_dim -> 2C): a ``(B, 2 * C)`` tensor ``[y_s, y_b]`` (first C entries the scale, last C the
    bias). v1 computes the scale as ``1 + A_s(w)``; here the ``+1`` lives in the affine's bias
    (initialised to 1 for the scale half, 0 for the bias half), so ``y_s`` *is* the AdaIN scale,
    as in the paper's notation, and an attack's step eps moves scale and bias alike. There are no
    ToRGB styles: ``Styles.torgb == []``, ``G.torgb_layers == []``.
ToRGB
    v1 was trained with progressive growing; the final network (``lod = 0``) renders through the
    ToRGB of the last resolution only (``ToRGB_lod0``: a 1x1 equalized-lr conv, gain 1, with bias,
    no style, no activation). It is ``G.to_rgb``; the lower-resolution ToRGBs of a checkpoint are
    unused and not loaded.
Noise space
    ``noise_space="input"`` (default): eta is the unit-variance n, the layer adds ``B * n`` with
    the per-channel strengths ``B = layers[i].noise_strength`` (shape (C,)); the paper's delta
    applies here. ``"scaled"``: eta is added as is (a (B, 1, r, r) eta is broadcast over channels;
    pass ``B[:, None, None] * n`` of shape (B, C, r, r) to reproduce the input-space result).
    Strengths are initialised to 0 (as in v1): an untrained generator ignores its noise.
Truncation
    v1's ``G_style`` truncates only the first ``truncation_cutoff = 8`` layers (the coarse styles
    up to 32 px) towards the tracked average ``w_avg`` (v1's ``dlatent_avg``, EMA 0.995 in training
    mode). ``G(z, c, truncation_psi)`` does the same (``G.truncation_cutoff``, 8 by default, read
    from a checkpoint's ``truncation_cutoff``); ``G.mapping(z, c, truncation_psi)`` keeps the API of
    every gatlib generator — one w per sample, shape (B, w_dim) — and so truncates *all* layers,
    unless given ``truncation_cutoff=k``, which returns per-layer w of shape (B, num_ws, w_dim).
    For a class-conditional network the centre is the per-class average, as in ``stylegan2``.
Caching
    ``synthesize(..., start_layer=k, cache=G.cache(styles, noises, k))`` re-renders from layer k on
    (what ``latent_attack`` does when only layers >= k move); ``cache[k] = (x, None)`` holds the
    activations entering layer k (there is no skip image in v1).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..attacks.latent import PAPER_STEP_SIZES
from .stylegan2 import (
    LRELU_SLOPE,
    NOISE_SPACES,
    SQRT2,
    Cache,
    check_no_labels,
    EqualConv2d,
    EqualLinear,
    Generator,
    Label,
    MappingNetwork,
    Styles,
    as_onehot,
    normalize_2nd_moment,
    resolve_channels,
    to_unit_range,
)

LAYOUT = "stylegan1"

# ----------------------------------------------------------------------------------------------
# The paper's settings

#: The paper's layer groups (§4, Figure 3: "top 6 layers (out of 18)", "layers 7 to 12", "the
#: bottom 6 layers"), 1-based and inclusive as printed, for an 18-layer (1024 px) generator.
#: ``paper_layer_groups(G.num_layers)`` gives 0-based indices for ``latent_attack(layers=...)``.
PAPER_LAYER_RANGES: Dict[str, tuple] = {"coarse": (1, 6), "middle": (7, 12), "fine": (13, 18)}

#: The official StyleGAN (v1) and StyleGAN2 TensorFlow pickles, with what ``load_generator`` builds
#: from them and the paper's step sizes for their dataset (``PAPER_STEP_SIZES`` of
#: ``gatlib.attacks.latent``, §3.1: LSUN (0.004, 0.2), targeted (0.005, 0.2); CelebA-HQ (0.004,
#: 0.1)). ``dataset=None``: the paper does not use that data set (no step sizes of its own). The
#: paper used v1 only: for the StyleGAN2 files these are its values for the same data, tuned for
#: v1's AdaIN styles, a starting point rather than the paper's setting.
#: The cars models render 512x512 images whose top and bottom 64 rows are the padding of the
#: 512x384 training images.
PAPER_GENERATORS: Dict[str, dict] = {
    "karras2019stylegan-bedrooms-256x256.pkl": dict(version=LAYOUT, resolution=256, dataset="lsun"),
    "karras2019stylegan-cars-512x384.pkl": dict(version=LAYOUT, resolution=512, dataset="lsun"),
    "karras2019stylegan-cats-256x256.pkl": dict(version=LAYOUT, resolution=256, dataset="lsun"),
    "karras2019stylegan-celebahq-1024x1024.pkl": dict(version=LAYOUT, resolution=1024, dataset="celeba-hq"),
    "karras2019stylegan-ffhq-1024x1024.pkl": dict(version=LAYOUT, resolution=1024, dataset=None),
    "stylegan2-car-config-f.pkl": dict(version="stylegan2", resolution=512, dataset="lsun"),
    "stylegan2-cat-config-f.pkl": dict(version="stylegan2", resolution=256, dataset="lsun"),
    "stylegan2-church-config-f.pkl": dict(version="stylegan2", resolution=256, dataset="lsun"),
    "stylegan2-horse-config-f.pkl": dict(version="stylegan2", resolution=256, dataset="lsun"),
    "stylegan2-ffhq-config-f.pkl": dict(version="stylegan2", resolution=1024, dataset=None),
}


def paper_layer_groups(num_layers: int = 18) -> Dict[str, List[int]]:
    """The paper's coarse / middle / fine layers as 0-based indices: exactly ``PAPER_LAYER_RANGES``
    for 18 layers ({'coarse': [0..5], 'middle': [6..11], 'fine': [12..17]}); for other depths the
    same thirds as ``G.layer_groups()`` (extra layers to the coarser groups: 14 -> 5/5/4, 16 ->
    6/5/5), since the paper states its split at 18 layers only."""
    if num_layers == 18:
        return {name: list(range(a - 1, b)) for name, (a, b) in PAPER_LAYER_RANGES.items()}
    parts = np.array_split(np.arange(num_layers), 3)
    return {name: [int(i) for i in p] for name, p in zip(("coarse", "middle", "fine"), parts)}


def paper_settings(checkpoint: str, targeted: bool = False) -> dict:
    """What the paper's setting is for one of ``PAPER_GENERATORS`` (a file name or path): version,
    resolution, number of layers, the layer groups (0-based) and (eps, delta) — None where the
    paper used no such data set."""
    name = str(checkpoint).replace("\\", "/").rsplit("/", 1)[-1]
    if name not in PAPER_GENERATORS:
        raise KeyError(f"{name!r} is not one of the official checkpoints: {sorted(PAPER_GENERATORS)}")
    info = dict(PAPER_GENERATORS[name])
    info["num_layers"] = 2 * int(math.log2(info["resolution"])) - 2
    info["layer_groups"] = paper_layer_groups(info["num_layers"])
    kind = "targeted" if targeted else "non_targeted"
    info["eps_delta"] = PAPER_STEP_SIZES.get((info["dataset"], kind)) if info["dataset"] else None
    return info


# ----------------------------------------------------------------------------------------------
# Mapping network f


class MappingNetworkV1(nn.Module):
    """f: (z, c) -> w, v1's ``G_mapping``: optional label embedding concatenated to z, pixel norm,
    ``num_layers`` equalized-lr dense layers (lr multiplier ``lr_mul``, gain sqrt(2) in the weight)
    each followed by leaky ReLU 0.2. Tracks ``w_avg`` (and gatlib's per-class ``w_avg_class``)
    like ``stylegan2.MappingNetwork``, whose averaging and truncation code it shares."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, num_classes: int = 0, num_layers: int = 8,
                 hidden: Optional[int] = None, lr_mul: float = 0.01, w_avg_beta: float = 0.995, num_ws: int = 18):
        super().__init__()
        self.z_dim, self.w_dim, self.num_classes, self.num_ws = z_dim, w_dim, num_classes, num_ws
        self.w_avg_beta = w_avg_beta
        hidden = w_dim if hidden is None else hidden
        # v1's LabelConcat: a plain (no equalized lr, no bias) (num_classes, z_dim) matrix
        self.label_embed = nn.Parameter(torch.randn(num_classes, z_dim)) if num_classes else None
        features = [z_dim * (2 if num_classes else 1)] + [hidden] * (num_layers - 1) + [w_dim]
        self.fcs = nn.ModuleList(EqualLinear(features[i], features[i + 1], lr_mul=lr_mul, input_gain=SQRT2)
                                 for i in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("w_avg_class", torch.zeros(max(num_classes, 1), w_dim))

    def forward(self, z: Tensor, c: Label = None, truncation_psi: float = 1.0,
                update_w_avg: Optional[bool] = None, truncation_cutoff: Optional[int] = None) -> Tensor:
        """w = f(z, c), shape (B, w_dim); ``truncation_psi != 1`` truncates every layer, or only the
        first ``truncation_cutoff`` layers if given (then the result is (B, num_ws, w_dim))."""
        x = z
        onehot = None
        if not self.num_classes:
            check_no_labels(c)   # the same refusal as StyleGAN2's mapping (and this class's truncation)
        if self.num_classes:
            onehot = as_onehot(c, self.num_classes, z.shape[0], z.device, z.dtype)
            x = torch.cat([z, onehot @ self.label_embed], dim=1)
        x = normalize_2nd_moment(x)
        for fc in self.fcs:
            x = F.leaky_relu(fc(x), LRELU_SLOPE)
        if self.training if update_w_avg is None else update_w_avg:
            self._update_w_avg(x.detach(), onehot)
        if truncation_psi != 1 or truncation_cutoff is not None:
            x = self.truncate(x, truncation_psi, c, truncation_cutoff)
        return x

    # shared with stylegan2.MappingNetwork (same buffers)
    _update_w_avg = MappingNetwork._update_w_avg
    center = MappingNetwork.center

    def truncate(self, w: Tensor, psi: float, c: Label = None, truncation_cutoff: Optional[int] = None) -> Tensor:
        """``center + psi * (w - center)`` for all layers (``truncation_cutoff=None``; w (B, w_dim) or
        (B, L, w_dim) keeps its shape), or for layers ``< truncation_cutoff`` only (v1's G_style;
        returns (B, num_ws, w_dim))."""
        if truncation_cutoff is None:
            return MappingNetwork.truncate(self, w, psi, c)
        ws = w[:, None, :].expand(-1, self.num_ws, -1) if w.dim() == 2 else w
        center = self.center(c, w.shape[0]).to(w.dtype)
        center = center[:, None, :] if center.dim() == 2 else center
        psis = torch.ones(self.num_ws, 1, dtype=w.dtype, device=w.device)
        psis[:max(0, int(truncation_cutoff))] = psi
        return center + psis * (ws - center)


# ----------------------------------------------------------------------------------------------
# Synthesis network g


def _blur_kernel(channels: int) -> Tensor:
    """v1's [1,2,1] x [1,2,1] / 16 low-pass filter as a depthwise 3x3 weight."""
    f = torch.tensor([1.0, 2.0, 1.0])
    k = f[:, None] * f[None, :]
    return (k / k.sum()).expand(channels, 1, 3, 3).contiguous()


class StyleLayer(nn.Module):
    """One of v1's layers: (the constant input | 3x3 conv | up-sampling 3x3 conv + blur), then
    noise (per-channel strength), bias, leaky ReLU, instance norm and AdaIN with style
    ``[y_s, y_b]`` (``(B, 2 * out_channels)``, from ``self.affine``)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kind: str,
                 blur: bool = True, fused: bool = False):
        super().__init__()
        if kind not in ("const", "conv", "up"):
            raise ValueError(f"kind must be 'const', 'conv' or 'up', got {kind!r}")
        self.kind, self.resolution, self.out_channels = kind, resolution, out_channels
        self.fused = bool(fused) and kind == "up"
        self.conv = None if kind == "const" else EqualConv2d(in_channels, out_channels, 3, bias=False,
                                                                input_gain=SQRT2)
        self.noise_strength = nn.Parameter(torch.zeros(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.affine = EqualLinear(w_dim, 2 * out_channels)
        with torch.no_grad():
            self.affine.bias[:out_channels] = 1.0          # y_s = 1 + A_s(w): the +1 lives in the bias
        self.blur = blur and kind == "up"
        if self.blur:
            self.register_buffer("blur_kernel", _blur_kernel(out_channels), persistent=False)

    def _up_conv(self, x: Tensor) -> Tensor:
        """Up-sampling by 2 and the 3x3 conv as one stride-2 transposed conv with the 4x4 kernel that
        sums the four shifted copies of the 3x3 one. ``fused`` (v1's ``upscale2d_conv2d`` with
        ``fused_scale``): that kernel as is, as TF's ``conv2d_transpose``. Not fused (v1's
        ``conv2d(upscale2d(x))``: nearest-neighbour up-sampling, then the conv): the same with the
        kernel flipped, which equals it exactly (at 3x the speed). The two differ by a spatial flip of
        the 3x3 kernel; v1 uses the fused form when the output is >= 128 px (``fused_scale='auto'``)."""
        w = F.pad(self.conv.weight * self.conv.weight_gain, [1, 1, 1, 1])
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
        w = w if self.fused else w.flip([2, 3])
        return F.conv_transpose2d(x, w.transpose(0, 1), stride=2, padding=1)

    def forward(self, x: Tensor, style: Tensor, noise: Optional[Tensor], noise_space: str = "input") -> Tensor:
        if self.kind == "up":
            x = self._up_conv(x)
            if self.blur:
                x = F.conv2d(x, self.blur_kernel, padding=1, groups=self.out_channels)
        elif self.kind == "conv":
            x = self.conv(x)
        if noise is not None:
            x = x + (noise * self.noise_strength[None, :, None, None] if noise_space == "input" else noise)
        x = F.leaky_relu(x + self.bias[None, :, None, None], LRELU_SLOPE)
        x = F.instance_norm(x, eps=1e-8)
        c = self.out_channels
        return x * style[:, :c, None, None] + style[:, c:, None, None]

    def extra_repr(self) -> str:
        return (f"{self.kind}, out={self.out_channels}, resolution={self.resolution}, blur={self.blur}"
                + (", fused" if self.fused else ""))


# ----------------------------------------------------------------------------------------------
# Generator


class GeneratorV1(nn.Module):
    """StyleGAN (v1) generator with first-class style (y) and noise (eta) variables, behind the API of
    ``stylegan2.Generator`` (``styles``, ``make_noise``, ``synthesize``, ``cache``, ``mapping``,
    ``layer_groups``, ...). Defaults are v1's 1024 px FFHQ/CelebA-HQ network.

    Args:
        resolution: output size (power of two >= 4). num_classes: 0 = unconditional (v1's
            ``label_size``). z_dim, w_dim: latent sizes (``latent_size``, ``dlatent_size``).
        mapping_layers, mapping_fmaps, mapping_lr_mul: the mapping MLP (8 layers, hidden width
            ``mapping_fmaps`` = w_dim by default, lr multiplier 0.01).
        channels: ``{resolution: channels}``; default v1's ``min(channel_base // r, channel_max)``
            with ``channel_base = 16384`` (v1's ``fmap_base = 8192``).
        image_channels: 3 for colour. w_avg_beta: EMA decay of ``w_avg``. blur: v1's [1,2,1] filter
            after each up-sampling conv. fused_scale: v1's choice of up-sampling conv, ``"auto"``
            (fused from 128 px on), True or False (see ``StyleLayer._up_conv``).
            truncation_cutoff: layers truncated by ``forward`` (8).
        layout: must be ``"stylegan1"`` (present so that ``GeneratorV1(**G.config)`` rebuilds).

    Attributes as ``stylegan2.Generator``: ``num_layers == num_ws == num_convs`` (every layer has
    one style and one noise), ``layer_resolutions == conv_resolutions``, ``torgb_layers == []``.
    """

    def __init__(self, resolution: int = 1024, num_classes: int = 0, z_dim: int = 512, w_dim: int = 512,
                 mapping_layers: int = 8, mapping_fmaps: Optional[int] = None,
                 channels: Optional[Dict[int, int]] = None, channel_base: int = 16384, channel_max: int = 512,
                 image_channels: int = 3, mapping_lr_mul: float = 0.01, w_avg_beta: float = 0.995,
                 blur: bool = True, fused_scale="auto", truncation_cutoff: int = 8, layout: str = LAYOUT):
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        if layout != LAYOUT:
            raise ValueError(f"GeneratorV1 has layout {LAYOUT!r}, got {layout!r}")
        if fused_scale not in ("auto", True, False):
            raise ValueError(f"fused_scale must be 'auto', True or False, got {fused_scale!r}")
        self.layout = layout
        self.resolution, self.num_classes, self.image_channels = resolution, num_classes, image_channels
        self.z_dim, self.w_dim = z_dim, w_dim
        self.truncation_cutoff = int(truncation_cutoff)
        self.resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.channels = resolve_channels(self.resolutions, channels, channel_base, channel_max)
        mapping_fmaps = w_dim if mapping_fmaps is None else mapping_fmaps
        self.num_layers = self.num_ws = self.num_convs = 2 * log2 - 2
        self.config = dict(resolution=resolution, num_classes=num_classes, z_dim=z_dim, w_dim=w_dim,
                           mapping_layers=mapping_layers, mapping_fmaps=mapping_fmaps, channels=dict(self.channels),
                           image_channels=image_channels, mapping_lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta,
                           blur=blur, fused_scale=fused_scale, truncation_cutoff=self.truncation_cutoff,
                           layout=layout)

        self.mapping = MappingNetworkV1(z_dim, w_dim, num_classes, mapping_layers, mapping_fmaps, mapping_lr_mul,
                                        w_avg_beta, num_ws=self.num_ws)
        self.const = nn.Parameter(torch.ones(self.channels[4], 4, 4))      # v1 initialises it to ones
        layers, c_in = [], self.channels[4]
        for r in self.resolutions:
            c = self.channels[r]
            fused = r >= 128 if fused_scale == "auto" else fused_scale
            layers.append(StyleLayer(c_in, c, w_dim, r, "const" if r == 4 else "up", blur=blur, fused=fused))
            layers.append(StyleLayer(c, c, w_dim, r, "conv"))
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.to_rgb = EqualConv2d(self.channels[resolution], image_channels, 1)
        self.conv_resolutions = [layer.resolution for layer in layers]
        self.layer_resolutions = list(self.conv_resolutions)
        self.torgb_layers: List[int] = []          # v1's single ToRGB has no style

    # -- layer bookkeeping (shared with stylegan2.Generator: they only read num_layers / torgb_layers)
    layer_groups = Generator.layer_groups
    consecutive_groups = Generator.consecutive_groups
    torgb_of_layers = Generator.torgb_of_layers
    broadcast = Generator.broadcast

    # -- f, A, eta ----------------------------------------------------------------------------

    def truncate(self, w: Tensor, psi: float, c: Label = None, truncation_cutoff: Optional[int] = None) -> Tensor:
        """Truncation towards the per-class (``c`` given) or global ``w_avg``: every layer, or the
        first ``truncation_cutoff`` layers (then (B, num_ws, w_dim))."""
        return self.mapping.truncate(w, psi, c, truncation_cutoff)

    def styles(self, w: Tensor) -> Styles:
        """A: w -> style variables y. ``w`` is (B, w_dim) or (B, num_ws, w_dim). Returns
        ``Styles(conv=[y_0, ..., y_{L-1}], torgb=[])``; ``conv[i]`` is ``[y_s, y_b]``, shape
        ``(B, 2 * channels of layer i)``."""
        ws = (lambda i: w) if w.dim() == 2 else (lambda i: w[:, i])
        return Styles([layer.affine(ws(i)) for i, layer in enumerate(self.layers)], [])

    def noise_shapes(self, batch: int) -> List[tuple]:
        return [(batch, 1, r, r) for r in self.conv_resolutions]

    # one (B, 1, r, r) N(0, 1) image per layer; fixed noise buffers (v1's noise0..noiseN variables)
    make_noise = Generator.make_noise
    set_const_noise = Generator.set_const_noise
    const_noise = Generator.const_noise

    # -- g --------------------------------------------------------------------------------------

    def synthesize(self, styles: Styles, noises: Optional[Sequence[Optional[Tensor]]] = None,
                   start_layer: int = 0, cache: Optional[Cache] = None, noise_space: str = "input",
                   return_cache: bool = False):
        """g: x = g(y, eta), the raw image (approx. [-1, 1]; ``to_unit`` maps to [0, 1]).

        Same contract as ``stylegan2.Generator.synthesize``: one style and one noise per layer (a
        ``None`` noise = no noise in that layer; ``noises=None`` draws fresh noise); with
        ``start_layer=k`` only layers >= k run, from ``cache[k]`` (``G.cache`` or
        ``return_cache=True``, which also returns ``{k: (x entering layer k, None)}``)."""
        if noise_space not in NOISE_SPACES:
            raise ValueError(f"noise_space must be one of {NOISE_SPACES}, got {noise_space!r}")
        batch = styles.conv[0].shape[0]
        if noises is None:
            noises = self.make_noise(batch)
        if len(styles.conv) != self.num_layers or len(noises) != self.num_layers or len(styles.torgb):
            raise ValueError(f"need {self.num_layers} styles, 0 ToRGB styles and {self.num_layers} noises, got "
                             f"{len(styles.conv)}, {len(styles.torgb)} and {len(noises)}")
        if not 0 <= start_layer <= self.num_layers:
            raise ValueError(f"start_layer must lie in 0..{self.num_layers}, got {start_layer}")
        if start_layer == 0:
            x = self.const[None].expand(batch, -1, -1, -1)
        else:
            if cache is None or start_layer not in cache:
                raise ValueError(f"start_layer={start_layer} needs cache[{start_layer}] (G.cache(...))")
            x = cache[start_layer][0]
        record: Optional[Cache] = {} if return_cache else None
        x = self._run(styles, noises, start_layer, self.num_layers, x, noise_space, record)
        img = self.to_rgb(x)
        return (img, record) if return_cache else img

    def _run(self, styles, noises, start, stop, x, noise_space, record=None):
        for i in range(start, stop):
            if record is not None:
                record[i] = (x.detach(), None)
            x = self.layers[i](x, styles.conv[i], noises[i], noise_space)
        return x

    @torch.no_grad()
    def cache(self, styles: Styles, noises: Sequence[Optional[Tensor]], start_layer: int,
              noise_space: str = "input") -> Cache:
        """Run only layers ``< start_layer`` (no grad) and return ``{start_layer: (x, None)}``."""
        x = self.const[None].expand(styles.conv[0].shape[0], -1, -1, -1)
        return {start_layer: (self._run(styles, noises, 0, start_layer, x, noise_space), None)}

    to_unit = staticmethod(to_unit_range)

    def forward(self, z: Tensor, c: Label = None, truncation_psi: float = 1.0,
                noises: Optional[Sequence[Optional[Tensor]]] = None, noise_space: str = "input",
                truncation_cutoff: Optional[int] = None) -> Tensor:
        """mapping -> v1 truncation of the first ``truncation_cutoff`` layers (default
        ``G.truncation_cutoff``; ``G.num_layers`` = all) -> styles -> synthesize -> [0, 1]."""
        w = self.mapping(z, c)
        if truncation_psi != 1:
            cutoff = self.truncation_cutoff if truncation_cutoff is None else truncation_cutoff
            w = self.truncate(w, truncation_psi, c, cutoff)
        return self.to_unit(self.synthesize(self.styles(w), noises, noise_space=noise_space))

    # z sampling and Monte-Carlo averages of w (shared: they only use mapping, const, z_dim, w_dim)
    sample_z = Generator.sample_z
    mean_w = Generator.mean_w
    _mean_w = Generator._mean_w
    estimate_w_avg = Generator.estimate_w_avg


__all__ = [
    "GeneratorV1",
    "MappingNetworkV1",
    "PAPER_GENERATORS",
    "PAPER_LAYER_RANGES",
    "StyleLayer",
    "paper_layer_groups",
    "paper_settings",
]
