"""Classifiers: the one we attack, the independent ones we never attack, and the paper's.

* ``SmallCNN`` — the attacked classifier F of the embedded setting: a small CNN with BatchNorm for
  32x32 digits (BatchNorm matters later for AdvProp's split batch norms). Trained on several seeds.
* Label oracles — classifiers of *other* architectures and seeds that are never attacked; later
  chapters use them as the machine analogue of the paper's human raters (§4.2): ``MLP``,
  ``WideCNN`` (no BatchNorm, wider, dropout) and torchvision's ShuffleNetV2 (``weights=None``).
* ``paper_classifier`` — torchvision ``inception_v3`` / ``resnet50`` built with ``weights=None`` and
  filled from a user-given state dict (``torch.load(weights_only=True)``), for the ``paper`` profile.

Every model takes images in [0, 1] (``(N, C, H, W)``) and returns logits; normalisation, if any,
is inside the model so that attacks always work in image space.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import IMAGE_SIZE, NUM_CLASSES

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


class Normalize(nn.Module):
    """Subtract mean / divide by std inside the model, so attacks see [0, 1] images."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images):
        return (images - self.mean) / self.std


def _conv_bn(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """The attacked classifier: 5 conv+BN+ReLU layers (32-32-64-64-128), 3 max-pools, 2 linear layers."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 1):
        super().__init__()
        self.normalize = Normalize([MNIST_MEAN] * in_channels, [MNIST_STD] * in_channels)
        self.features = nn.Sequential(
            _conv_bn(in_channels, 32), _conv_bn(32, 32), nn.MaxPool2d(2),   # 16x16
            _conv_bn(32, 64), _conv_bn(64, 64), nn.MaxPool2d(2),            # 8x8
            _conv_bn(64, 128), nn.MaxPool2d(2),                              # 4x4
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(128 * 4 * 4, 128), nn.ReLU(inplace=True),
                                  nn.Dropout(0.2), nn.Linear(128, num_classes))

    def forward(self, images):
        return self.head(self.features(self.normalize(images)))

    def embed(self, images):
        """Penultimate features (for Fréchet distances, t-SNE)."""
        return self.head[:3](self.features(self.normalize(images)))


class MLP(nn.Module):
    """A label oracle with no convolution at all: 1024-512-256-10."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_pixels: int = IMAGE_SIZE * IMAGE_SIZE):
        super().__init__()
        self.normalize = Normalize([MNIST_MEAN], [MNIST_STD])
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_pixels, 512), nn.ReLU(inplace=True), nn.Dropout(0.2),
                                  nn.Linear(512, 256), nn.ReLU(inplace=True))
        self.out = nn.Linear(256, num_classes)

    def forward(self, images):
        return self.out(self.body(self.normalize(images)))

    def embed(self, images):
        return self.body(self.normalize(images))


class WideCNN(nn.Module):
    """A label oracle: a wider CNN without BatchNorm (64-128-256 channels, dropout)."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.normalize = Normalize([MNIST_MEAN], [MNIST_STD])
        self.features = nn.Sequential(
            nn.Conv2d(1, 64, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),     # 16x16
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),   # 8x8
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(2),
        )
        self.body = nn.Sequential(nn.Flatten(), nn.Dropout(0.3), nn.Linear(256 * 4, 256), nn.ReLU(inplace=True))
        self.out = nn.Linear(256, num_classes)

    def forward(self, images):
        return self.out(self.body(self.features(self.normalize(images))))

    def embed(self, images):
        return self.body(self.features(self.normalize(images)))


class TorchvisionDigits(nn.Module):
    """A torchvision ImageNet architecture (``weights=None``) on digits: grey → 3 channels,
    upsampled to ``input_size`` so the network's 32x downsampling leaves a spatial map."""

    def __init__(self, arch: str = "shufflenet_v2_x0_5", num_classes: int = NUM_CLASSES, input_size: int = 64):
        super().__init__()
        import torchvision.models as models

        self.arch, self.input_size = arch, input_size
        self.normalize = Normalize([MNIST_MEAN], [MNIST_STD])
        self.net = getattr(models, arch)(weights=None, num_classes=num_classes)

    def forward(self, images):
        images = F.interpolate(self.normalize(images), size=self.input_size, mode="bilinear", align_corners=False)
        return self.net(images.expand(-1, 3, -1, -1))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "small_cnn": SmallCNN,
    "mlp": MLP,
    "wide_cnn": WideCNN,
    "shufflenet": lambda: TorchvisionDigits("shufflenet_v2_x0_5"),
}


