"""MNIST scenes: the embedded stand-in for COCO-stuff in the segmentation and detection experiments
(GAT, Poursaeed et al., ICCV 2021, §3.2 and Table 1's segmentation / detection columns).

The paper attacks SPADE {park2019semantic} images made from COCO-stuff label maps, segmented by
DeepLab-v2 and detected by a detector. Neither COCO nor a pretrained SPADE installs here, so we
build scenes from **real** digits: a ``canvas``x``canvas`` black canvas holding 1 to
``max_digits`` MNIST digits (or optdigits, the out-of-domain variant), each pasted at a random
position so that no two digits' boxes overlap by more than ``max_overlap`` of the smaller box.

What is derived, not annotated (say so wherever these numbers appear):

* the **label map** (``masks``, ``(N, H, W)`` long): class 0 is background, class ``d + 1`` is
  digit ``d``, at every pixel where that digit's intensity is above ``threshold`` (0.5); where two
  digits meet, the brighter pixel's digit wins (the canvas is the pixel-wise maximum of the digits);
* the **boxes** (``boxes[i]``, ``(n, 4)`` float ``x1, y1, x2, y2`` in pixels, torchvision's
  convention with ``x2, y2`` exclusive): the tight box of each digit's thresholded pixels, and its
  ``labels[i]`` the digit class ``d + 1`` (0 is background for the segmenter; the detectors get
  ``num_classes = 11`` and never see label 0).

Scenes are deterministic in ``seed``; ``split`` picks the source digits (MNIST ``train`` / ``valid``
/ ``test``, optdigits ``test``), so train and test scenes never share a digit image.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.utils.data import Dataset

from . import data

NUM_CLASSES = 11            # background + 10 digits
BACKGROUND = 0
IGNORE = 255                # label-map value of unlabelled pixels (COCO-stuff's convention): no loss, no score
SOURCES = ("mnist", "optdigits")


@dataclass
class SceneSet(Dataset):
    """Scenes in memory: ``images`` (N, C, H, W) in [0, 1] (C = 1 for MNIST scenes, 3 for
    COCO-stuff), ``masks`` (N, H, W) long class ids (``IGNORE`` = unlabelled), ``boxes`` and
    ``labels`` (lists of per-scene tensors). Item ``i`` is ``(image, target)`` with
    ``target = {"masks": (H, W), "boxes": (n, 4), "labels": (n,)}`` — torchvision's detection
    target plus the label map.

    ``num_classes``: the segmentation classes; ``headline``: the segmentation metric the chapters
    report (``foreground_accuracy`` for MNIST scenes, whose background is ~93 % of the pixels —
    digits are 6.7 %, chapter 07's recorded ``scenes.foreground_fraction`` on its 100 test scenes;
    ``pixel_accuracy``, the paper's "ratio of correctly predicted pixels", for COCO-stuff);
    ``edges``: NVlabs' instance-edge maps (N, H, W), which a COCO-stuff SPADE takes as one more
    input channel (``segmap``)."""

    images: torch.Tensor
    masks: torch.Tensor
    boxes: list
    labels: list
    name: str = "scenes"
    num_classes: int = NUM_CLASSES
    headline: str = "foreground_accuracy"
    edges: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise ValueError(f"{self.name}: images must be (N, 1 or 3, H, W), got {tuple(self.images.shape)}")
        if self.masks.shape != (len(self.images), *self.images.shape[2:]):
            raise ValueError(f"{self.name}: masks must be (N, H, W) = {(len(self.images), *self.images.shape[2:])}, "
                             f"got {tuple(self.masks.shape)}")
        if not (len(self.boxes) == len(self.labels) == len(self.images)):
            raise ValueError(f"{self.name}: {len(self.images)} images, {len(self.boxes)} box sets and "
                             f"{len(self.labels)} label sets")
        if self.edges is not None and self.edges.shape != self.masks.shape:
            raise ValueError(f"{self.name}: edges must have the masks' shape {tuple(self.masks.shape)}, "
                             f"got {tuple(self.edges.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], {"masks": self.masks[index], "boxes": self.boxes[index],
                                    "labels": self.labels[index]}

    def subset(self, count: int) -> "SceneSet":
        """The first ``count`` scenes (scenes are already in random order); 0 keeps all."""
        if count <= 0 or count >= len(self):
            return self
        return replace(self, images=self.images[:count], masks=self.masks[:count], boxes=self.boxes[:count],
                       labels=self.labels[:count], name=f"{self.name}[{count}]",
                       edges=None if self.edges is None else self.edges[:count])

    def targets(self, indices=None) -> list[dict]:
        """Detection targets (``boxes``, ``labels``) of the scenes ``indices`` (all by default)."""
        indices = range(len(self)) if indices is None else indices
        return [{"boxes": self.boxes[i], "labels": self.labels[i]} for i in indices]

    def segmap(self, indices, label_nc: int) -> torch.Tensor:
        """The SPADE generator's input for the scenes ``indices``: the one-hot label maps, or, for
        scenes with ``edges`` (COCO-stuff), NVlabs' encoding (``gatlib.coco_stuff.nvlabs_input``)."""
        from .generators.spade import one_hot

        masks = self.masks[indices]
        if self.edges is None:
            return one_hot(masks, label_nc)
        from .coco_stuff import nvlabs_input

        return nvlabs_input(masks, self.edges[indices], label_nc)


def collate(batch):
    """``DataLoader`` collate for scenes: stacked images and masks, lists of boxes and labels."""
    images = torch.stack([image for image, _ in batch])
    masks = torch.stack([target["masks"] for _, target in batch])
    return images, masks, [target["boxes"] for _, target in batch], [target["labels"] for _, target in batch]


def _digit_crops(digits: torch.Tensor, threshold: float) -> list[torch.Tensor]:
    """Each 32x32 digit cut to the tight box of its pixels above ``threshold`` (plus the faint
    anti-aliased rim around it, so pasted digits keep their edges)."""
    crops = []
    for digit in digits[:, 0]:
        rows = torch.nonzero((digit > threshold).any(1)).flatten()
        cols = torch.nonzero((digit > threshold).any(0)).flatten()
        if len(rows) == 0:
            crops.append(None)
            continue
        top, bottom = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, digit.shape[0])
        left, right = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, digit.shape[1])
        crops.append(digit[top:bottom, left:right])
    return crops


