"""MNIST scenes (gatlib.scenes): the derived label maps and boxes of the segmentation / detection data."""
import pytest
import torch

from gatlib import scenes


@pytest.fixture(scope="module")
def scene_set():
    return scenes.make_scenes(60, "test", seed=3)


def test_scenes_are_deterministic_and_differ_by_seed_and_split(scene_set):
    again = scenes.make_scenes(60, "test", seed=3)
    assert torch.equal(again.images, scene_set.images) and torch.equal(again.masks, scene_set.masks)
    assert all(torch.equal(a, b) for a, b in zip(again.boxes, scene_set.boxes))
    assert not torch.equal(scenes.make_scenes(60, "test", seed=4).images, scene_set.images)
    assert not torch.equal(scenes.make_scenes(60, "train", seed=3).images, scene_set.images)


def test_every_scene_holds_one_to_four_digits_inside_the_canvas(scene_set):
    counts = torch.tensor([len(b) for b in scene_set.boxes])
    assert counts.min() >= 1 and counts.max() <= 4 and len(counts.unique()) > 1
    for boxes, labels in zip(scene_set.boxes, scene_set.labels):
        assert boxes.shape == (len(labels), 4) and labels.min() >= 1 and labels.max() <= 10
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()


def test_label_map_is_the_thresholded_digits_and_boxes_are_tight(scene_set):
    images, masks = scene_set.images[:, 0], scene_set.masks
    assert ((masks > 0) == (images > 0.5)).float().mean() > 0.995   # only contested rims may differ
    assert (masks[images <= 0.5] == 0).all(), "a labelled pixel is always a bright pixel"
    for i in range(len(scene_set)):
        for box, label in zip(scene_set.boxes[i].long(), scene_set.labels[i]):
            x1, y1, x2, y2 = box.tolist()
            own = masks[i] == label
            inside = own[y1:y2, x1:x2]
            assert inside.any(0)[0] and inside.any(0)[-1] and inside.any(1)[0] and inside.any(1)[-1], "tight"
        present = set(masks[i].unique().tolist()) - {0}
        assert present <= set(scene_set.labels[i].tolist())


def test_digits_do_not_overlap_heavily(scene_set):
    for boxes in scene_set.boxes:
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                assert scenes._overlap(tuple(boxes[a].tolist()), tuple(boxes[b].tolist())) <= 0.35


def test_optdigits_scenes_and_collate():
    ood = scenes.make_scenes(8, "test", seed=0, source="optdigits")
    assert ood.name == "optdigits-scenes/test" and ood.images.shape == (8, 1, 64, 64)
    images, masks, boxes, labels = scenes.collate([ood[i] for i in range(3)])
    assert images.shape == (3, 1, 64, 64) and masks.shape == (3, 64, 64) and len(boxes) == len(labels) == 3
    assert len(ood.subset(5)) == 5 and ood.targets([0])[0]["boxes"].shape[1] == 4


@pytest.mark.parametrize("kwargs, message", [
    ({"source": "svhn"}, "scene source"),
    ({"max_digits": 0}, "max_digits"),
    ({"max_overlap": 1.0}, "max_overlap"),
    ({"split": "validation"}, "split"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        scenes.make_scenes(4, **{"split": "test", **kwargs})
