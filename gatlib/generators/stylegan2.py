"""StyleGAN2 in one file, pure PyTorch (no custom CUDA ops; the same code runs on CPU and GPU).

The layout follows rosinality's ``model.py`` and NVlabs' ``networks_stylegan2.py``, but the API makes
the two variables that Generative Adversarial Training (Poursaeed et al., ICCV 2021, §3.1, Figure 1)
attacks first-class:

* **style variables y** — the output of the learned affine map A applied to w, one vector per
  modulated convolution (``Styles.conv[i]``, shape ``(B, in_channels_of_layer_i)``). Eq. (1)/(3) of
  the paper step on them: ``y_adv <- y_adv - eps * sign(grad_y J(F(g(y_adv, eta_adv)), target))``.
* **noise variables eta** — one single-channel Gaussian image per convolution (``(B, 1, r, r)``).
  Eq. (2)/(4) step on them with step size delta.

The generator is ``x = g(y, eta)`` with ``y = A(w)`` and ``w = f(z, c)``::

    G = Generator()                                  # 32x32, 10 classes, 1 image channel
    w = G.mapping(z, c, truncation_psi=0.7)          # f: (B, w_dim)
    styles = G.styles(w)                             # A: Styles(conv=[y_0..y_7], torgb=[...])
    noises = G.make_noise(B, generator=gen)          # eta: [n_0..n_7], each (B, 1, r, r) ~ N(0, 1)
    raw = G.synthesize(styles, noises)               # g: raw output, approx. in [-1, 1]
    images = G.to_unit(raw)                          # [0, 1], what classifiers take
    images = G(z, c, truncation_psi=0.7)             # the same in one call

Conventions (decisions documented here once):

Layers
    Like StyleGAN (v1) — whose 18 layers at 1024 px the paper counts ("top 6 layers (out of 18)") —
    there are **two modulated 3x3 convolutions per resolution, 4x4 included**, so
    ``num_layers = 2 * log2(resolution) - 2`` (8 at 32 px, 14 at 256 px, 18 at 1024 px) and every
    layer index has exactly one style y and one noise eta. (NVlabs' StyleGAN2 has a single conv at
    4x4 and spends its last w index on the final ToRGB only; adding the second 4x4 conv keeps "one
    layer = one y + one eta", at a negligible cost.) At 32 px: layers 0,1 at 4x4; 2,3 at 8x8 (layer 2
    upsamples); 4,5 at 16x16; 6,7 at 32x32. ``G.layer_resolutions`` lists them.
ToRGB styles
    Each resolution ends with a ToRGB (modulated 1x1 conv, no demodulation, no noise) whose style is
    kept in a separate group ``Styles.torgb`` (one per resolution). ToRGB ``j`` runs after layer
    ``G.torgb_layers[j]`` (the last conv of its resolution: 1, 3, 5, 7 at 32 px) and reads the w of
    that same layer, so ``num_ws == num_layers`` and a per-layer w (style mixing) moves a
    resolution's convs and its ToRGB together. The attack decides whether to include ``torgb``.
Layouts
    ``Generator(layout="gat")`` (the default, above) is the embedded model. ``layout="stylegan2"``
    is the layout of real StyleGAN2 checkpoints (rosinality's ``stylegan2-pytorch``, NVlabs'
    ``stylegan2-ada-pytorch``; loaded by ``gatlib.generators.checkpoints``): **one** conv at 4x4,
    then two per resolution, so there are ``num_convs = 2 * log2(resolution) - 3`` convolutions
    (17 at 1024 px) but still ``num_ws = 2 * log2(resolution) - 2`` w indices (18 at 1024 px). The
    convention "a layer is a w index" is kept: ``G.num_layers == G.num_ws``, ``layer_groups()`` and
    ``consecutive_groups()`` split the w indices, conv i reads w index i and owns ``Styles.conv[i]``
    and ``noises[i]``, and ToRGB j (run on the output of conv 2j) reads w index 2j+1 (upstream's
    indexing). The **last** w index has no conv and no noise: its only variable is the style of
    the final ToRGB (``Styles.torgb[-1]``), so ``len(Styles.conv) == len(noises) == num_convs ==
    num_layers - 1``, ``Styles.tensors(layers)`` skips it and ``G.torgb_of_layers(layers)`` finds
    the ToRGB styles of any layers. For ``start_layer``/``cache``, layer k is "the ToRGB reading w
    index k (if any), then conv k (if any)", so the cache of layer k holds the output of conv k-1
    and the skip image of the ToRGBs reading w indices < k. ``conv_clamp`` reproduces NVlabs'
    clamping of activations (256 in their mixed-precision configs); both options are stored in
    ``G.config``.
Layer groups
    ``G.layer_groups()`` splits the layers in thirds, the extra layers going to the coarser groups
    (``numpy.array_split``): 8 layers -> coarse [0,1,2], middle [3,4,5], fine [6,7]; 14 -> 5/5/4;
    18 -> 6/6/6 as in the paper's Figure 3. ``G.consecutive_groups(2)`` -> [[0,1],[2,3],...] (the
    paper's "layers 1-2, 3-4, etc." for adversarial training, 0-based here).
Noise space
    In StyleGAN2 a layer adds ``strength * n`` with ``n ~ N(0, 1)`` and a learned scalar ``strength``
    (the paper's "learned per-feature scaling factors B"; a single scalar per layer in StyleGAN2).
    ``noise_space="input"`` (default): the eta you pass is the unit-variance input ``n``;
    ``noise_space="scaled"``: the eta you pass is ``strength * n`` and is added as is. Step sizes
    like the paper's delta = 0.2 only make sense in the ``"input"`` space (strengths are learned and
    usually small). Note that strengths are initialised to 0 (as in NVlabs): an untrained generator
    has zero gradient w.r.t. ``n`` in the input space.
Image range
    ``synthesize`` returns the raw generator output (approx. [-1, 1], not clamped) so that gradients
    reach every y and eta; ``G.to_unit`` / ``to_unit_range`` map to [0, 1] with a clamp (classifier
    input). The Discriminator takes images in the raw range: real data ``x in [0, 1]`` goes in as
    ``from_unit_range(x) = 2x - 1``.
Truncation (conditional)
    ``w_avg`` (global) and ``w_avg_class`` (one row per class) are buffers tracked with an EMA
    (beta 0.995) whenever the mapping runs in training mode. ``truncate(w, psi, c)`` pulls w towards
    the *per-class* average when ``c`` is given (truncating a class-conditional generator towards the
    global mean would wash the class out; at psi=0 all classes would become the same image), and
    towards the global ``w_avg`` otherwise. ``G.mean_w(c, n)`` estimates averages by sampling and
    ``G.estimate_w_avg(n)`` refills both buffers that way (e.g. for a checkpoint trained elsewhere).
Resampling
    Up-sampling convolutions are NVlabs' ``conv2d_resample(up=2)``: a stride-2 transposed 3x3 conv
    (cost of a conv at the *low* resolution) followed by the [1,3,3,1] FIR low-pass filter done as a
    depthwise 4x4 conv. In the interior this equals bilinear up-sampling followed by the 3x3 conv,
    at ~1/3 of the CPU time (bilinear + full-resolution conv was measured 2.7x slower); borders are
    zero-padded like NVlabs' upfirdn2d. The skip image is up-sampled with the same FIR filter. The
    Discriminator down-samples with the same filter (stride-2 depthwise [1,3,3,1]) *before* its 3x3
    conv, which then runs at the low resolution; NVlabs blurs at full resolution and then applies a
    stride-2 conv, which was 2.2x slower here (oneDNN's stride-2 conv backward is slow on CPU).
Performance
    Modulation is NVlabs' ``fused_modconv=False`` path: scale the input activations by y, run a
    plain conv with the shared weight, then demodulate by multiplying the output with
    ``d = rsqrt((y^2) @ sum_k(W^2)^T + 1e-8)`` (per sample, per output channel). Grouped convs
    (``fused_modconv=True``) are much slower on CPU. The sqrt(2) gain of every leaky ReLU is not
    applied to the activations but folded into the (tiny) vector or weight of the next layer that
    reads them (``input_gain``), which saves one full-size elementwise pass per layer; the
    equalized-lr weight gain of demodulated convs is dropped altogether (demodulation cancels it).
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2
EMBEDDED_CHANNELS = {4: 128, 8: 128, 16: 64, 32: 64}
NOISE_SPACES = ("input", "scaled")

Label = Union[Tensor, int, None]
Cache = Dict[int, Tuple[Tensor, Optional[Tensor]]]
LAYOUTS = ("gat", "stylegan2")


# ----------------------------------------------------------------------------------------------
# Small helpers


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Scale each row to unit second moment (StyleGAN's "pixel norm" of z and of the class embedding)."""
    return x * (x.square().mean(dim, keepdim=True) + eps).rsqrt()


