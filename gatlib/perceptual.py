"""LPIPS-style perceptual distances between images (Zhang et al., CVPR 2018), on any frozen network.

GAT's input-conditioned attack (Poursaeed et al., ICCV 2021, §3.1.1) first embeds a real image I in
the generator by minimising the perceptual distance [19] (LPIPS) between ``g(y, η)`` and I;
Table 2 later measures how far adversarial images lie from clean ones in the same kind of distance.

The distance is LPIPS without the learned linear layer (Zhang et al.'s "lin=False" variant, the
one the StyleGAN2 projector also uses): for every chosen layer ``l`` of a frozen network, take the
feature map ``f_l(x)`` of shape (B, C, H, W), unit-normalise every spatial position along the
channels, and average the squared differences over the positions::

    d(a, b) = sum_l  mean_{h,w}  || f_l(a)_{:,h,w} / ||f_l(a)_{:,h,w}|| - f_l(b)_{:,h,w} / ||f_l(b)_{:,h,w}|| ||^2

Each layer contributes a value in [0, 4] (uniform weights). ``d(x, x) = 0`` and ``d(a, b) = d(b, a)``.

Networks:

* ``PerceptualDistance.from_zoo("oracle-widecnn")`` — the embedded setting: a zoo classifier that is
  *not* the attacked one, its ReLU outputs (WideCNN: 32x32x64, 16x16x128, 8x8x256);
* ``PerceptualDistance.from_torchvision("alexnet" | "vgg16", state_dict_path)`` — the ``paper``
  profile: torchvision's ImageNet networks (``weights=None``) filled from a user-given state dict,
  at the layers LPIPS uses (AlexNet relu1–relu5; VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3),
  with ImageNet normalisation and grey images repeated to three channels.

Every constructor takes images in [0, 1]; the network is frozen (eval mode, no parameter
gradients), but gradients flow to the images, so the distance can be minimised.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision ``model.features`` indices of the ReLUs LPIPS reads (lpips/pretrained_networks.py)
TORCHVISION_LAYERS = {
    "alexnet": ["features.1", "features.4", "features.7", "features.9", "features.11"],   # relu1..relu5
    "vgg16": ["features.3", "features.8", "features.15", "features.22", "features.29"],   # relu1_2..relu5_3
}


class _Stop(Exception):
    """Raised by the hook of the deepest chosen layer: the rest of the network is not needed."""


def unit_normalize(features: Tensor, eps: float = 1e-10) -> Tensor:
    """LPIPS' ``normalize_tensor``: divide every position by its L2 norm over the channels (dim 1)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + eps)


class _ImageNetInput(nn.Module):
    """[0, 1] images → ImageNet-normalised 3-channel images (grey repeated); images larger than
    ``max_size`` are area-downsampled to it first (as the StyleGAN2 projector does before VGG16)."""

    def __init__(self, max_size: int | None = 256):
        super().__init__()
        self.max_size = max_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        elif images.shape[1] != 3:
            raise ValueError(f"ImageNet networks take 1- or 3-channel images, got {images.shape[1]} channels")
        if self.max_size is not None and max(images.shape[-2:]) > self.max_size:
            scale = self.max_size / max(images.shape[-2:])
            size = (max(1, round(images.shape[-2] * scale)), max(1, round(images.shape[-1] * scale)))
            images = F.interpolate(images, size=size, mode="area")
        return (images - self.mean) / self.std