def _overlap(box: tuple, other: tuple) -> float:
    """Intersection of two (x1, y1, x2, y2) boxes over the smaller one's area."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
    return width * height / smaller


def make_scenes(count: int, split: str = "train", seed: int = 0, source: str = "mnist", canvas: int = 64,
                max_digits: int = 4, max_overlap: float = 0.1, threshold: float = 0.5,
                max_tries: int = 50) -> SceneSet:
    """``count`` scenes of ``1..max_digits`` real digits of ``source``'s ``split`` (module docstring).

    A digit that finds no place within ``max_tries`` random positions is left out, so a scene may
    hold fewer digits than drawn (never zero)."""
    if source not in SOURCES:
        raise ValueError(f"scene source must be one of {SOURCES}, got {source!r}")
    if count < 1 or max_digits < 1 or canvas < 32:
        raise ValueError(f"need count >= 1, max_digits >= 1 and canvas >= 32, got {count}, {max_digits}, {canvas}")
    if not 0 <= max_overlap < 1 or not 0 < threshold < 1:
        raise ValueError(f"max_overlap must be in [0, 1) and threshold in (0, 1), got {max_overlap}, {threshold}")
    digits = data.mnist(split) if source == "mnist" else data.optdigits(split)
    rng = torch.Generator().manual_seed(int(seed))
    crops = _digit_crops(digits.images, threshold)
    usable = torch.tensor([crop is not None for crop in crops])
    pool = torch.nonzero(usable).flatten()

    images = torch.zeros(count, 1, canvas, canvas)
    masks = torch.zeros(count, canvas, canvas, dtype=torch.long)
    all_boxes, all_labels = [], []
    for scene in range(count):
        wanted = int(torch.randint(1, max_digits + 1, (1,), generator=rng))
        picks = pool[torch.randint(len(pool), (wanted,), generator=rng)]
        placed, labels = [], []
        brightness = torch.zeros(canvas, canvas)
        for index in picks.tolist():
            crop = crops[index]
            height, width = crop.shape
            for _ in range(max_tries):
                top = int(torch.randint(0, canvas - height + 1, (1,), generator=rng))
                left = int(torch.randint(0, canvas - width + 1, (1,), generator=rng))
                box = (left, top, left + width, top + height)
                if all(_overlap(box, other) <= max_overlap for other in placed):
                    break
            else:
                continue
            region = brightness[top:top + height, left:left + width]
            wins = (crop > threshold) & (crop >= region)
            masks[scene, top:top + height, left:left + width][wins] = int(digits.labels[index]) + 1
            brightness[top:top + height, left:left + width] = torch.maximum(region, crop)
            placed.append(box)
            labels.append(int(digits.labels[index]) + 1)
        images[scene, 0] = brightness
        boxes = []
        for box, label in zip(placed, labels):
            # the tight box of what is left of this digit's label pixels (a neighbour may cover a rim)
            left, top, right, bottom = box
            own = masks[scene, top:bottom, left:right] == label
            rows = torch.nonzero(own.any(1)).flatten()
            cols = torch.nonzero(own.any(0)).flatten()
            if len(rows) == 0:
                rows, cols = torch.tensor([0, bottom - top - 1]), torch.tensor([0, right - left - 1])
            boxes.append([left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1])
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        all_labels.append(torch.tensor(labels, dtype=torch.long))
    return SceneSet(images, masks, all_boxes, all_labels, name=f"{source}-scenes/{split}")
