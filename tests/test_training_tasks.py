"""The one training loop on the segmentation and detection tasks (MNIST scenes)."""

import pytest
import torch
from torch import nn

from gatlib import scenes, training

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene_set():
    return scenes.make_scenes(64, "train", seed=5)


def test_segmentation_task_learns_the_label_maps(scene_set):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 11, 3, padding=1))
    history = training.train_classifier(model, scene_set, epochs=3, batch_size=16, lr=1e-2, task="segmentation",
                                        progress=False)
    assert history["loss"][-1] < history["loss"][0]
    assert history["train_accuracy"][-1] > 0.9          # pixel accuracy (background dominates)


def test_detection_task_trains_a_torchvision_detector(scene_set, tiny_fcos):
    torch.manual_seed(0)
    detector = tiny_fcos()
    history = training.train_classifier(detector, scene_set, epochs=2, batch_size=16, lr=1e-3, task="detection",
                                        progress=False)
    assert history["train_accuracy"] == [None, None] and history["loss"][-1] < history["loss"][0]
    assert not detector.training
    with torch.no_grad():
        detections = detector([scene_set.images[0].repeat(3, 1, 1)])
    assert set(detections[0]) == {"boxes", "scores", "labels"}


def test_unknown_task_is_named(scene_set):
    with pytest.raises(ValueError, match="unknown task"):
        training.train_classifier(nn.Conv2d(1, 11, 1), scene_set, epochs=1, task="depth")


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_spade_gat_mode_adds_as_many_attack_iterates_as_clean_scenes(scene_set, task, tiny_fcos):
    from gatlib.generators.spade import SPADEGenerator
    from gatlib.spade_gat import SpadeGATMode

    torch.manual_seed(1)
    G = SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                       spectral=False, hidden=8).eval()
    if task == "segmentation":
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 11, 3, padding=1))
    else:
        model = tiny_fcos()
    mode = SpadeGATMode(G, scene_set, task, eps=0.01, iterates=3)
    model.train()
    images, targets = training.TASKS[task].batch(scene_set, torch.arange(4), "cpu")
    inputs, new_targets = mode(model, images, targets, step=0)
    assert inputs.shape == (8, 1, 64, 64) and len(new_targets) == 8 and model.training
    assert torch.equal(inputs[:4], images) and mode.log[0]["maps"] == 2
    if task == "segmentation":
        assert torch.equal(new_targets[:4], targets)
    history = training.train_classifier(model, scene_set, epochs=1, batch_size=4, max_steps=2, task=task, mode=mode,
                                        progress=False)
    assert len(history["loss"]) == 1 and len(mode.log) == 3
    with pytest.raises(ValueError, match="segmentation or detection"):
        SpadeGATMode(G, scene_set, "classification")


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_spade_control_mode_adds_one_unperturbed_render_per_clean_scene(scene_set, task):
    from gatlib.generators.spade import SPADEGenerator
    from gatlib.spade_gat import SpadeGATMode

    torch.manual_seed(1)
    G = SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                       spectral=False, hidden=8).eval()
    mode = SpadeGATMode(G, scene_set, task, iterates=3, attack=False, seed=2)
    images, targets = training.TASKS[task].batch(scene_set, torch.arange(4), "cpu")
    inputs, new_targets = mode(None, images, targets, step=7)    # no model: nothing is attacked
    assert inputs.shape == (8, 1, 64, 64) and len(new_targets) == 8 and mode.log[0]["maps"] == 4
    # the same draw as the GAT mode's: maps and z from (seed, step); each render is G's plain output
    rng = torch.Generator().manual_seed(2 * 1_000_003 + 7)
    picks = torch.randint(len(scene_set), (4,), generator=rng)
    expected = G(scene_set.segmap(picks, G.label_nc), G.sample_z(4, generator=rng))
    torch.testing.assert_close(inputs[4:], expected)
    if task == "segmentation":
        assert torch.equal(new_targets[4:], scene_set.masks[picks])
    else:
        assert [t["labels"].tolist() for t in new_targets[4:]] == [t["labels"].tolist()
                                                                   for t in scene_set.targets(picks.tolist())]