def build(arch: str) -> nn.Module:
    """A fresh, randomly initialised digit classifier by architecture name."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown classifier architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]()


# ----------------------------------------------------------------------------- evaluation
#: Images per forward pass when only predictions are needed. On a 2-core CPU, SmallCNN reads the
#: 10,000 MNIST test digits in 0.69 of the time in batches of 128 as in batches of 1,000 (6.8 s
#: against 9.9 s, ``benchmarks/bench_predict.py``; the activations of a small batch stay in cache).
#: Predictions do not depend on it (eval mode).
PREDICT_BATCH = 128


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = PREDICT_BATCH, device=None) -> torch.Tensor:
    """Predicted classes for a tensor of images (the model is put in eval mode)."""
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    if device is None:   # a model without parameters or buffers (a k-NN oracle) runs on the CPU
        device = next(iter(model.parameters()), next(iter(model.buffers()), torch.empty(0))).device
    model.eval()
    out = [model(images[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def fraction(hits: torch.Tensor) -> float:
    """The share of true entries of a boolean tensor, as a ratio of counts (``hits.sum() / hits.numel()``
    in integers). Not a float32 mean: a float32 mean of 120 booleans is off by ~1e-8, so two rows with
    equal counts could round apart (31.25 % as 31.2 in one row and 31.3 in the next). NaN when empty."""
    total = hits.numel()
    return int(hits.sum()) / total if total else float("nan")


def accuracy(model: nn.Module, dataset, batch_size: int = PREDICT_BATCH, device=None) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of ``model`` on a ``DigitDataset`` (tensors in memory)
    or any map-style dataset of ``(image, label)`` pairs such as a paper-profile ImageFolder."""
    from .attacks.base import positive_int, validate_inputs

    batch_size = positive_int(batch_size, "batch_size")

    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        validate_inputs(dataset.images, dataset.labels, "accuracy")
        predictions = predict(model, dataset.images, batch_size=batch_size, device=device)
        return fraction(predictions == dataset.labels)
    from torch.utils.data import DataLoader

    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=min(batch_size, 64), num_workers=2):
        validate_inputs(images, labels, "accuracy")
        correct += (predict(model, images, batch_size=len(images), device=device) == labels).sum().item()
        total += len(labels)
    if total == 0:
        raise ValueError(f"cannot measure accuracy on an empty dataset ({dataset!r})")
    return correct / total


def accuracy_table(models: dict, datasets: dict, device=None):
    """Accuracy of every model on every dataset: a ``pandas.DataFrame`` with one row per
    (model, dataset), column ``accuracy`` as a fraction. Table 3 is this table."""
    import pandas as pd

    rows = [{"model": model_name, "dataset": data_name, "accuracy": accuracy(model, dataset, device=device)}
            for model_name, model in models.items() for data_name, dataset in datasets.items()]
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- paper profile
def _unwrap_state_dict(obj, path) -> dict:
    """Accept a bare state dict or the usual wrappers ({'state_dict': ...}, {'model': ...}); strip
    the ``module.`` prefix that DataParallel checkpoints carry."""
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_dict_file(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` with clear errors for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated / foreign files
        raise ValueError(f"checkpoint {path} could not be loaded as a weights-only PyTorch file: {err}") from err
    return _unwrap_state_dict(obj, path)


PAPER_ARCHS = ("inception_v3", "resnet50", "resnet18", "resnet18_cifar")


def paper_classifier(arch: str, num_classes: int, state_dict_path: str | Path | None = None) -> nn.Module:
    """torchvision ``inception_v3``, ``resnet50``, ``resnet18`` or ``resnet18_cifar`` (``weights=None``)
    for the ``paper`` profile, with ImageNet normalisation inside; filled from ``state_dict_path``
    when given (strict loading). ``resnet18_cifar`` is torchvision's ResNet-18 with the usual 32 px
    stem (a 3x3 stride-1 first convolution, no max-pool; the same state-dict keys): the plain
    ImageNet stem shrinks a 32 px image to 8 px before the first block and costs CIFAR-10 accuracy."""
    import torchvision.models as models

    if arch == "inception_v3":
        net = models.inception_v3(weights=None, num_classes=num_classes, aux_logits=False, init_weights=False)
    elif arch in ("resnet50", "resnet18"):
        net = getattr(models, arch)(weights=None, num_classes=num_classes)
    elif arch == "resnet18_cifar":
        net = models.resnet18(weights=None, num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    else:
        raise ValueError(f"paper classifier must be one of {', '.join(PAPER_ARCHS)}, got {arch!r}")
    if state_dict_path is not None:
        state = load_state_dict_file(state_dict_path)
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}  # we build without the aux head
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{state_dict_path} does not fit torchvision {arch} with {num_classes} classes: {err}") from err
    return nn.Sequential(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), net)


def save_paper_classifier(model: nn.Module, path: str | Path) -> Path:
    """Save a ``paper_classifier`` model as the torchvision state dict ``paper_classifier`` reads back
    (the normalisation in front holds no weights), atomically: a run stopped mid-write keeps the old file."""
    from .resumable import save_atomic

    if not (isinstance(model, nn.Sequential) and isinstance(model[0], Normalize)):
        raise TypeError("save_paper_classifier expects a model built by classifiers.paper_classifier")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({k: v.detach().cpu() for k, v in model[1].state_dict().items()}, path)
    return path


def chapter_classifier(name: str, arch: str, num_classes: int, path: str | Path = "", device="cpu") -> nn.Module:
    """A chapter's attacked classifier F, in eval mode: the user's state dict at ``path`` in torchvision
    ``arch`` with ``num_classes`` outputs (the ``paper`` profile) when a path is given, else the zoo
    model ``name`` (its bytes checked against the manifest)."""
    from . import zoo

    if path:
        return paper_classifier(arch, int(num_classes), path).to(device).eval()
    if not name:
        raise ValueError("no classifier: give classifier_path (a state dict, with classifier_arch and num_classes) "
                         "or classifier_name (a zoo model)")
    return zoo.load(name, device=device)