def to_unit_range(images: Tensor) -> Tensor:
    """Raw generator output (approx. [-1, 1]) -> [0, 1], clamped: what the classifiers take."""
    return images.add(1.0).mul(0.5).clamp(0.0, 1.0)


def from_unit_range(images: Tensor) -> Tensor:
    """[0, 1] images (real data) -> the generator's raw range [-1, 1] (Discriminator input)."""
    return images.mul(2.0).sub(1.0)


def _fir_kernel(channels: int, gain: float) -> Tensor:
    """The [1,3,3,1] x [1,3,3,1] low-pass filter, normalised to sum to ``gain``, as a depthwise weight."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = f[:, None] * f[None, :]
    k = k * (gain / k.sum())
    return k.expand(channels, 1, 4, 4).contiguous()


def upsample2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Up-sample by 2 with the FIR filter (zero insertion + [1,3,3,1] filter; ``kernel`` sums to 4).

    Equals bilinear up-sampling (``align_corners=False``) except at the border (zero padding).
    """
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


def as_onehot(c: Label, num_classes: int, batch: int, device, dtype=torch.float32) -> Tensor:
    """Class labels -> ``(B, num_classes)`` float: integer labels ``(B,)`` / an int are one-hot
    encoded; a float ``(B, num_classes)`` tensor (one-hot or soft labels) is used as is."""
    if c is None:
        raise ValueError("this generator is class-conditional: pass class labels c")
    if isinstance(c, int):
        c = torch.full((batch,), c, dtype=torch.long, device=device)
    if not torch.is_floating_point(c):
        c = F.one_hot(c.long().reshape(-1), num_classes)
    if c.shape != (batch, num_classes):
        raise ValueError(f"labels must be ({batch},) ints or ({batch}, {num_classes}) floats, got {tuple(c.shape)}")
    return c.to(device=device, dtype=dtype)


def check_no_labels(c: Label) -> None:
    """An unconditional network (``num_classes=0``) takes no class labels: ``c`` must be None (or an
    empty ``(B, 0)`` tensor, NVlabs' ``c`` for ``c_dim=0``). Anything else would be silently ignored,
    so it is refused (a shape check only, no per-element work)."""
    if c is not None and not (isinstance(c, Tensor) and c.numel() == 0):
        shown = f"a tensor of shape {tuple(c.shape)}" if isinstance(c, Tensor) else repr(c)[:80]
        raise ValueError(f"this generator is unconditional (num_classes=0): it takes no class labels, so c must "
                         f"be None, got {shown}")


