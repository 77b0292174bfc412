"""Classifier architectures, the paper-profile loaders and the zoo's integrity checks."""
import shutil

import pytest
import torch

from gatlib import classifiers, zoo


@pytest.mark.parametrize("arch", list(classifiers.ARCHITECTURES))
def test_every_architecture_maps_digits_to_ten_logits(arch):
    model = classifiers.build(arch).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 1, 32, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_attacked_classifier_has_batchnorm_and_an_embedding():
    model = classifiers.build("small_cnn").eval()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.embed(torch.rand(2, 1, 32, 32)).ndim == 2


def test_fraction_is_a_count_ratio_so_equal_ratios_read_equal():
    one_of_three, hundred_of_300 = torch.arange(3) < 1, torch.arange(300) < 100
    assert one_of_three.float().mean().item() != 1 / 3     # the float32 rounding this helper avoids
    assert classifiers.fraction(one_of_three) == classifiers.fraction(hundred_of_300) == 1 / 3
    assert classifiers.fraction(torch.ones(2, 3, dtype=torch.bool)) == 1.0   # any shape: over all entries
    empty = classifiers.fraction(torch.zeros(0, dtype=torch.bool))
    assert empty != empty                                   # NaN: no entries, no share


def test_unknown_architecture_is_named():
    with pytest.raises(ValueError, match="unknown classifier architecture 'vgg'"):
        classifiers.build("vgg")


def test_predict_refuses_a_wrong_image_shape():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        classifiers.predict(classifiers.build("mlp"), torch.rand(1, 32, 32))


def test_paper_classifier_round_trips_a_dataparallel_state_dict(tmp_path):
    source = classifiers.paper_classifier("resnet50", num_classes=3)
    state = {f"module.{k}": v for k, v in source[1].state_dict().items()}
    torch.save({"state_dict": state, "epoch": 7}, tmp_path / "resnet.pth")
    loaded = classifiers.paper_classifier("resnet50", num_classes=3, state_dict_path=tmp_path / "resnet.pth").eval()
    source.eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(images), source(images))


def test_paper_classifier_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classifiers.paper_classifier("resnet50", 3, tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth could not be loaded"):
        classifiers.paper_classifier("resnet50", 3, tmp_path / "garbage.pth")
    torch.save({"fc.weight": torch.zeros(5, 2048), "fc.bias": torch.zeros(5)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not fit torchvision resnet50"):
        classifiers.paper_classifier("resnet50", 3, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="one of inception_v3, resnet50, resnet18, resnet18_cifar, got 'vgg16'"):
        classifiers.paper_classifier("vgg16", 3)


def test_every_recorded_zoo_checkpoint_matches_its_sha256():
    manifest = zoo.read_manifest()
    # the Original models and the oracles are trained from scratch and must be present; models
    # that need the generator (fine-tuned rows) are checked once they are recorded
    from_scratch = [name for name, e in zoo.ENTRIES.items() if e.group in ("mnist-classifier", "oracle")]
    assert len(from_scratch) == 6 and set(from_scratch) <= set(manifest), "every from-scratch classifier is recorded"
    for name in manifest:
        assert zoo.verified_path(name).is_file()


def test_zoo_refuses_a_corrupted_checkpoint(tmp_path):
    name = "oracle-mlp"
    corrupted = tmp_path / "oracle-mlp.pt"
    shutil.copy(zoo.entry(name).path, corrupted)
    with open(corrupted, "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(zoo.ZooIntegrityError, match="sha256"):
        zoo.load(name, path=corrupted)
    with pytest.raises(zoo.ZooIntegrityError, match="missing"):
        zoo.load(name, path=tmp_path / "absent.pt")


def test_zoo_classifiers_reach_the_accuracy_the_manifest_records():
    from gatlib import data

    test_set = data.mnist("test")
    for name in zoo.names("mnist-classifier"):
        recorded = zoo.info(name)["metrics"]["mnist_test_accuracy"]
        assert recorded >= 0.99, f"{name}: the attacked classifier must reach 99% on MNIST test"
        measured = classifiers.accuracy(zoo.load(name), test_set.subset(2000, seed=0))
        assert abs(measured - recorded) < 0.01


def test_save_paper_classifier_round_trips_and_refuses_other_models(tmp_path):
    torch.manual_seed(0)
    model = classifiers.paper_classifier("resnet18_cifar", 4).eval()
    path = classifiers.save_paper_classifier(model, tmp_path / "sub" / "f.pt")
    probe = torch.rand(2, 3, 32, 32)
    assert torch.allclose(classifiers.paper_classifier("resnet18_cifar", 4, path).eval()(probe), model(probe))
    with pytest.raises(ValueError, match="does not fit torchvision resnet18"):   # the CIFAR stem is not ImageNet's
        classifiers.paper_classifier("resnet18", 4, path)
    with pytest.raises(TypeError, match="paper_classifier"):
        classifiers.save_paper_classifier(torch.nn.Linear(2, 2), tmp_path / "g.pt")
