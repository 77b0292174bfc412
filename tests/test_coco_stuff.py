"""Chapter 07's paper profile on files in COCO-stuff's layout (NVlabs' datasets/coco_stuff/:
val_label, val_img, val_inst), an NVlabs SPADE state dict with COCO-stuff's 184 input channels and
torchvision segmenter / detector state dicts — all small, all made here."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gatlib import coco_stuff, scene_eval, segdet, spade_gat
from gatlib.generators import spade
from gatlib.scenes import IGNORE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _write_coco_stuff(root: Path, count: int = 3, height: int = 40, width: int = 48) -> Path:
    """Label maps: stuff class 120 everywhere, a person (class 0) and a car (class 2, COCO id 3) as
    rectangles with their instance ids, a strip of unlabelled (255) pixels."""
    rng = np.random.default_rng(0)
    for folder in ("val_label", "val_img", "val_inst"):
        (root / folder).mkdir(parents=True)
    for i in range(count):
        label = np.full((height, width), 120, np.uint8)
        inst = np.zeros((height, width), np.uint8)
        label[4:20, 6:18], inst[4:20, 6:18] = 0, 1          # person
        label[24:36, 20 + i:44], inst[24:36, 20 + i:44] = 2, 2   # car
        label[:, :2] = IGNORE
        Image.fromarray(label).save(root / "val_label" / f"{i:012d}.png")
        Image.fromarray(inst).save(root / "val_inst" / f"{i:012d}.png")
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "val_img" / f"{i:012d}.jpg")
    return root


def test_load_scenes_reads_labels_boxes_and_edges(tmp_path):
    root = _write_coco_stuff(tmp_path)
    scenes = coco_stuff.load_scenes(root / "val_label", root / "val_img", root / "val_inst", size=24)
    assert len(scenes) == 3 and scenes.images.shape == (3, 3, 24, 24) and scenes.masks.shape == (3, 24, 24)
    assert scenes.num_classes == 182 and scenes.headline == "pixel_accuracy"
    assert set(scenes.masks.unique().tolist()) == {0, 2, 120, IGNORE}
    assert scenes.labels[0].tolist() == [1, 3]          # COCO category ids: person 1, car 3
    x0, y0, x1, y1 = scenes.boxes[0][0].tolist()      # the person rectangle, rescaled 40x48 -> 24x24
    assert (x0, y0, x1, y1) == pytest.approx((3, 2.4, 9, 12), abs=1.5)
    assert scenes.edges.any() and not scenes.edges[:, 0, 0].any()
    segmap = scenes.segmap([0, 1], 184)
    assert segmap.shape == (2, 184, 24, 24) and torch.equal(segmap.sum(1)[:, 0, 0], torch.ones(2))
    assert torch.equal(segmap[:, 182], (scenes.masks[:2] == IGNORE).float())        # dontcare channel
    assert torch.equal(segmap[:, 183], scenes.edges[:2].float())                     # instance edges
    assert len(coco_stuff.load_scenes(root / "val_label", root / "val_img", count=2, size=24)) == 2
    no_instances = coco_stuff.load_scenes(root / "val_label", root / "val_img", size=24)
    assert not no_instances.edges.any() and all(len(b) == 0 for b in no_instances.boxes)


def test_instance_edges_are_nvlabs_get_edges():
    instances = torch.tensor([[[0, 0, 1], [0, 0, 1], [2, 2, 2]]])
    expected = torch.tensor([[[0, 1, 1], [1, 1, 1], [1, 1, 1]]], dtype=torch.bool)
    assert torch.equal(coco_stuff.instance_edges(instances), expected)


def test_load_scenes_names_what_is_wrong(tmp_path):
    root = _write_coco_stuff(tmp_path)
    with pytest.raises(FileNotFoundError, match="label_dir"):
        coco_stuff.load_scenes(root / "nope", root / "val_img")
    (root / "val_img" / "000000000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="no image for label map 000000000001.png"):
        coco_stuff.load_scenes(root / "val_label", root / "val_img", size=16)
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(root / "val_label" / "000000000001.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "val_img" / "000000000001.jpg")
    with pytest.raises(ValueError, match="class ids must be 0-181 or 255"):
        coco_stuff.load_scenes(root / "val_label", root / "val_img", size=16)
    with pytest.raises(ValueError, match="184 channels"):
        coco_stuff.nvlabs_input(torch.full((1, 4, 4), 183), torch.zeros(1, 4, 4, dtype=torch.bool), 184)


def test_unlabelled_pixels_count_nowhere():
    masks = torch.tensor([[[1, 1, IGNORE, IGNORE]]])
    right = torch.tensor([[[1, 1, 0, 0]]])
    metrics = segdet.segmentation_metrics(right, masks, num_classes=4)
    assert metrics["pixel_accuracy"] == 1.0 and metrics["foreground_accuracy"] == 1.0
    wrong = torch.tensor([[[1, 0, 1, 1]]])
    assert segdet.segmentation_metrics(wrong, masks, num_classes=4)["pixel_accuracy"] == 0.5
    # the attack's loss: unlabelled pixels add nothing, whatever the model predicts there
    from gatlib.attacks.spade import segmentation_loss

    logits = torch.randn(1, 4, 1, 4)
    changed = logits.clone()
    changed[..., 2:] = torch.randn(1, 4, 1, 2) * 10
    torch.testing.assert_close(segmentation_loss(lambda x: x, logits, masks), segmentation_loss(lambda x: x, changed, masks))


def test_paper_segmenter_and_detector_load_torchvision_state_dicts(tmp_path):
    from torchvision.models import detection, segmentation

    torch.manual_seed(0)
    net = segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=182).eval()
    torch.save(net.state_dict(), tmp_path / "seg.pt")
    model = segdet.paper_segmenter("lraspp_mobilenet_v3_large", 182, tmp_path / "seg.pt")
    images = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    with torch.no_grad():
        torch.testing.assert_close(model(images)["out"], net((images - mean[:, None, None]) / std[:, None, None])["out"])
    with pytest.raises(ValueError, match="does not fit torchvision lraspp_mobilenet_v3_large with 21 classes"):
        segdet.paper_segmenter("lraspp_mobilenet_v3_large", 21, tmp_path / "seg.pt")
    with pytest.raises(ValueError, match="segmenter arch must be one of"):
        segdet.paper_segmenter("deeplabv2", 182, tmp_path / "seg.pt")
    det = detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91)
    torch.save(det.state_dict(), tmp_path / "det.pt")
    assert not segdet.paper_detector("ssdlite320_mobilenet_v3_large", 91, tmp_path / "det.pt").training
    rows = spade_gat.paper_scene_rows("detector", "ssdlite320_mobilenet_v3_large", 91, str(tmp_path / "det.pt"))
    assert list(rows) == ["original"] and spade_gat.paper_scene_rows("detector", "x", 91, "") == {}
    with pytest.raises(ValueError, match="one GAT checkpoint per Original seed"):
        spade_gat.paper_scene_rows("segmenter", "lraspp_mobilenet_v3_large", 182, str(tmp_path / "seg.pt"),
                                   f"{tmp_path / 'seg.pt'},{tmp_path / 'seg.pt'}")


def _nvlabs_coco_spade(path: Path) -> None:
    """A tiny SPADE in NVlabs' COCO-stuff layout: 184 input channels, no z, BatchNorm, spectral norm."""
    torch.manual_seed(1)
    G = spade.SPADEGenerator(label_nc=184, image_nc=3, ngf=2, crop_size=32, z_dim=0, param_free_norm="batch",
                             spectral=True, hidden=8).train()
    with torch.no_grad():   # BatchNorm statistics of real use, so the renders are not saturated
        for _ in range(3):
            G(spade.one_hot(torch.randint(0, 184, (4, 32, 32)), 184))
    torch.save(G.eval().state_dict(), path)


