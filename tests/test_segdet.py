"""Segmenter, detector and their metrics on MNIST scenes (gatlib.segdet)."""
import pytest
import torch

from gatlib import scenes, segdet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene_set():
    return scenes.make_scenes(8, "test", seed=2)


def test_unet_predicts_every_pixel_and_refuses_odd_sizes():
    model = segdet.SmallUNet(width=4)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 11, 64, 64)
    with pytest.raises(ValueError, match="divisible by 4"):
        model(torch.rand(1, 1, 62, 62))


def test_segmentation_metrics_on_known_answers(scene_set):
    masks = scene_set.masks
    perfect = segdet.segmentation_metrics(masks.clone(), masks)
    assert perfect == {"pixel_accuracy": 1.0, "foreground_accuracy": 1.0, "miou": pytest.approx(1.0)}
    background = segdet.segmentation_metrics(torch.zeros_like(masks), masks)
    assert background["foreground_accuracy"] == 0.0
    assert background["pixel_accuracy"] == pytest.approx((masks == 0).float().mean().item())
    with pytest.raises(ValueError, match="differ in shape"):
        segdet.segmentation_metrics(masks[:2], masks)


def test_detection_metrics_on_known_answers(scene_set):
    targets = scene_set.targets()
    exact = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))} for t in targets]
    assert segdet.detection_metrics(exact, targets) == {"map": pytest.approx(1.0), "map_50": pytest.approx(1.0)}
    shifted = [{**p, "boxes": p["boxes"] + 40} for p in exact]
    assert segdet.detection_metrics(shifted, targets)["map"] < 0.1


def test_detector_is_fcos_at_the_scene_size(scene_set):
    torch.manual_seed(0)
    model = segdet.detector()
    assert type(model).__name__ == "FCOS" and model.transform.min_size == (64,) and model.transform.max_size == 64
    assert not hasattr(model.backbone.body, "layer4") and sum(p.numel() for p in model.parameters()) < 4_000_000
    features = model.backbone(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in features.values()] == [(8, 8), (4, 4), (2, 2), (1, 1)]   # one per anchor size
    out = segdet.detections(model, scene_set.images[:2])
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"} and model.training, "mode restored"
