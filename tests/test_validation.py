"""Input validation audit of the public entry points: a wrong image range, shape or dtype, an unknown
layer, a negative or NaN step size, NaN inputs, a bad batch size or a corrupted checkpoint must
give one clear error that names the argument (a ``ValueError``, or a ``TypeError`` for a wrong
type), before any work is done.

Tests marked ``xfail(strict=True)`` record entry points that do *not* validate yet (they fail
deep inside torch, or silently compute garbage): each turns into an unexpected pass, i.e. a failure
to look at, once gatlib validates that input; then drop its marker.
"""
import math
import shutil

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import gatlib
from gatlib import classifiers, data, zoo
from gatlib.attacks import pgd, recolor, spatial
from gatlib.attacks.latent import attack_batches, latent_attack, sample_latents

pytestmark = pytest.mark.usefixtures("one_thread")


def not_validated(reason: str):
    return pytest.mark.xfail(strict=True, reason=f"not validated yet: {reason}")


@pytest.fixture(scope="module")
def latent(tiny_generator):
    G = tiny_generator
    torch.manual_seed(1)
    F = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)).eval()
    styles, noises = sample_latents(G, torch.arange(4), seed=3)
    return G, F, styles, noises, torch.arange(4)


@pytest.fixture(scope="module")
def model():
    return zoo.load("mnist-classifier-s0")


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 32, 32, generator=generator), torch.arange(4)


# --------------------------------------------------------------------------- latent attack

@pytest.mark.parametrize("kwargs, message", [
    ({"eps": -0.1, "delta": 0.1}, r"eps \(the style step\) must be a finite number >= 0, got -0\.1"),
    ({"eps": 0.1, "delta": -0.5}, r"delta \(the noise step\) must be a finite number >= 0, got -0\.5"),
    ({"eps": 0.1, "delta": 0.1, "layers": [99]}, r"layers must lie in 0\.\.7, got \[99\]"),
    ({"eps": 0.1, "delta": 0.1, "layers": [-1]}, r"layers must lie in"),
    ({"eps": 0.1, "delta": 0.1, "layers": []}, r"at least one layer"),
    ({"eps": 0.1, "delta": 0.1, "max_iters": 0}, r"max_iters must be at least 1"),
    ({"eps": 0.1, "delta": 0.1, "moves": "pixels"}, r"moves must be one of"),
    ({"eps": 0.1, "delta": 0.1, "noise_space": "latent"}, r"noise_space must be one of"),
])
def test_latent_attack_refuses_bad_arguments(latent, kwargs, message):
    G, F, styles, noises, labels = latent
    with pytest.raises(ValueError, match=message):
        latent_attack(G, F, styles, noises, labels, **kwargs)


def test_attack_batches_refuses_a_negative_step_before_sampling(latent):
    G, F, _, _, labels = latent
    with pytest.raises(ValueError, match=r"eps .* got -0\.1"):
        attack_batches(G, F, labels, seed=0, eps=-0.1, delta=0.1, progress=False)


@pytest.mark.parametrize("eps", [math.nan, math.inf], ids=["nan", "inf"])
def test_latent_attack_refuses_a_non_finite_step(latent, eps):
    G, F, styles, noises, labels = latent
    with pytest.raises(ValueError, match="eps"):
        latent_attack(G, F, styles, noises, labels, eps=eps, delta=0.1)


def test_latent_attack_refuses_labels_of_the_wrong_length(latent):
    G, F, styles, noises, labels = latent
    with pytest.raises(ValueError, match="labels"):
        latent_attack(G, F, styles, noises, labels[:2], eps=0.1, delta=0.1)


def test_latent_attack_refuses_nan_styles(latent):
    G, F, styles, noises, labels = latent
    broken = type(styles)([s.clone() for s in styles.conv], list(styles.torgb))
    broken.conv[0][0, 0] = math.nan
    with pytest.raises(ValueError, match="styles"):
        latent_attack(G, F, broken, noises, labels, eps=0.1, delta=0.1)


def test_attack_batches_refuses_a_zero_batch_size(latent):
    G, F, _, _, labels = latent
    with pytest.raises(ValueError, match="batch_size"):
        attack_batches(G, F, labels, seed=0, batch_size=0, eps=0.1, delta=0.1, progress=False)


# --------------------------------------------------------------------------- image-space attacks

@pytest.mark.parametrize("make", [pgd.mnist, lambda: spatial.StAdv(steps=1), lambda: recolor.ReColorAdv(steps=1)],
                         ids=["pgd", "stadv", "recolor"])
@pytest.mark.parametrize("corrupt, error, message", [
    (lambda x: x * 255, ValueError, r"images must lie in \[0, 1\]"),
    (lambda x: x - 0.5, ValueError, r"images must lie in \[0, 1\]"),
    (lambda x: x[0], ValueError, r"images must have shape \(B, C, H, W\)"),
    (lambda x: (x * 255).to(torch.uint8), TypeError, r"images must be floats"),
    (lambda x: x.clone().fill_(math.nan), ValueError, r"images contain NaN"),
    (lambda x: x.tolist(), TypeError, r"images must be a torch.Tensor"),
], ids=["x255", "negative", "3d", "uint8", "nan", "list"])
def test_image_attacks_refuse_bad_images(model, batch, make, corrupt, error, message):
    images, labels = batch
    with pytest.raises(error, match=message):
        make()(model, corrupt(images), labels)