def test_the_attack_moves_coco_renders_and_ignores_unlabelled_pixels(tmp_path):
    root = _write_coco_stuff(tmp_path)
    _nvlabs_coco_spade(tmp_path / "latest_net_G.pth")
    G = spade.load_nvlabs(tmp_path / "latest_net_G.pth", crop_size=32)
    scenes = coco_stuff.load_scenes(root / "val_label", root / "val_img", root / "val_inst", size=32)
    torch.manual_seed(2)
    segmenter = torch.nn.Conv2d(3, 182, 1)
    curve = scene_eval.attack_curve(G, segmenter, "segmentation", scenes, eps=0.05, max_iters=2, batch_size=2)
    assert list(curve.iteration) == [0, 1, 2] and curve.pixel_accuracy.between(0, 1).all()
    iterates = scene_eval.attack_iterates(G, segmenter, "segmentation", scenes, eps=0.05, max_iters=2, batch_size=2)
    assert iterates[0].shape == (3, 3, 32, 32) and not torch.allclose(iterates[0], iterates[2])


@pytest.mark.notebooks
def test_chapter_07_runs_on_the_paper_profile_with_coco_stuff_files(tmp_path):
    from torchvision.models import detection, segmentation

    from gatlib import runbook

    root = _write_coco_stuff(tmp_path / "coco_stuff", count=4)
    _nvlabs_coco_spade(tmp_path / "latest_net_G.pth")
    torch.manual_seed(0)
    torch.save(segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=182).state_dict(),
               tmp_path / "seg.pt")
    torch.save(detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=91).state_dict(),
               tmp_path / "det.pt")
    result = runbook.run_notebook(
        ROOT / "notebooks" / "07_segmentation_detection.md", profile="paper", runs_dir=tmp_path / "runs",
        overrides={"generator": str(tmp_path / "latest_net_G.pth"), "crop_size": 32,
                   "label_dir": str(root / "val_label"), "image_dir": str(root / "val_img"),
                   "inst_dir": str(root / "val_inst"), "segmenter_arch": "lraspp_mobilenet_v3_large",
                   "segmenter_paths": str(tmp_path / "seg.pt"), "gat_segmenter_paths": str(tmp_path / "seg.pt"),
                   "detector_arch": "ssdlite320_mobilenet_v3_large", "detector_paths": str(tmp_path / "det.pt"),
                   "test_scenes": 4, "max_iters": 2, "figure_scenes": 2, "device": "cpu"})
    assert result["status"] == "ok", result.get("error")
    numbers = result["numbers"]
    assert result["parameters"]["modulation_step"] == 0.001
    assert "table1.original.segmentation.clean_pixel_accuracy" in numbers
    assert "table1.gat.segmentation.adversarial_pixel_accuracy" in numbers
    assert "table1.original.detection.adversarial_map" in numbers
    assert "step_search.chosen" not in numbers          # the paper's step, no search