def check_noise_space(noise_space: str) -> None:
    """``noise_space`` must be one of ``NOISE_SPACES`` (any other value would silently act as ``"scaled"``)."""
    if noise_space not in NOISE_SPACES:
        raise ValueError(f"noise_space must be one of {NOISE_SPACES}, got {noise_space!r}")


class Styles(NamedTuple):
    """The style variables y of a batch: ``conv[i]`` modulates layer i (``(B, C_in_i)``), ``torgb[j]``
    modulates the ToRGB of resolution j (``(B, C_j)``). Lists are mutable: an attack may replace
    entries, or call ``requires_grad_()`` on them and step on them in place."""

    conv: List[Tensor]
    torgb: List[Tensor]

    def detach(self) -> "Styles":
        return Styles([y.detach() for y in self.conv], [y.detach() for y in self.torgb])

    def clone(self) -> "Styles":
        return Styles([y.clone() for y in self.conv], [y.clone() for y in self.torgb])

    def tensors(self, layers: Optional[Sequence[int]] = None, torgb: bool = False) -> List[Tensor]:
        """The conv styles of ``layers`` (all if None), plus all ToRGB styles if ``torgb``. Layers
        without a conv (the last w index of the ``"stylegan2"`` layout) contribute nothing here; use
        ``G.torgb_of_layers(layers)`` for the ToRGB styles of chosen layers."""
        layers = range(len(self.conv)) if layers is None else layers
        return [self.conv[i] for i in layers if i < len(self.conv)] + (list(self.torgb) if torgb else [])


# ----------------------------------------------------------------------------------------------
# Equalized-learning-rate layers