def test_image_attacks_refuse_bad_labels_and_models(model, batch):
    images, labels = batch
    attack = pgd.mnist(steps=1)
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        attack(model, images, labels[:2])
    with pytest.raises(TypeError, match="labels must be integer"):
        attack(model, images, labels.float())
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        attack(lambda x: x, images, labels)


@pytest.mark.parametrize("make, message", [
    (lambda: pgd.mnist(step_size=-0.01), "step_size must be positive"),
    (lambda: pgd.mnist(step_size=math.nan), "step_size must be positive"),
    (lambda: pgd.mnist(bound=-0.3), "bound must be a finite number"),
    (lambda: pgd.mnist(bound=math.nan), "bound must be a finite number"),
    (lambda: pgd.mnist(steps=-1), "steps must be a non-negative integer"),
    (lambda: pgd.mnist(steps=1.5), "steps must be a non-negative integer"),
    (lambda: pgd.mnist(restarts=0), "restarts must be an integer"),
    (lambda: spatial.StAdv(step_size=-1.0), "step_size must be positive"),
    (lambda: spatial.StAdv(smoothness=-1.0), "smoothness must be"),
    (lambda: recolor.ReColorAdv(bound=-0.1), "bound must be a finite number"),
    (lambda: recolor.ReColorAdv(resolution=1), "resolution must be an integer"),
])
def test_attacks_refuse_bad_budgets_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()



def test_image_attacks_refuse_labels_outside_the_classes(model, batch):
    images, labels = batch
    with pytest.raises(ValueError, match="labels"):
        pgd.mnist(steps=1)(model, images, labels + 20)


# --------------------------------------------------------------------------- gatlib.evaluate

@pytest.fixture(scope="module")
def digits():
    return data.mnist("test").subset(20)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
    ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
    ({"seeds": []}, "seeds must not be empty"),
    ({"attacks": {}, "include_clean": False}, "nothing to evaluate"),
])
def test_evaluate_refuses_bad_arguments(model, digits, kwargs, message):
    with pytest.raises(ValueError, match=message):
        gatlib.evaluate(model, digits, **{"progress": False, **kwargs})


@pytest.mark.parametrize("batch_size", [2.5, math.nan], ids=["fraction", "nan"])
def test_evaluate_refuses_a_non_integer_batch_size(model, digits, batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        gatlib.evaluate(model, digits, batch_size=batch_size, progress=False)


def test_evaluate_refuses_a_negative_count(model, digits):
    with pytest.raises(ValueError, match="count"):
        gatlib.evaluate(model, digits, count=-5, progress=False)



def test_evaluate_refuses_images_out_of_range(model, batch):
    images, labels = batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gatlib.evaluate(model, TensorDataset(images * 255, labels), progress=False)


# --------------------------------------------------------------------------- datasets and accuracy

@pytest.mark.parametrize("images, labels, message", [
    (torch.rand(4, 1, 32, 32) * 255, torch.arange(4), r"in \[0, 1\]"),
    (torch.full((4, 1, 32, 32), math.nan), torch.arange(4), "finite"),
    (torch.rand(4, 32, 32), torch.arange(4), r"shape \(N, C, H, W\)"),
    (torch.rand(4, 1, 32, 32), torch.arange(3), "4 images but 3 labels"),
], ids=["x255", "nan", "3d", "lengths"])
def test_image_sets_refuse_bad_images(images, labels, message):
    with pytest.raises(ValueError, match=message):
        data.ImageSet(images, labels, name="probe")


def test_accuracy_refuses_images_of_the_wrong_shape(model):
    class Flat:   # a dataset object with images of the wrong shape (ImageSet itself refuses them)
        images, labels = torch.rand(4, 32, 32), torch.arange(4)

    with pytest.raises(ValueError, match=r"shape \(B, C, H, W\), got \(4, 32, 32\)"):
        classifiers.accuracy(model, Flat())



def test_accuracy_refuses_images_out_of_range(model):
    class Scaled:
        images, labels = torch.rand(4, 1, 32, 32) * 255, torch.arange(4)

    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classifiers.accuracy(model, Scaled())


def test_accuracy_refuses_a_zero_batch_size(model, digits):
    with pytest.raises(ValueError, match="batch_size"):
        classifiers.accuracy(model, digits, batch_size=0)


# --------------------------------------------------------------------------- the zoo

def test_zoo_refuses_a_corrupted_checkpoint(tmp_path):
    path = tmp_path / "mnist-classifier-s0.pt"
    shutil.copy(zoo.entry("mnist-classifier-s0").path, path)
    corrupted = bytearray(path.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    with pytest.raises(zoo.ZooIntegrityError, match=r"mnist-classifier-s0\.pt has sha256 .* corrupt") as error:
        zoo.load("mnist-classifier-s0", path=path)
    assert isinstance(error.value, ValueError)
    path.write_bytes(bytes(corrupted[:100]))          # truncated
    with pytest.raises(zoo.ZooIntegrityError, match="corrupt"):
        zoo.load("mnist-classifier-s0", path=path)
    with pytest.raises(zoo.ZooIntegrityError, match="is missing"):
        zoo.load("mnist-classifier-s0", path=tmp_path / "absent.pt")


def test_zoo_names_unknown_entries():
    with pytest.raises(KeyError, match="no zoo entry 'nope'"):
        zoo.load("nope")
    with pytest.raises(ValueError, match="is a classifier, not a generator"):
        zoo.generator("mnist-classifier-s0")
