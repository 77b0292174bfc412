"""COCO-stuff scenes for chapter 07's ``paper`` profile: the label maps, images and boxes of the
paper's segmentation and detection experiments (§3.2, Figure 5), read from the user's files into
the same ``gatlib.scenes.SceneSet`` the embedded MNIST scenes use.

The files are those NVlabs' SPADE repository evaluates on (``datasets/coco_stuff/``):

* ``val_label/<name>.png`` — one class id per pixel, 0–181 (COCO-stuff's 182 classes, 0-indexed:
  ids 0–90 are the "thing" classes, COCO category ``id + 1``; 91–181 are "stuff"), 255 unlabelled;
* ``val_img/<name>.jpg`` — the photographs (the Clean column scores them);
* ``val_inst/<name>.png`` — instance ids per pixel (optional): SPADE's COCO-stuff generator takes
  their edges as an input channel, and the detection boxes come from them.

A scene's boxes are the tight boxes of its thing instances, labelled with the COCO category id
(torchvision's detectors' convention); an instance's class is the majority class of its pixels.
Everything is resized to ``size`` x ``size`` (nearest for labels and instances), as NVlabs' test
setting does (``--load_size 256 --crop_size 256``).

NVlabs' generator input (``nvlabs_input``): the one-hot label map with a "dontcare" channel for
the unlabelled pixels (``--contain_dontcare_label``) and the instance-edge map as the last channel:
184 channels for COCO-stuff.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .scenes import IGNORE, SceneSet

COCO_STUFF_CLASSES = 182
THING_CLASSES = 91          # ids 0–90 (some unused by COCO): detection targets, category id = class + 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def instance_edges(instances: torch.Tensor) -> torch.Tensor:
    """NVlabs' ``get_edges``: a pixel is an edge when a 4-neighbour has another instance id.
    ``instances`` (N, H, W) integers → (N, H, W) bool."""
    edges = torch.zeros_like(instances, dtype=torch.bool)
    horizontal = instances[:, :, 1:] != instances[:, :, :-1]
    vertical = instances[:, 1:, :] != instances[:, :-1, :]
    edges[:, :, 1:] |= horizontal
    edges[:, :, :-1] |= horizontal
    edges[:, 1:, :] |= vertical
    edges[:, :-1, :] |= vertical
    return edges


def nvlabs_input(masks: torch.Tensor, edges: torch.Tensor, label_nc: int) -> torch.Tensor:
    """SPADE's input for a generator with ``label_nc`` input channels = classes + dontcare + edge
    (184 for COCO-stuff): unlabelled pixels (``IGNORE``) go to the dontcare channel."""
    from .generators.spade import one_hot

    classes = label_nc - 2
    if classes < 1:
        raise ValueError(f"a generator with {label_nc} input channels has no room for classes, dontcare and edges")
    labels = masks.long().clone()
    labels[labels == IGNORE] = classes
    if labels.min() < 0 or labels.max() > classes:
        raise ValueError(f"label maps hold class ids up to {int(masks[masks != IGNORE].max())}, but the generator "
                         f"takes {classes} classes (+ dontcare + edges = {label_nc} channels)")
    return torch.cat([one_hot(labels, classes + 1), edges[:, None].float()], 1)


def _read(path: Path, size: int, mode: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as image:
            if mode == "RGB":
                image = image.convert("RGB").resize((size, size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255
            if image.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{path}: a label or instance map must be a single-channel PNG, got mode {image.mode}")
            image = image.resize((size, size), Image.NEAREST)
            return torch.from_numpy(np.asarray(image).astype("int64"))
    except OSError as err:
        raise ValueError(f"{path} is not a readable image: {err}") from err


def _boxes(mask: torch.Tensor, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, labels = [], []
    for instance in torch.unique(instances).tolist():
        pixels = instances == instance
        classes = mask[pixels]
        classes = classes[classes != IGNORE]
        if len(classes) == 0:
            continue
        label = int(torch.mode(classes).values)
        if label >= THING_CLASSES:
            continue
        rows = torch.nonzero(pixels.any(1)).flatten()
        cols = torch.nonzero(pixels.any(0)).flatten()
        boxes.append([int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1])
        labels.append(label + 1)
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), torch.tensor(labels, dtype=torch.long)


def load_scenes(label_dir: str | Path, image_dir: str | Path, inst_dir: str | Path | None = None, *,
                count: int = 0, size: int = 256, seed: int = 0) -> SceneSet:
    """COCO-stuff scenes (module docstring): ``count`` seeded random label maps of ``label_dir``
    (0 = all) with their images and, when ``inst_dir`` is given, instance edges and boxes (without
    it the edge channel is zero and there are no boxes: detection cannot be scored)."""
    label_dir, image_dir = Path(label_dir), Path(image_dir)
    for folder, what in ((label_dir, "label_dir"), (image_dir, "image_dir")):
        if not folder.is_dir():
            raise FileNotFoundError(f"COCO-stuff {what} {folder} is not a folder")
    if inst_dir is not None and not Path(inst_dir).is_dir():
        raise FileNotFoundError(f"COCO-stuff inst_dir {inst_dir} is not a folder")
    labels = sorted(label_dir.glob("*.png"))
    if not labels:
        raise FileNotFoundError(f"no label maps (*.png) in {label_dir}")
    if 0 < count < len(labels):
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count]
        labels = [labels[i] for i in sorted(order.tolist())]
    images, masks, edges, all_boxes, all_labels = [], [], [], [], []
    for label_path in labels:
        image_path = next((image_dir / (label_path.stem + suffix) for suffix in IMAGE_SUFFIXES
                           if (image_dir / (label_path.stem + suffix)).is_file()), None)
        if image_path is None:
            raise FileNotFoundError(f"no image for label map {label_path.name} in {image_dir} "
                                    f"(looked for {label_path.stem} with {', '.join(IMAGE_SUFFIXES)})")
        mask = _read(label_path, size, "L")
        bad = (mask >= COCO_STUFF_CLASSES) & (mask != IGNORE)
        if bad.any():
            raise ValueError(f"{label_path}: class ids must be 0-{COCO_STUFF_CLASSES - 1} or {IGNORE}, "
                             f"found {sorted(set(mask[bad].tolist()))[:5]}")
        images.append(_read(image_path, size, "RGB"))
        masks.append(mask)
        if inst_dir is not None:
            inst_path = Path(inst_dir) / label_path.name
            if not inst_path.is_file():
                raise FileNotFoundError(f"no instance map {inst_path} for label map {label_path.name}")
            instances = _read(inst_path, size, "L")
            edges.append(instance_edges(instances[None])[0])
            boxes, box_labels = _boxes(mask, instances)
        else:
            edges.append(torch.zeros(size, size, dtype=torch.bool))
            boxes, box_labels = torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)
        all_boxes.append(boxes)
        all_labels.append(box_labels)
    return SceneSet(torch.stack(images), torch.stack(masks), all_boxes, all_labels, name=f"coco-stuff/{label_dir.name}",
                    num_classes=COCO_STUFF_CLASSES, headline="pixel_accuracy", edges=torch.stack(edges))