class _FixedSegmenter(nn.Module):
    """A "segmenter" whose prediction is a fixed label map (a constant logit per class and pixel)."""

    def __init__(self, prediction):
        super().__init__()
        self.register_buffer("prediction", prediction)

    def forward(self, images):
        logits = torch.nn.functional.one_hot(self.prediction, 11).permute(2, 0, 1).float()
        return logits.expand(len(images), -1, -1, -1) + 0 * images.sum()


def test_label_filter_ignores_exactly_the_pixels_where_the_filter_disagrees_with_the_map():
    from gatlib.spade_gat import filter_labels

    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[:, 1:3, 1:3] = 7                       # a 2x2 digit 6 (class 7) in each image
    masks[1, 0, 0] = scenes.IGNORE               # already unlabelled: stays so
    prediction = masks[0].clone()
    prediction[1, 1] = 3                         # the filter reads one digit pixel as another class
    prediction[3, 3] = 2                         # and one background pixel as a digit
    kept_masks, kept, foreground_kept = filter_labels(_FixedSegmenter(prediction), torch.rand(2, 1, 4, 4), masks)
    expected = masks.clone()
    expected[:, 1, 1] = scenes.IGNORE
    expected[:, 3, 3] = scenes.IGNORE
    assert torch.equal(kept_masks, expected)
    assert kept == pytest.approx((14 + 13) / 31) and foreground_kept == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="label filter"):
        filter_labels(_FixedSegmenter(prediction), torch.rand(3, 1, 4, 4), masks)


def test_spade_gat_mode_with_a_label_filter_ignores_generated_pixels_only(scene_set):
    from gatlib.generators.spade import SPADEGenerator
    from gatlib.spade_gat import SpadeGATMode

    torch.manual_seed(1)
    G = SPADEGenerator(label_nc=11, image_nc=1, ngf=2, crop_size=64, z_dim=4, param_free_norm="instance",
                       spectral=False, hidden=8).eval()
    everything_background = _FixedSegmenter(torch.zeros(64, 64, dtype=torch.long))
    mode = SpadeGATMode(G, scene_set, "segmentation", iterates=3, attack=False, seed=2,
                        label_filter=everything_background)
    images, targets = training.TASKS["segmentation"].batch(scene_set, torch.arange(4), "cpu")
    inputs, new_targets = mode(None, images, targets, step=7)
    rng = torch.Generator().manual_seed(2 * 1_000_003 + 7)
    maps = scene_set.masks[torch.randint(len(scene_set), (4,), generator=rng)]
    assert torch.equal(new_targets[:4], targets)                      # real scenes keep their maps
    assert torch.equal(new_targets[4:], torch.where(maps == 0, maps, torch.full_like(maps, scenes.IGNORE)))
    assert mode.pixels_kept() == pytest.approx(float((maps == 0).float().mean()))
    assert mode.log[0]["foreground_kept"] == 0.0
    with pytest.raises(ValueError, match="applies to task 'segmentation'"):
        SpadeGATMode(G, scene_set, "detection", label_filter=everything_background)


def test_crop_flip_mode_shifts_and_mirrors_each_image_reproducibly():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    labels = torch.tensor([0, 1])
    mode = training.crop_flip_mode(padding=2, seed=1)
    out, same_labels = mode(None, images, labels, step=5)
    assert out.shape == images.shape and torch.equal(same_labels, labels)
    assert torch.equal(out, mode(None, images, labels, step=5)[0])          # (seed, step) fixes the draw
    unpadded = training.crop_flip_mode(padding=0)(None, images, labels, 0)[0]   # no shift: itself or its mirror
    assert all(torch.equal(unpadded[i], images[i]) or torch.equal(unpadded[i], images[i].flip(-1)) for i in range(2))
    # every output is a window of the reflect-padded image, possibly mirrored
    padded = torch.nn.functional.pad(images, (2,) * 4, mode="reflect")
    for i in range(2):
        windows = [padded[i, :, y:y + 8, x:x + 8] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(-1)) for w in windows)
    draws = {tuple(mode(None, images, labels, step)[0][0, 0, 0, :2].tolist()) for step in range(20)}
    assert len(draws) > 3                                                   # it does move
