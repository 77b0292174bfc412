"""SPADE (Park et al., CVPR 2019) in one file, with its modulation parameters γ and β first-class.

GAT (Poursaeed et al., ICCV 2021, §3.2, Figure 2) attacks semantic segmentation and object detection
through a SPADE generator: the image is rendered from a label map, and every SPADE layer modulates
its normalised activations with a per-pixel scale γ and shift β predicted from that label map. The
attack moves **γ and β themselves** (all layers, step 0.001, non-targeted per-pixel loss w.r.t. the
given label map), the way the latent attack of §3.1 moves StyleGAN's styles y and noises η.

The module layout and parameter names follow NVlabs' ``models/networks/generator.py`` and
``normalization.py`` (``SPADEGenerator``, ``SPADEResnetBlock``, ``SPADE``), so that their
``latest_net_G.pth`` state dicts load key for key (:func:`load_nvlabs`)::

    SPADE(x, segmap):   normalized = param_free_norm(x)
                        actv = mlp_shared(resize(segmap))         # conv 3x3 + ReLU, 128 channels
                        γ, β = mlp_gamma(actv), mlp_beta(actv)    # conv 3x3 each
                        out = normalized * (1 + γ) + β

The API makes γ and β tensors the caller owns::

    G = SPADEGenerator(label_nc=11, image_nc=1, ngf=16, crop_size=64, z_dim=32)
    segmap = one_hot(masks, 11)                      # (B, label_nc, H, W)
    mods = G.modulations(segmap)                     # {"head_0.norm_0": (γ, β), ...}, forward order
    raw = G.synthesize(segmap, mods, z)              # approx. in [-1, 1]; γ, β taken from ``mods``
    images = G.to_unit(raw)                          # [0, 1]
    images = G(segmap, z)                            # the same in one call

``mods`` is computed once from the label map and then perturbed: ``synthesize`` never recomputes
γ and β from the map, so a gradient step on them is what changes the image. ``G.layer_names`` lists
the SPADE layers in forward order (``norm_s`` — the learned shortcut's SPADE — comes first in its
block, as NVlabs evaluates it). γ and β of a layer have the shape of the activation they modulate:
``(B, channels, h, w)`` at that block's resolution.

Configurations. ``z_dim > 0``: the first layer maps a Gaussian z to ``16·ngf × sh × sw`` (NVlabs'
``use_vae`` generator, used for our embedded model so that one label map gives many images);
``z_dim = 0``: the first layer is a 3x3 conv of the label map downsampled to ``sh × sw`` (NVlabs'
COCO-stuff model, deterministic given the map). ``num_upsampling_layers``: ``normal`` (5
upsamplings, ``sh = crop_size / 32``), ``more`` (6) or ``most`` (7, adds ``up_4``).
``param_free_norm``: ``batch`` (NVlabs' synchronised BatchNorm without affine parameters; in eval
mode it uses running statistics, so attacks see a fixed function) or ``instance``. ``spectral``:
spectral normalisation on the residual blocks' convolutions (NVlabs' ``spectral…`` norm_G).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import spectral_norm

UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}
Modulations = dict   # {layer name: (gamma, beta)}


def one_hot(masks: Tensor, num_classes: int) -> Tensor:
    """``(B, H, W)`` integer label maps → ``(B, num_classes, H, W)`` float one-hot (SPADE's input)."""
    if masks.ndim != 3:
        raise ValueError(f"label maps must be (B, H, W) integers, got shape {tuple(masks.shape)}")
    if masks.min() < 0 or masks.max() >= num_classes:
        raise ValueError(f"label map values must be in [0, {num_classes}), got [{int(masks.min())}, {int(masks.max())}]")
    return F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``param_free_norm(x) * (1 + γ) + β`` with γ, β from the map."""

    def __init__(self, norm_nc: int, label_nc: int, param_free_norm: str = "batch", hidden: int = 128,
                 kernel_size: int = 3):
        super().__init__()
        if param_free_norm == "batch":
            self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
        elif param_free_norm == "instance":
            self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        else:
            raise ValueError(f"param_free_norm must be 'batch' or 'instance', got {param_free_norm!r}")
        padding = kernel_size // 2
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size, padding=padding), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size, padding=padding)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size, padding=padding)

    def modulation(self, segmap: Tensor, size) -> tuple[Tensor, Tensor]:
        """γ and β for an activation of spatial ``size`` (the map resized with nearest neighbours)."""
        actv = self.mlp_shared(F.interpolate(segmap, size=size, mode="nearest"))
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: Tensor, gamma: Tensor, beta: Tensor) -> Tensor:
        return self.param_free_norm(x) * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
    """NVlabs' residual block: two SPADE → LeakyReLU(0.2) → conv 3x3 units and a shortcut (a SPADE +
    1x1 conv without bias when the channel count changes)."""

    def __init__(self, fin: int, fout: int, label_nc: int, param_free_norm: str = "batch", spectral: bool = True,
                 hidden: int = 128):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        wrap = spectral_norm if spectral else (lambda module: module)
        self.conv_0 = wrap(nn.Conv2d(fin, fmiddle, 3, padding=1))
        self.conv_1 = wrap(nn.Conv2d(fmiddle, fout, 3, padding=1))
        if self.learned_shortcut:
            self.conv_s = wrap(nn.Conv2d(fin, fout, 1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, param_free_norm, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, param_free_norm, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, param_free_norm, hidden)

    def norms(self) -> list[str]:
        """This block's SPADE layers in the order ``forward`` uses them."""
        return (["norm_s"] if self.learned_shortcut else []) + ["norm_0", "norm_1"]

    def forward(self, x: Tensor, mods: Mapping[str, tuple[Tensor, Tensor]]) -> Tensor:
        shortcut = self.conv_s(self.norm_s(x, *mods["norm_s"])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, *mods["norm_0"]), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, *mods["norm_1"]), 0.2))
        return shortcut + dx


