"""The segmentation and detection models of §3.2 on MNIST scenes, and their metrics.

The paper segments COCO-stuff with DeepLab-v2 and detects objects with a standard detector. On our
64x64 digit scenes (``gatlib.scenes``) these are:

* **segmenter** — a small U-Net (:class:`SmallUNet`, two down / two up stages with skips). The
  torchvision segmentation models (DeepLabV3, LRASPP, FCN) predict at output stride 8–16, i.e. a
  4x4 to 8x8 grid on a 64x64 scene, far too coarse for 2-pixel digit strokes; a U-Net predicts at
  full resolution and trains in minutes on a CPU.
* **detector** — torchvision's FCOS (anchor-free, one stage: its loss is a deterministic function
  of the image, unlike Faster R-CNN's sampled proposals, so attack gradients are not random) on a
  small backbone (a ResNet-18 trunk up to layer3 and a 64-channel FPN, ``weights=None``), at
  ``min_size = max_size = 64`` (torchvision's default 800 would upscale the canvas 12x).

Metrics (torchmetrics): pixel accuracy over all pixels and over foreground (digit) pixels, mean IoU
over the 11 classes (:func:`segmentation_metrics`); mAP@[.5:.95] and AP50 (:func:`detection_metrics`,
``MeanAveragePrecision``).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classifiers import fraction
from .scenes import IGNORE, NUM_CLASSES


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) with ``width``, 2·width, 4·width channels at full, ½ and ¼
    resolution; images in [0, 1] (``in_channels``) → ``num_classes`` logits at full resolution."""

    def __init__(self, in_channels: int = 1, num_classes: int = NUM_CLASSES, width: int = 16):
        super().__init__()
        self.enc1 = _block(in_channels, width)
        self.enc2 = _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = _block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = _block(2 * width, width)
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"SmallUNet needs a height and width divisible by 4, got {tuple(x.shape[-2:])}")
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def detector(num_classes: int = NUM_CLASSES, size: int = 64, fpn_channels: int = 64) -> nn.Module:
    """torchvision FCOS (``weights=None``) at ``min_size = max_size = size`` on a small backbone: a
    ResNet-18 trunk up to ``layer3`` (strides 8 and 16 feed the FPN; ``layer4`` is dropped: at
    64 px it would see 2x2 maps) with torchvision's frozen BatchNorm (an identity from scratch,
    so the attacks cannot move BN statistics), an FPN of ``fpn_channels`` channels plus P6/P7, and
    one anchor size per level for digits of 8–64 pixels. 3.3 M parameters, about 4x faster per
    training step on a CPU than the stock 256-channel ResNet-18 FPN (19 M). Grey images are
    repeated to RGB by the callers (``gatlib.training.DetectionTask``, ``gatlib.attacks.spade``)."""
    from torchvision.models import resnet18
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    from torchvision.ops.misc import FrozenBatchNorm2d

    trunk = resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = BackboneWithFPN(trunk, {"layer2": "0", "layer3": "1"}, [128, 256], fpn_channels,
                               extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
    anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4)
    return FCOS(backbone, num_classes=num_classes, min_size=size, max_size=size, anchor_generator=anchors,
                image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def segmentation_predictions(model: nn.Module, images: Tensor, batch_size: int = 128) -> Tensor:
    """(N, H, W) class maps of a segmenter, in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size])
            logits = logits["out"] if isinstance(logits, dict) else logits
            out.append(logits.argmax(1))
    model.train(was_training)
    return torch.cat(out)


def segmentation_metrics(predictions: Tensor, masks: Tensor, num_classes: int = NUM_CLASSES,
                         ignore_index: int = IGNORE) -> dict:
    """``pixel_accuracy`` (every labelled pixel: the paper's "ratio of correctly predicted pixels"),
    ``foreground_accuracy`` (labelled pixels whose true class is not 0, the MNIST scenes'
    background) and ``miou`` (torchmetrics ``MulticlassJaccardIndex``, macro over the classes
    present). Pixels labelled ``ignore_index`` (unlabelled in COCO-stuff) count nowhere."""
    from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

    if predictions.shape != masks.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and masks {tuple(masks.shape)} differ in shape")
    labelled = masks != ignore_index
    pixel = MulticlassAccuracy(num_classes, average="micro", ignore_index=ignore_index)(predictions, masks).item()
    foreground = labelled & (masks > 0)
    fg = fraction(predictions[foreground] == masks[foreground])   # NaN without foreground
    miou = MulticlassJaccardIndex(num_classes, average="macro", ignore_index=ignore_index)(predictions, masks).item()
    return {"pixel_accuracy": pixel, "foreground_accuracy": fg, "miou": miou}


def detections(model: nn.Module, images: Tensor, batch_size: int = 64) -> list[dict]:
    """A torchvision detector's ``boxes`` / ``scores`` / ``labels`` per image, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            chunk = chunk.repeat(1, 3, 1, 1) if chunk.shape[1] == 1 else chunk
            out.extend({k: v.detach() for k, v in d.items()} for d in model(list(chunk)))
    model.train(was_training)
    return out


def detection_metrics(predicted: list[dict], targets: list[dict]) -> dict:
    """``map`` (mAP@[.5:.95]) and ``map_50`` of torchmetrics' ``MeanAveragePrecision`` (COCO's protocol)."""
    from torchmetrics.detection import MeanAveragePrecision

    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predictions for {len(targets)} targets")
    metric = MeanAveragePrecision(iou_type="bbox")
    metric.update(predicted, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    result = metric.compute()
    return {"map": float(result["map"]), "map_50": float(result["map_50"])}


# ------------------------------------------------------------------------------ paper profile
SEGMENTER_ARCHS = ("deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_mobilenet_v3_large", "fcn_resnet50",
                   "fcn_resnet101", "lraspp_mobilenet_v3_large")
DETECTOR_ARCHS = ("fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                  "ssdlite320_mobilenet_v3_large", "ssd300_vgg16")


def paper_segmenter(arch: str, num_classes: int, path: str | Path) -> nn.Module:
    """A torchvision segmentation model (``weights=None``, ``num_classes`` outputs) filled from the
    user's state dict (strict; an auxiliary head in the file is dropped: only ``out`` is attacked),
    with ImageNet normalisation in front (inputs in [0, 1]); eval mode. The paper's DeepLab-v2 is
    not in torchvision: DeepLab-v3 is its closest relative there."""
    from torchvision.models import segmentation

    from .classifiers import Normalize, load_state_dict_file

    if arch not in SEGMENTER_ARCHS:
        raise ValueError(f"segmenter arch must be one of {', '.join(SEGMENTER_ARCHS)}, got {arch!r}")
    kwargs = {} if arch.startswith("lraspp") else {"aux_loss": False}
    model = getattr(segmentation, arch)(weights=None, weights_backbone=None, num_classes=int(num_classes), **kwargs)
    state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith("aux_classifier.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit torchvision {arch} with {num_classes} classes: {err}") from err
    return nn.Sequential(Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]), model).eval()


def paper_detector(arch: str, num_classes: int, path: str | Path) -> nn.Module:
    """A torchvision detection model (``weights=None``; ``num_classes`` = 91 for COCO's category
    ids) filled from the user's state dict (strict), eval mode; it normalises inputs itself."""
    from torchvision.models import detection

    from .classifiers import load_state_dict_file

    if arch not in DETECTOR_ARCHS:
        raise ValueError(f"detector arch must be one of {', '.join(DETECTOR_ARCHS)}, got {arch!r}")
    model = getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=int(num_classes))
    try:
        model.load_state_dict(load_state_dict_file(path), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit torchvision {arch} with {num_classes} classes: {err}") from err
    return model.eval()