class EqualLinear(nn.Module):
    """Fully connected layer with equalized learning rate (weights ~ N(0, 1/lr_mul^2), scaled at run
    time by ``lr_mul / sqrt(in_features)``); optional leaky ReLU with the usual sqrt(2) gain."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: bool = False, input_gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_mul / math.sqrt(in_features) * input_gain
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        b = None if self.bias is None else self.bias * self.lr_mul
        x = F.linear(x, self.weight * self.weight_gain, b)
        if self.activation:
            x = F.leaky_relu(x, LRELU_SLOPE) * SQRT2
        return x

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, lr_mul={self.lr_mul}, act={self.activation}"


class EqualConv2d(nn.Module):
    """Conv with equalized learning rate. ``input_gain`` is a pending scalar gain of the input (e.g.
    the sqrt(2) of a preceding leaky ReLU) folded into the weight instead of the activations;
    ``down=True`` first down-samples by 2 with the [1,3,3,1] FIR filter (a stride-2 depthwise conv),
    then applies the conv at the low resolution (see the module docstring, "Resampling")."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 down: bool = False, input_gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = input_gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.down = down
        self.kernel_size = kernel_size
        if down:
            self.register_buffer("fir", _fir_kernel(in_channels, 1.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:   # FIR down-sampling ([1,3,3,1], stride 2) first, then the conv at low resolution
            x = F.conv2d(x, self.fir, stride=2, padding=1, groups=x.shape[1])
        return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.kernel_size // 2)


# ----------------------------------------------------------------------------------------------
# Mapping network f


class MappingNetwork(nn.Module):
    """f: (z, c) -> w. z is normalised to unit second moment; a class-conditional network embeds the
    one-hot label (equalized FC), normalises it and concatenates it with z (NVlabs' conditional
    mapping); then ``num_layers`` FC layers with leaky ReLU and learning-rate multiplier ``lr_mul``."""

    def __init__(self, z_dim: int, w_dim: int, num_classes: int = 0, num_layers: int = 3,
                 lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_classes = z_dim, w_dim, num_classes
        self.w_avg_beta = w_avg_beta
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        features = [z_dim + (w_dim if num_classes else 0)] + [w_dim] * num_layers
        self.fcs = nn.ModuleList(EqualLinear(features[i], features[i + 1], lr_mul=lr_mul, activation=True)
                                 for i in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.register_buffer("w_avg_class", torch.zeros(max(num_classes, 1), w_dim))

    def forward(self, z: Tensor, c: Label = None, truncation_psi: float = 1.0,
                update_w_avg: Optional[bool] = None) -> Tensor:
        """w = f(z, c), shape (B, w_dim). ``update_w_avg`` (default: ``self.training``) updates the
        EMA of the global and per-class average w; ``truncation_psi != 1`` applies ``truncate``."""
        x = normalize_2nd_moment(z)
        onehot = None
        if self.num_classes:
            onehot = as_onehot(c, self.num_classes, z.shape[0], z.device, z.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.embed(onehot))], dim=1)
        else:
            check_no_labels(c)
        for fc in self.fcs:
            x = fc(x)
        if self.training if update_w_avg is None else update_w_avg:
            self._update_w_avg(x.detach(), onehot)
        if truncation_psi != 1:
            x = self.truncate(x, truncation_psi, c)
        return x

    @torch.no_grad()
    def _update_w_avg(self, w: Tensor, onehot: Optional[Tensor]) -> None:
        t = 1.0 - self.w_avg_beta
        self.w_avg.lerp_(w.mean(0).to(self.w_avg.dtype), t)
        if onehot is not None:
            counts = onehot.sum(0)
            seen = counts > 0
            means = (onehot.t() @ w)[seen] / counts[seen, None]
            self.w_avg_class[seen] = self.w_avg_class[seen].lerp(means.to(self.w_avg_class.dtype), t)

    def center(self, c: Label = None, batch: int = 1) -> Tensor:
        """The truncation centre: per-class average (``(B, w_dim)``) if conditional and ``c`` is
        given, else the global ``w_avg`` (``(w_dim,)``). An unconditional network refuses a ``c``."""
        if not self.num_classes:
            check_no_labels(c)
            return self.w_avg
        if c is None:
            return self.w_avg
        onehot = as_onehot(c, self.num_classes, batch, self.w_avg.device, self.w_avg.dtype)
        return (onehot @ self.w_avg_class) / onehot.sum(1, keepdim=True)

    def truncate(self, w: Tensor, psi: float, c: Label = None) -> Tensor:
        """Truncation trick: ``center + psi * (w - center)`` for w of shape (B, w_dim) or (B, L, w_dim)."""
        center = self.center(c, w.shape[0])
        if center.dim() == 2 and w.dim() == 3:
            center = center[:, None]
        return center.to(w.dtype).lerp(w, psi)


# ----------------------------------------------------------------------------------------------
# Synthesis network g


class ModulatedConv(nn.Module):
    """One layer of the synthesis network: modulated/demodulated 3x3 conv (optionally up-sampling
    by 2), noise injection, bias and leaky ReLU.

    ``style`` y ``(B, C_in)`` is the affine map A of w (``self.affine``, bias initialised to 1). The
    returned activation is *without* the sqrt(2) gain of the leaky ReLU; the next layer applies it
    through ``input_gain`` (folded into its y), see the module docstring. ``conv_clamp`` (NVlabs):
    clamp the activation *with* its gain to +-conv_clamp, i.e. ours to +-conv_clamp / sqrt(2).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False, input_gain: float = SQRT2, conv_clamp: Optional[float] = None):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.input_gain = input_gain
        self.act_clamp = None if conv_clamp is None else float(conv_clamp) / SQRT2
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        if up:
            self.register_buffer("fir", _fir_kernel(out_channels, 4.0), persistent=False)

    def demodulation(self, style: Tensor) -> Tensor:
        """d[b, o] = 1 / sqrt(sum_{i,k} (W[o,i,k] * y[b,i])^2 + 1e-8), shape (B, C_out)."""
        return (style.square() @ self.weight.square().sum([2, 3]).t() + 1e-8).rsqrt()

    def forward(self, x: Tensor, style: Tensor, noise: Optional[Tensor], noise_space: str = "input") -> Tensor:
        d = self.demodulation(style)
        x = x * (style * self.input_gain)[:, :, None, None]             # modulate the input
        if self.up:   # NVlabs conv2d_resample(up=2): stride-2 transposed conv, then the FIR filter
            x = F.conv_transpose2d(x, self.weight.transpose(0, 1).flip([2, 3]), stride=2)
            x = F.conv2d(x, self.fir, padding=1, groups=self.out_channels)
        else:
            x = F.conv2d(x, self.weight, padding=1)
        x = x.mul(d[:, :, None, None]).add_(self.bias[None, :, None, None])      # demodulate + bias
        if noise is not None:
            x = x.add_(noise * self.noise_strength if noise_space == "input" else noise)
        x = F.leaky_relu(x, LRELU_SLOPE, inplace=True)
        # out of place: the in-place leaky ReLU above keeps its output for the backward pass
        return x if self.act_clamp is None else x.clamp(-self.act_clamp, self.act_clamp)

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, resolution={self.resolution}, up={self.up}"


class ToRGB(nn.Module):
    """Modulated 1x1 conv to image channels (no demodulation, no noise), as one batched matmul;
    ``conv_clamp`` (NVlabs) clamps its output to +-conv_clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 conv_clamp: Optional[float] = None):
        super().__init__()
        self.resolution = resolution
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.gain = SQRT2 / math.sqrt(in_channels)   # equalized-lr weight gain x pending lrelu gain

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        B, C, H, W = x.shape
        m = self.weight[None] * (style * self.gain)[:, None, :]        # (B, out, in)
        rgb = torch.baddbmm(self.bias[None, :, None], m, x.reshape(B, C, H * W)).view(B, -1, H, W)
        return rgb if self.conv_clamp is None else rgb.clamp(-self.conv_clamp, self.conv_clamp)


# ----------------------------------------------------------------------------------------------
# Generator


class Generator(nn.Module):
    """StyleGAN2 generator (skip architecture) with first-class style (y) and noise (eta) variables.

    Args:
        resolution: output size (power of two >= 4).
        num_classes: number of classes for the conditional mapping; 0 = unconditional.
        z_dim, w_dim: latent sizes. mapping_layers: FC layers of f. mapping_lr_mul: their lr multiplier.
        channels: ``{resolution: channels}``; default ``EMBEDDED_CHANNELS`` ({4:128, 8:128, 16:64,
            32:64}) at 32 px, else NVlabs' ``min(channel_base // r, channel_max)``.
        channel_base, channel_max: the formula's constants (used when ``channels`` is None and
            ``channel_base`` is given or the resolution is not 32).
        image_channels: 1 for digits, 3 for colour. w_avg_beta: EMA decay of the average w.
        layout: ``"gat"`` (default: two convs at 4x4, one y and one eta per w index) or
            ``"stylegan2"`` (one conv at 4x4, as in real StyleGAN2 checkpoints; see the module
            docstring, "Layouts").
        conv_clamp: clamp activations and ToRGB outputs to +-conv_clamp (NVlabs); None = off.

    Attributes: ``num_layers == num_ws`` (w indices), ``num_convs`` (modulated convs = styles in
    ``Styles.conv`` = noises), ``conv_resolutions`` (one per conv), ``layer_resolutions`` (one per
    w index), ``torgb_layers`` (the w index each ToRGB reads).
    """

    def __init__(self, resolution: int = 32, num_classes: int = 10, z_dim: int = 128, w_dim: int = 128,
                 mapping_layers: int = 3, channels: Optional[Dict[int, int]] = None,
                 channel_base: Optional[int] = None, channel_max: int = 512, image_channels: int = 1,
                 mapping_lr_mul: float = 0.01, w_avg_beta: float = 0.995, layout: str = "gat",
                 conv_clamp: Optional[float] = None):
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout, self.conv_clamp = layout, conv_clamp
        self.resolution, self.num_classes, self.image_channels = resolution, num_classes, image_channels
        self.z_dim, self.w_dim = z_dim, w_dim
        self.resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.channels = resolve_channels(self.resolutions, channels, channel_base, channel_max)
        self.config = dict(resolution=resolution, num_classes=num_classes, z_dim=z_dim, w_dim=w_dim,
                           mapping_layers=mapping_layers, channels=dict(self.channels), image_channels=image_channels,
                           mapping_lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta, layout=layout,
                           conv_clamp=conv_clamp)

        self.mapping = MappingNetwork(z_dim, w_dim, num_classes, mapping_layers, mapping_lr_mul, w_avg_beta)
        self.const = nn.Parameter(torch.randn(self.channels[4], 4, 4))
        layers, torgbs, self.torgb_layers, runs_after = [], [], [], []
        c_in = self.channels[4]
        for r in self.resolutions:
            c = self.channels[r]
            if r > 4 or layout == "gat":
                layers.append(ModulatedConv(c_in, c, w_dim, r, up=r > 4, input_gain=1.0 if r == 4 else SQRT2,
                                            conv_clamp=conv_clamp))
            layers.append(ModulatedConv(c, c, w_dim, r, input_gain=SQRT2 if layers else 1.0, conv_clamp=conv_clamp))
            torgbs.append(ToRGB(c, image_channels, w_dim, r, conv_clamp=conv_clamp))
            runs_after.append(len(layers) - 1)            # the conv whose output the ToRGB reads
            self.torgb_layers.append(len(layers) - (1 if layout == "gat" else 0))   # the w index it reads
            c_in = c
        self.layers = nn.ModuleList(layers)
        self.torgbs = nn.ModuleList(torgbs)
        self.register_buffer("fir_up", _fir_kernel(image_channels, 4.0), persistent=False)
        self.num_convs = len(layers)
        self.num_layers = self.num_ws = 2 * log2 - 2      # w indices (18 at 1024 px), in both layouts
        self.conv_resolutions = [layer.resolution for layer in layers]
        self.layer_resolutions = self.conv_resolutions + [resolution] * (self.num_layers - self.num_convs)
        # The steps of ``_run``: in the "gat" layout ToRGB j runs right after conv torgb_layers[j] (same
        # w index); in the "stylegan2" layout it runs at the start of the step of the w index it reads.
        self._torgb_after = {li: j for j, li in enumerate(runs_after)} if layout == "gat" else {}
        self._torgb_before = {} if layout == "gat" else {li: j for j, li in enumerate(self.torgb_layers)}

    # -- layer bookkeeping --------------------------------------------------------------------

    def layer_groups(self) -> Dict[str, List[int]]:
        """Coarse / middle / fine thirds of the layer indices (extra layers go to the coarser groups):
        8 layers -> {'coarse': [0,1,2], 'middle': [3,4,5], 'fine': [6,7]}."""
        parts = np.array_split(np.arange(self.num_layers), 3)
        return {name: [int(i) for i in p] for name, p in zip(("coarse", "middle", "fine"), parts)}

    def consecutive_groups(self, size: int = 2) -> List[List[int]]:
        """Groups of ``size`` consecutive layers ([[0,1],[2,3],...]; the last may be shorter), the
        paper's "layers 1-2, 3-4, etc." manipulated separately in adversarial training (§3.2)."""
        return [list(range(i, min(i + size, self.num_layers))) for i in range(0, self.num_layers, size)]

    def torgb_of_layers(self, layers: Sequence[int]) -> List[int]:
        """Indices j of the ToRGB styles whose w index (``torgb_layers[j]``) is in ``layers``."""
        s = set(layers)
        return [j for j, li in enumerate(self.torgb_layers) if li in s]

    # -- f, A, eta ----------------------------------------------------------------------------

    def truncate(self, w: Tensor, psi: float, c: Label = None) -> Tensor:
        """Truncation trick towards the per-class average w (``c`` given) or the global ``w_avg``."""
        return self.mapping.truncate(w, psi, c)

    def broadcast(self, w: Tensor) -> Tensor:
        """(B, w_dim) -> (B, num_ws, w_dim), a writable copy (for style mixing: overwrite rows)."""
        return w[:, None, :].repeat(1, self.num_ws, 1)

    def styles(self, w: Tensor) -> Styles:
        """A: w -> style variables y (the paper's y, modulating each convolution).

        ``w`` is (B, w_dim) (same w for every layer) or (B, num_ws, w_dim) (one w per layer).
        Returns ``Styles(conv=[y_0, ..., y_{L-1}], torgb=[...])``; ``conv[i]`` has shape
        ``(B, in_channels of layer i)``. Gradients of the attack (eq. 1, 3) are taken w.r.t. these."""
        if w.dim() not in (2, 3) or w.shape[-1] != self.w_dim:
            raise ValueError(f"w must be (B, w_dim={self.w_dim}) or (B, num_ws={self.num_ws}, w_dim={self.w_dim}), "
                             f"got shape {tuple(w.shape)}")
        if w.dim() == 3 and w.shape[1] != self.num_ws:
            raise ValueError(f"a per-layer w must have one row per w index: (B, num_ws={self.num_ws}, {self.w_dim}), "
                             f"got {w.shape[1]} rows (shape {tuple(w.shape)})")
        ws = (lambda i: w) if w.dim() == 2 else (lambda i: w[:, i])
        conv = [layer.affine(ws(i)) for i, layer in enumerate(self.layers)]
        torgb = [rgb.affine(ws(li)) for rgb, li in zip(self.torgbs, self.torgb_layers)]
        return Styles(conv, torgb)

    def noise_shapes(self, batch: int) -> List[Tuple[int, int, int, int]]:
        return [(batch, 1, r, r) for r in self.conv_resolutions]

    def make_noise(self, batch: int, generator: Optional[torch.Generator] = None,
                   device=None, dtype=None) -> List[Tensor]:
        """The noise variables eta: one (B, 1, r, r) N(0, 1) image per conv (``num_convs``: every
        layer in the ``"gat"`` layout, all but the last in ``"stylegan2"``; unit-variance input
        space, see ``noise_space``). Deterministic given a seeded ``torch.Generator``."""
        p = self.const
        device = p.device if device is None else torch.device(device)
        dtype = p.dtype if dtype is None else dtype
        gdev = device if generator is None else generator.device
        return [torch.randn(s, generator=generator, device=gdev, dtype=dtype).to(device)
                for s in self.noise_shapes(batch)]

    def set_const_noise(self, noises: Sequence[Tensor]) -> None:
        """Keep fixed noise images, one per conv (upstream's ``noise_mode='const'`` noise: NVlabs'
        ``noise_const``, rosinality's ``noises.noise_i``), as non-persistent buffers: they follow
        ``.to()`` but are not in the state dict. ``G.const_noise()`` returns them for ``synthesize``."""
        if len(noises) != self.num_convs:
            raise ValueError(f"need {self.num_convs} noise images, got {len(noises)}")
        for i, (n, r) in enumerate(zip(noises, self.conv_resolutions)):     # all checked before any is stored
            if n.numel() != r * r:
                raise ValueError(f"noise image {i} (layer {i}, {r}x{r}) must hold {r * r} values, got shape "
                                 f"{tuple(n.shape)}")
        for i, (n, r) in enumerate(zip(noises, self.conv_resolutions)):
            self.register_buffer(f"const_noise_{i}", n.detach().reshape(1, 1, r, r).clone(), persistent=False)

    def const_noise(self) -> Optional[List[Tensor]]:
        """The fixed noise images stored by ``set_const_noise`` (each (1, 1, r, r), broadcast over
        the batch by ``synthesize``), or None if there are none."""
        if not hasattr(self, "const_noise_0"):
            return None
        return [getattr(self, f"const_noise_{i}") for i in range(self.num_convs)]

    # -- g --------------------------------------------------------------------------------------

    def _check_inputs(self, styles: Styles, noises: Optional[Sequence[Optional[Tensor]]], start_layer: int,
                      noise_space: str, noises_required: bool = False) -> int:
        """The argument checks of ``synthesize`` and ``cache`` (one place, so both refuse the same
        inputs); returns the batch size. Lengths and shapes only, no per-element work: attacks call
        ``synthesize`` thousands of times. Noises: one per conv (``num_convs``), each None or shaped
        as ``make_noise(batch)`` makes it, ``(batch, 1, r, r)``, or ``(1, 1, r, r)`` (broadcast over
        the batch, like ``const_noise()``)."""
        check_noise_space(noise_space)
        if not 0 <= start_layer < self.num_layers:
            raise ValueError(f"start_layer must lie in [0, {self.num_layers}) (G.num_layers={self.num_layers}), "
                             f"got {start_layer}")
        if len(styles.conv) != self.num_convs or len(styles.torgb) != len(self.torgbs):
            raise ValueError(f"need {self.num_convs} conv styles and {len(self.torgbs)} ToRGB styles, got "
                             f"{len(styles.conv)} and {len(styles.torgb)}")
        batch = styles.conv[0].shape[0]
        if noises is None:
            if noises_required:
                raise ValueError(f"need {self.num_convs} noises (one per conv; G.make_noise(batch)), got None")
            return batch
        if len(noises) != self.num_convs:
            raise ValueError(f"need {self.num_convs} noises, one per conv (G.num_convs; None entries for no noise), "
                             f"got {len(noises)}")
        for i, (n, r) in enumerate(zip(noises, self.conv_resolutions)):
            if n is not None and (n.dim() != 4 or n.shape[0] not in (1, batch) or n.shape[1:] != (1, r, r)):
                raise ValueError(f"noise {i} (layer {i}, {r}x{r}) must have shape ({batch}, 1, {r}, {r}) as "
                                 f"G.make_noise({batch}) makes it (or (1, 1, {r}, {r}), broadcast over the batch), "
                                 f"got {tuple(n.shape)}")
        return batch

    def synthesize(self, styles: Styles, noises: Optional[Sequence[Optional[Tensor]]] = None,
                   start_layer: int = 0, cache: Optional[Cache] = None, noise_space: str = "input",
                   return_cache: bool = False):
        """g: x = g(y, eta), the raw image (approx. [-1, 1]; use ``to_unit`` for [0, 1]).

        Args:
            styles: ``Styles`` from ``G.styles(w)`` (possibly perturbed; any ``requires_grad``).
            noises: one eta per conv (``G.num_convs``), each (B, 1, r, r) or (1, 1, r, r) (broadcast); a
                ``None`` entry = no noise in that conv; ``noises=None`` draws fresh random noise.
            noise_space: ``"input"``: eta is the unit-variance n, the layer adds ``strength * n``;
                ``"scaled"``: eta is already ``strength * n`` and is added as is.
            start_layer, cache: run only layers ``>= start_layer`` starting from ``cache[start_layer]``
                (the activations before that layer, from ``G.cache(...)`` or ``return_cache=True``);
                gives the same image as the full pass as long as styles/noises of layers
                ``< start_layer`` (and ToRGBs that ran before it) are unchanged.
            return_cache: also return ``{k: (x, skip_image)}`` for every layer k run (detached).
        Gradients flow to every y and eta of the layers that are run.

        Raises ValueError naming the problem for a wrong ``noise_space``, ``start_layer`` outside
        ``[0, num_layers)``, a wrong number of styles, or a wrong number or shape of noises (see
        ``_check_inputs``; shape checks only, nothing per element).
        """
        batch = self._check_inputs(styles, noises, start_layer, noise_space)
        if noises is None:
            noises = self.make_noise(batch)
        if start_layer == 0:
            x, img = self.const[None], None
        else:
            if cache is None or start_layer not in cache:
                raise ValueError(f"start_layer={start_layer} needs cache[{start_layer}] (G.cache(...))")
            x, img = cache[start_layer]
        record: Optional[Cache] = {} if return_cache else None
        img = self._run(styles, noises, start_layer, self.num_layers, x, img, noise_space, record)[1]
        return (img, record) if return_cache else img

    def _run(self, styles, noises, start, stop, x, img, noise_space, record=None):
        for i in range(start, stop):
            if record is not None:
                record[i] = (x.detach().expand(styles.conv[0].shape[0], -1, -1, -1) if i == 0 else x.detach(),
                             None if img is None else img.detach())
            j = self._torgb_before.get(i)
            if j is not None:
                img = self._add_rgb(j, x, styles, img)
            if i < self.num_convs:
                x = self.layers[i](x, styles.conv[i], noises[i], noise_space)
            j = self._torgb_after.get(i)
            if j is not None:
                img = self._add_rgb(j, x, styles, img)
        return x, img

    def _add_rgb(self, j: int, x: Tensor, styles: Styles, img: Optional[Tensor]) -> Tensor:
        rgb = self.torgbs[j](x, styles.torgb[j])
        return rgb if img is None else rgb + upsample2d(img, self.fir_up)

    @torch.no_grad()
    def cache(self, styles: Styles, noises: Sequence[Optional[Tensor]], start_layer: int,
              noise_space: str = "input") -> Cache:
        """Run only layers ``< start_layer`` (no grad) and return ``{start_layer: (x, skip_image)}``
        for ``synthesize(..., start_layer=start_layer, cache=...)``. Checks its arguments as
        ``synthesize`` does."""
        batch = self._check_inputs(styles, noises, start_layer, noise_space, noises_required=True)
        x, img = self.const[None].expand(batch, -1, -1, -1), None
        x, img = self._run(styles, noises, 0, start_layer, x, img, noise_space)
        return {start_layer: (x, img)}

    @staticmethod
    def to_unit(images: Tensor) -> Tensor:
        """Raw output -> [0, 1] (clamped)."""
        return to_unit_range(images)

    def forward(self, z: Tensor, c: Label = None, truncation_psi: float = 1.0,
                noises: Optional[Sequence[Optional[Tensor]]] = None, noise_space: str = "input") -> Tensor:
        """Convenience: mapping -> styles -> (random noise unless given) -> synthesize -> [0, 1]."""
        w = self.mapping(z, c, truncation_psi)
        return self.to_unit(self.synthesize(self.styles(w), noises, noise_space=noise_space))

    def sample_z(self, batch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        gdev = self.const.device if generator is None else generator.device
        return torch.randn(batch, self.z_dim, generator=generator, device=gdev).to(self.const.device)

    # -- average w -----------------------------------------------------------------------------

    @torch.no_grad()
    def mean_w(self, c: Label = None, n: int = 4096, generator: Optional[torch.Generator] = None,
               chunk: int = 1024) -> Tensor:
        """Monte-Carlo average of w over ``n`` samples of z: for class ``c`` (an int -> (w_dim,); a label
        tensor (B,) -> (B, w_dim)), or over z and uniformly drawn classes when ``c`` is None. An
        unconditional generator refuses a ``c``."""
        if not self.num_classes:
            check_no_labels(c)
            return self._mean_w(None, n, generator, chunk)
        if c is None:
            return self._mean_w(None, n, generator, chunk)
        if isinstance(c, int):
            return self._mean_w(c, n, generator, chunk)
        labels = c.reshape(-1).long()
        means = {int(k): self._mean_w(int(k), n, generator, chunk) for k in labels.unique().tolist()}
        return torch.stack([means[int(k)] for k in labels.tolist()])

    def _mean_w(self, label, n, generator, chunk):
        total = torch.zeros(self.w_dim, device=self.const.device, dtype=self.const.dtype)
        done = 0
        while done < n:
            b = min(chunk, n - done)
            z = self.sample_z(b, generator)
            if not self.num_classes:
                c = None
            elif label is None:
                gdev = self.const.device if generator is None else generator.device
                c = torch.randint(self.num_classes, (b,), generator=generator, device=gdev).to(self.const.device)
            else:
                c = label
            total += self.mapping(z, c, update_w_avg=False).sum(0)
            done += b
        return total / n

    @torch.no_grad()
    def estimate_w_avg(self, n: int = 4096, generator: Optional[torch.Generator] = None) -> None:
        """Refill ``w_avg`` (and ``w_avg_class``) with Monte-Carlo means (n samples each)."""
        if self.num_classes:
            per_class = torch.stack([self._mean_w(k, n, generator, 1024) for k in range(self.num_classes)])
            self.mapping.w_avg_class.copy_(per_class)
        self.mapping.w_avg.copy_(self._mean_w(None, n, generator, 1024))


def resolve_channels(resolutions: Sequence[int], channels: Optional[Dict[int, int]] = None,
                     channel_base: Optional[int] = None, channel_max: int = 512) -> Dict[int, int]:
    """Channels per resolution: explicit dict, else ``EMBEDDED_CHANNELS`` at 32 px, else NVlabs'
    ``min(channel_base // r, channel_max)`` (channel_base defaults to 32768)."""
    if channels is not None:
        channels = {int(k): v for k, v in channels.items()}   # JSON round trips make keys strings
        missing = [r for r in resolutions if r not in channels]
        if missing:
            raise ValueError(f"channels lacks resolutions {missing}")
        return {r: int(channels[r]) for r in resolutions}
    if channel_base is None and resolutions[-1] == 32:
        return dict(EMBEDDED_CHANNELS)
    base = 32768 if channel_base is None else channel_base
    return {r: max(1, min(base // r, channel_max)) for r in resolutions}


# ----------------------------------------------------------------------------------------------
# Discriminator


class DiscriminatorBlock(nn.Module):
    """Residual block (NVlabs 'resnet'): 3x3 conv, FIR down-sampling + 3x3 conv, plus a FIR
    down-sampling + 1x1 skip; ``out = sqrt(1/2) * (skip + main)``. Returned activations carry no
    pending gain: the sqrt(2) of the last leaky ReLU and the sqrt(1/2) of the sum cancel on the main path, the
    sqrt(1/2) of the skip path is folded into its weight."""

    def __init__(self, in_channels: int, out_channels: int, input_gain: float = 1.0):
        super().__init__()
        self.conv0 = EqualConv2d(in_channels, in_channels, 3, input_gain=input_gain)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, input_gain=SQRT2)
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, down=True,
                                input_gain=input_gain * math.sqrt(0.5))

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv0(x), LRELU_SLOPE, inplace=True)
        h = F.leaky_relu(self.conv1(h), LRELU_SLOPE, inplace=True)
        return self.skip(x).add_(h)


def minibatch_stddev(x: Tensor, group_size: int = 4) -> Tensor:
    """Append the minibatch standard deviation (over groups of ``gcd(B, group_size)`` samples) as
    one extra feature map."""
    B, C, H, W = x.shape
    g = math.gcd(B, group_size)
    y = x.reshape(g, -1, C, H, W)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean([1, 2, 3])          # (B // g,)
    y = y.reshape(1, -1, 1, 1, 1).expand(g, -1, 1, H, W).reshape(B, 1, H, W)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator with minibatch-stddev and projection conditioning.

    ``D(images, c) -> (B,)`` logits; images in the generator's raw range [-1, 1]. Conditioning is
    NVlabs' ``cmap`` projection: ``out = <h(x), cmap(c)> / sqrt(cmap_dim)`` where h is the last
    layer's ``cmap_dim`` outputs and ``cmap`` a normalised learned embedding of the label.
    """

    def __init__(self, resolution: int = 32, num_classes: int = 10, channels: Optional[Dict[int, int]] = None,
                 channel_base: Optional[int] = None, channel_max: int = 512, image_channels: int = 1,
                 mbstd_group_size: int = 4):
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 4 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 4, got {resolution}")
        self.resolution, self.num_classes, self.mbstd_group_size = resolution, num_classes, mbstd_group_size
        resolutions = [2 ** i for i in range(2, log2 + 1)]
        self.channels = ch = resolve_channels(resolutions, channels, channel_base, channel_max)
        self.config = dict(resolution=resolution, num_classes=num_classes, channels=dict(ch),
                           image_channels=image_channels, mbstd_group_size=mbstd_group_size)
        self.from_rgb = EqualConv2d(image_channels, ch[resolution], 1)
        blocks, gain = [], SQRT2           # the first block reads from_rgb's leaky ReLU (pending sqrt 2)
        for r in reversed(resolutions[1:]):
            blocks.append(DiscriminatorBlock(ch[r], ch[r // 2], input_gain=gain))
            gain = 1.0
        self.blocks = nn.ModuleList(blocks)
        c4 = ch[4]
        self.conv = EqualConv2d(c4 + 1, c4, 3, input_gain=gain)
        self.fc = EqualLinear(c4 * 16, c4, input_gain=SQRT2)
        self.cmap_dim = c4 if num_classes else 1
        self.out = EqualLinear(c4, self.cmap_dim, input_gain=SQRT2)
        self.embed = EqualLinear(num_classes, self.cmap_dim) if num_classes else None

    def forward(self, images: Tensor, c: Label = None) -> Tensor:
        x = F.leaky_relu(self.from_rgb(images), LRELU_SLOPE, inplace=True)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.mbstd_group_size)
        x = F.leaky_relu(self.conv(x), LRELU_SLOPE, inplace=True)
        x = F.leaky_relu(self.fc(x.flatten(1)), LRELU_SLOPE, inplace=True)
        x = self.out(x)
        if self.embed is None:
            return x[:, 0]
        cmap = normalize_2nd_moment(self.embed(as_onehot(c, self.num_classes, x.shape[0], x.device, x.dtype)))
        return (x * cmap).sum(1) / math.sqrt(self.cmap_dim)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