class SPADEGenerator(nn.Module):
    """NVlabs' ``SPADEGenerator`` with γ and β exposed (module docstring).

    Args:
        label_nc: channels of the semantic input (classes, + dontcare and instance edges for COCO).
        image_nc: output channels (3 for RGB, 1 for our digit scenes).
        ngf: base width; the blocks have 16, 16, 16, 8, 4, 2, 1 (and ½ for ``most``) × ngf channels.
        crop_size, aspect_ratio: output size (``crop_size`` wide, ``crop_size / aspect_ratio`` high).
        z_dim: 0 = the label-map input layer (COCO model); > 0 = a Gaussian z input (``use_vae``).
        num_upsampling_layers, param_free_norm, spectral: see the module docstring.
        hidden: channels of every SPADE's shared layer (NVlabs: 128; our embedded model: fewer).
    """

    def __init__(self, label_nc: int, image_nc: int = 3, ngf: int = 64, crop_size: int = 256,
                 aspect_ratio: float = 1.0, z_dim: int = 0, num_upsampling_layers: str = "normal",
                 param_free_norm: str = "batch", spectral: bool = True, hidden: int = 128):
        super().__init__()
        if num_upsampling_layers not in UPSAMPLINGS:
            raise ValueError(f"num_upsampling_layers must be one of {list(UPSAMPLINGS)}, got {num_upsampling_layers!r}")
        ups = UPSAMPLINGS[num_upsampling_layers]
        self.sw = crop_size // 2 ** ups
        self.sh = round(self.sw / aspect_ratio)
        if self.sw < 1 or self.sw * 2 ** ups != crop_size:
            raise ValueError(f"crop_size {crop_size} must be a multiple of 2^{ups} for num_upsampling_layers="
                             f"{num_upsampling_layers!r}")
        self.config = dict(label_nc=label_nc, image_nc=image_nc, ngf=ngf, crop_size=crop_size,
                           aspect_ratio=aspect_ratio, z_dim=z_dim, num_upsampling_layers=num_upsampling_layers,
                           param_free_norm=param_free_norm, spectral=spectral, hidden=hidden)
        self.label_nc, self.image_nc, self.z_dim = label_nc, image_nc, z_dim
        nf = ngf
        if z_dim:
            self.fc = nn.Linear(z_dim, 16 * nf * self.sw * self.sh)
        else:
            self.fc = nn.Conv2d(label_nc, 16 * nf, 3, padding=1)
        block = lambda fin, fout: SPADEResnetBlock(fin, fout, label_nc, param_free_norm, spectral, hidden)  # noqa: E731
        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0 = block(16 * nf, 8 * nf)
        self.up_1 = block(8 * nf, 4 * nf)
        self.up_2 = block(4 * nf, 2 * nf)
        self.up_3 = block(2 * nf, 1 * nf)
        final_nc = nf
        if num_upsampling_layers == "most":
            self.up_4 = block(1 * nf, nf // 2)
            final_nc = nf // 2
        self.conv_img = nn.Conv2d(final_nc, image_nc, 3, padding=1)
        # (block name, upsample before it): NVlabs' forward, one entry per residual block
        self._schedule = [("head_0", False), ("G_middle_0", True), ("G_middle_1", ups >= 6),
                          ("up_0", True), ("up_1", True), ("up_2", True), ("up_3", True)]
        if num_upsampling_layers == "most":
            self._schedule.append(("up_4", True))
        self.layer_names = [f"{name}.{norm}" for name, _ in self._schedule for norm in getattr(self, name).norms()]

    @property
    def num_classes(self) -> int:
        return self.label_nc

    # --------------------------------------------------------------------------- resolutions
    def block_sizes(self) -> dict[str, tuple[int, int]]:
        """The activation size ``(h, w)`` at each residual block."""
        sizes, h, w = {}, self.sh, self.sw
        for name, upsample in self._schedule:
            if upsample:
                h, w = 2 * h, 2 * w
            sizes[name] = (h, w)
        return sizes

    def _check_segmap(self, segmap: Tensor) -> None:
        if segmap.ndim != 4 or segmap.shape[1] != self.label_nc:
            raise ValueError(f"segmap must be (B, {self.label_nc}, H, W) (one-hot label maps), got "
                             f"{tuple(segmap.shape)}")

    # --------------------------------------------------------------------------- the API
    def modulations(self, segmap: Tensor) -> Modulations:
        """γ and β of every SPADE layer for the label maps ``segmap``, ``{layer name: (γ, β)}`` in
        forward order (``layer_names``)."""
        self._check_segmap(segmap)
        sizes = self.block_sizes()
        mods = {}
        for name, _ in self._schedule:
            block = getattr(self, name)
            for norm in block.norms():
                mods[f"{name}.{norm}"] = getattr(block, norm).modulation(segmap, sizes[name])
        return mods

    def sample_z(self, batch: int, generator: torch.Generator | None = None) -> Tensor | None:
        if not self.z_dim:
            return None
        return torch.randn(batch, self.z_dim, generator=generator).to(self.conv_img.weight.device)

    def synthesize(self, segmap: Tensor, mods: Modulations, z: Tensor | None = None) -> Tensor:
        """The raw image (approx. [-1, 1]) from γ and β in ``mods`` (never recomputed from the map);
        ``z`` when ``z_dim > 0`` (default: a fresh Gaussian), else the map feeds the first layer."""
        self._check_segmap(segmap)
        missing = set(self.layer_names) - set(mods)
        if missing:
            raise ValueError(f"modulations lack layers {sorted(missing)}")
        if self.z_dim:
            z = self.sample_z(len(segmap)) if z is None else z
            x = self.fc(z).view(-1, 16 * self.config["ngf"], self.sh, self.sw)
        else:
            x = self.fc(F.interpolate(segmap, size=(self.sh, self.sw), mode="nearest"))
        for name, upsample in self._schedule:
            if upsample:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            block = getattr(self, name)
            x = block(x, {norm: mods[f"{name}.{norm}"] for norm in block.norms()})
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))

    def forward(self, segmap: Tensor, z: Tensor | None = None) -> Tensor:
        """Images in [0, 1] for one-hot label maps ``segmap``."""
        return self.to_unit(self.synthesize(segmap, self.modulations(segmap), z))

    @staticmethod
    def to_unit(raw: Tensor) -> Tensor:
        return ((raw + 1) / 2).clamp(0, 1)