class PerceptualDistance(nn.Module):
    """LPIPS-style distance on the feature maps of ``layers`` of a frozen ``network``.

    Args:
        network: any module taking (B, C, H, W) images (after ``preprocess``); it is frozen here.
        layers: names of its submodules (``network.named_modules()``) whose outputs are compared.
        preprocess: optional module applied to the [0, 1] images before ``network``.
        in_channels: the image channels this distance accepts (None = any).
        name: a label for reports.
        eps: LPIPS' epsilon in the channel normalisation.

    ``forward(a, b)`` returns the (B,) distances of paired images in [0, 1]; ``features(x)`` the
    unit-normalised feature maps.
    """

    def __init__(self, network: nn.Module, layers: Sequence[str], preprocess: nn.Module | None = None,
                 in_channels: int | None = None, name: str = "perceptual", eps: float = 1e-10):
        super().__init__()
        if not layers:
            raise ValueError("a perceptual distance needs at least one layer")
        modules = dict(network.named_modules())
        missing = [layer for layer in layers if layer not in modules]
        if missing:
            raise ValueError(f"{name}: the network has no submodules {missing}; "
                             f"it has e.g. {[n for n in list(modules)[1:12]]}")
        order = {module_name: index for index, module_name in enumerate(modules)}
        self.layers = sorted(layers, key=order.__getitem__)     # network order: the last one stops the pass
        self.network = network.eval().requires_grad_(False)
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.in_channels, self.name, self.eps = in_channels, name, eps
        self._captured: list[Tensor] | None = None
        for layer in self.layers:
            modules[layer].register_forward_hook(self._hook(layer == self.layers[-1]))

    def _hook(self, last: bool) -> Callable:
        def hook(module, inputs, output):
            if self._captured is not None:
                self._captured.append(output)
                if last:
                    raise _Stop
        return hook

    def train(self, mode: bool = True):
        """The network stays in eval mode (frozen BatchNorm / dropout), whatever the caller asks."""
        super().train(mode)
        self.network.eval()
        return self

    def _check(self, images: Tensor, which: str) -> None:
        if images.ndim != 4:
            raise ValueError(f"{self.name}: {which} must be (B, C, H, W) images, got shape {tuple(images.shape)}")
        if self.in_channels is not None and images.shape[1] != self.in_channels:
            raise ValueError(f"{self.name}: {which} has {images.shape[1]} channels, this distance takes "
                             f"{self.in_channels}")

    def features(self, images: Tensor) -> list[Tensor]:
        """Unit-normalised feature maps of every chosen layer (vectors become (B, C, 1, 1))."""
        self._check(images, "images")
        self._captured = []
        try:
            self.network(self.preprocess(images))
        except _Stop:
            pass
        finally:
            captured, self._captured = self._captured, None
        if len(captured) != len(self.layers):
            raise RuntimeError(f"{self.name}: captured {len(captured)} feature maps, expected {len(self.layers)} "
                               "(a chosen layer is not used by the network's forward, or used twice)")
        out = []
        for feature in captured:
            if feature.ndim == 2:
                feature = feature[:, :, None, None]
            out.append(unit_normalize(feature, self.eps))
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Distances between the paired images ``a[i]``, ``b[i]`` (both in [0, 1]): shape (B,)."""
        self._check(a, "a")
        self._check(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"{self.name}: paired images need the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        both = self.features(torch.cat([a, b]))
        batch = len(a)
        return sum((f[:batch] - f[batch:]).square().sum(dim=1).mean(dim=(1, 2)) for f in both)

    def to_features(self, a: Tensor, features_b: list[Tensor]) -> Tensor:
        """``forward(a, b)`` with ``features_b = self.features(b)`` computed once beforehand (for a
        fixed target such as the image a projection reproduces): shape (B,)."""
        features_a = self.features(a)
        if len(features_b) != len(features_a) or any(fa.shape != fb.shape for fa, fb in zip(features_a, features_b)):
            raise ValueError(f"{self.name}: the given features do not match those of images of shape {tuple(a.shape)}")
        return sum((fa - fb).square().sum(dim=1).mean(dim=(1, 2)) for fa, fb in zip(features_a, features_b))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, layers={self.layers}"

    # ------------------------------------------------------------------------ constructors
    @classmethod
    def from_zoo(cls, name: str = "oracle-widecnn", device: str | torch.device = "cpu",
                 layers: Sequence[str] | None = None) -> "PerceptualDistance":
        """A zoo classifier's ReLU outputs (those inside its ``features`` stack when it has one, e.g.
        WideCNN's three conv stages; an MLP's hidden layers otherwise). Pick a classifier that is
        not the attacked one, so that the projection does not optimise against F's own features."""
        from . import zoo

        network = zoo.load(name, device=device)
        if layers is None:
            root = network.features if hasattr(network, "features") else network
            prefix = "features." if hasattr(network, "features") else ""
            layers = [prefix + n for n, m in root.named_modules() if isinstance(m, nn.ReLU)]
        in_channels = getattr(getattr(network, "normalize", None), "mean", torch.empty(1, 1)).shape[1]
        return cls(network, layers, in_channels=in_channels, name=name).to(device)

    @classmethod
    def from_torchvision(cls, arch: str, state_dict_path: str | Path | None, device: str | torch.device = "cpu",
                         max_size: int | None = 256) -> "PerceptualDistance":
        """LPIPS' backbone: torchvision ``alexnet`` or ``vgg16`` (``weights=None``), filled from the
        user's ImageNet state dict (the full model's, or one holding only ``features.*``), at the
        ReLUs LPIPS reads. Images larger than ``max_size`` are area-downsampled to it first (NVlabs'
        projector: 256; None keeps every size). ``None`` as the path leaves the network random
        (only for tests)."""
        import torchvision.models as models

        from .classifiers import load_state_dict_file

        if arch not in TORCHVISION_LAYERS:
            raise ValueError(f"perceptual network must be one of {list(TORCHVISION_LAYERS)}, got {arch!r}")
        net = getattr(models, arch)(weights=None)
        if state_dict_path is not None:
            state = load_state_dict_file(state_dict_path)
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as err:   # tensors of the wrong shape
                raise ValueError(f"{state_dict_path} does not fit torchvision {arch}: {err}") from err
            missing = [k for k in missing if k.startswith("features.")]
            if missing or unexpected:
                raise ValueError(f"{state_dict_path} does not fit torchvision {arch}: missing {missing[:5]}, "
                                 f"unexpected {unexpected[:5]}")
        network = nn.Sequential()
        network.add_module("features", net.features)   # the classifier head is never run
        return cls(network, TORCHVISION_LAYERS[arch], preprocess=_ImageNetInput(max_size), name=arch).to(device)


def build(network: str, weights: str | Path | None = None, device: str | torch.device = "cpu") -> PerceptualDistance:
    """The distance a chapter's parameters ask for: ``alexnet``/``vgg16`` (with ``weights``, the path
    of their state dict) or the name of a zoo classifier."""
    if network in TORCHVISION_LAYERS:
        if not weights:
            raise ValueError(f"perceptual network {network!r} needs the path of its ImageNet state dict "
                             "(parameter perceptual_weights)")
        return PerceptualDistance.from_torchvision(network, weights, device=device)
    return PerceptualDistance.from_zoo(network, device=device)