# ------------------------------------------------------------------------------- NVlabs files
def _fold_spectral_norm(state: dict) -> dict:
    """``conv.weight_orig`` / ``weight_u`` / ``weight_v`` (torch's spectral-norm parametrisation as
    NVlabs saves it) → a plain ``conv.weight = weight_orig / σ`` with σ = uᵀ W v, what the module
    computes in eval mode."""
    out = {}
    for key, value in state.items():
        if key.endswith(".weight_orig"):
            prefix = key[: -len("weight_orig")]
            u, v = state[prefix + "weight_u"], state[prefix + "weight_v"]
            matrix = value.reshape(value.shape[0], -1)
            sigma = torch.dot(u, matrix @ v)
            out[prefix + "weight"] = value / sigma
        elif key.endswith((".weight_u", ".weight_v")):
            continue
        else:
            out[key] = value
    return out


def config_from_state_dict(state: Mapping[str, Tensor], crop_size: int, aspect_ratio: float = 1.0,
                           num_upsampling_layers: str = "normal") -> dict:
    """The ``SPADEGenerator`` arguments a state dict implies (widths, label channels, z input, norm);
    the output size is not in the file and must be given."""
    state = dict(state)
    if "fc.weight" not in state or "conv_img.weight" not in state:
        raise ValueError("not a SPADE generator state dict: no fc.weight / conv_img.weight")
    fc = state["fc.weight"]
    ngf = state["head_0.norm_0.mlp_gamma.weight"].shape[0] // 16
    label_nc = state["head_0.norm_0.mlp_shared.0.weight"].shape[1]
    most = any(key.startswith("up_4.") for key in state)
    if most:
        num_upsampling_layers = "most"
    return dict(label_nc=label_nc, image_nc=state["conv_img.weight"].shape[0], ngf=ngf, crop_size=crop_size,
                aspect_ratio=aspect_ratio, z_dim=fc.shape[1] if fc.ndim == 2 else 0,
                num_upsampling_layers=num_upsampling_layers,
                param_free_norm="batch" if "head_0.norm_0.param_free_norm.running_mean" in state else "instance",
                spectral=False, hidden=state["head_0.norm_0.mlp_shared.0.weight"].shape[0])   # spectral norm is folded into plain weights on load


def load_nvlabs(path: str | Path, crop_size: int = 256, aspect_ratio: float = 1.0,
                num_upsampling_layers: str = "normal", device="cpu") -> SPADEGenerator:
    """An NVlabs SPADE ``latest_net_G.pth`` (a state dict; read with ``weights_only=True``) as a
    :class:`SPADEGenerator` in eval mode. COCO-stuff's model: ``label_nc = 184`` (182 labels +
    dontcare + instance edges), ``crop_size=256``, ``normal`` upsampling, no z."""
    from ..classifiers import load_state_dict_file   # missing / corrupt / not-tensors errors, "module." stripped

    path = Path(path)
    state = load_state_dict_file(path)
    state = _fold_spectral_norm(state)
    config = config_from_state_dict(state, crop_size, aspect_ratio, num_upsampling_layers)
    G = SPADEGenerator(**config)
    try:
        G.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit a SPADE generator with {config}: {err}") from err
    return G.to(device).eval()
