"""Chapter 09's per-kind Fréchet distance (gatlib.realism): class-matched references and floors, one
common count for every kind. A tiny linear feature model on synthetic "digits" keeps it fast."""
import pytest
import torch
from torch import nn

from gatlib import quality
from gatlib.realism import frechet_by_kind, kernel_distance

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = 3


class TinyEmbed(nn.Module):
    """A fixed random projection of the pixels to 8 features (``quality.Features`` needs ``embed``)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(32 * 32, 8)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(8, 32 * 32, generator=torch.Generator().manual_seed(0)) / 32)
            self.proj.bias.zero_()

    def embed(self, images):
        return self.proj(images.flatten(1))


@pytest.fixture(scope="module")
def features():
    return quality.Features(TinyEmbed())


PATTERNS = 0.2 + 0.6 * torch.rand(CLASSES, 1, 32, 32, generator=torch.Generator().manual_seed(1))


def digits(per_class, seed, shift=0.0):
    """``per_class`` (an int, or one count per class) noisy copies of each class's pattern."""
    counts = [per_class] * CLASSES if isinstance(per_class, int) else list(per_class)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)]).long()
    noise = torch.randn(len(labels), 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    return (PATTERNS[labels] + 0.1 * noise + shift).clamp(0, 1), labels


@pytest.fixture(scope="module")
def real():
    return digits(40, seed=10)


@pytest.fixture(scope="module")
def control():
    return digits(40, seed=11)


def run(features, real, control, kinds, **kwargs):
    return frechet_by_kind(features, real[0], real[1], control[0], control[1], kinds, **kwargs)


def test_reference_and_control_are_class_matched_to_each_kind(features, real, control):
    kinds = {"lopsided": digits([30, 6, 0], seed=20), "balanced": digits(12, seed=21)}
    result = run(features, real, control, kinds, seed=3, kid=False)
    for name, (images, labels) in kinds.items():
        picks = result.picks[name]
        wanted = torch.bincount(labels[picks["kind"]], minlength=CLASSES)
        assert torch.equal(torch.bincount(real[1][picks["real"]], minlength=CLASSES), wanted)
        assert torch.equal(torch.bincount(control[1][picks["control"]], minlength=CLASSES), wanted)
        for side in picks.values():                                   # drawn without replacement
            assert len(side.unique()) == len(side) == result.count
    # the smallest kind is used whole; the larger one keeps its class proportions (30:6:0 of 36 -> 30:6:0)
    assert result.count == 36
    assert torch.equal(torch.bincount(kinds["lopsided"][1][result.picks["lopsided"]["kind"]], minlength=3),
                       torch.tensor([30, 6, 0]))
    assert torch.equal(torch.bincount(kinds["balanced"][1][result.picks["balanced"]["kind"]], minlength=3),
                       torch.tensor([12, 12, 12]))


def test_every_kind_is_measured_at_one_common_count(features, real, control):
    kinds = {"small": digits(10, seed=30), "medium": digits([20, 10, 15], seed=31), "large": digits(25, seed=32)}
    result = run(features, real, control, kinds, seed=0, kid=False)
    assert result.count == 30
    for name in kinds:
        assert result.rows[name]["images"] == 30
        assert all(len(side) == 30 for side in result.picks[name].values())
    # "medium" (20:10:15 of 45) subsampled to 30 keeps its proportions: 13.33, 6.67, 10 -> 13, 7, 10
    assert torch.equal(torch.bincount(kinds["medium"][1][result.picks["medium"]["kind"]], minlength=3),
                       torch.tensor([13, 7, 10]))
    smaller = run(features, real, control, kinds, seed=0, count=12, kid=False)
    assert {row["images"] for row in smaller.rows.values()} == {12}
    assert list(smaller.table().index) == list(kinds)


def test_real_digits_sit_at_the_floor_and_shifted_ones_far_above(features, real, control):
    kinds = {"identical": real, "same distribution": digits(40, seed=40), "shifted": digits(40, seed=41, shift=0.25)}
    result = run(features, real, control, kinds, seed=0)
    rows = result.rows
    assert result.count == 120
    floor = rows["identical"]["frechet_floor"]
    assert floor > 0
    assert abs(rows["identical"]["frechet"]) < 1e-3 * floor      # the reference is the kind itself
    assert 0.5 < rows["same distribution"]["frechet_ratio"] < 2
    assert rows["shifted"]["frechet_ratio"] > 20
    assert abs(rows["same distribution"]["kid"]) < 5 * abs(rows["same distribution"]["kid_floor"]) + 1e-4
    assert rows["shifted"]["kid"] > 100 * max(abs(rows["shifted"]["kid_floor"]), 1e-6)


def test_draws_are_seeded_and_independent_of_the_other_kinds(features, real, control):
    kind = digits([15, 12, 9], seed=50)
    alone = run(features, real, control, {"a": kind}, seed=5, count=20)
    again = run(features, real, control, {"a": kind}, seed=5, count=20)
    beside = run(features, real, control, {"b": digits(10, seed=51), "a": kind}, seed=5, count=20)
    other_seed = run(features, real, control, {"a": kind}, seed=6, count=20, kid=False)
    for side in ("kind", "real", "control"):
        assert torch.equal(alone.picks["a"][side], again.picks["a"][side])
        assert torch.equal(alone.picks["a"][side], beside.picks["a"][side])
    assert alone.rows["a"] == pytest.approx(beside.rows["a"])
    assert not torch.equal(alone.picks["a"]["real"], other_seed.picks["a"]["real"])


def test_the_global_random_state_is_left_alone(features, real, control):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(features, real, control, {"a": digits(6, seed=60)}, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_errors_name_the_kind_and_the_shortfall(features, real, control):
    with pytest.raises(ValueError, match="kinds is empty"):
        run(features, real, control, {})
    one = digits([1, 0, 0], seed=70)
    with pytest.raises(ValueError, match=r"kind 'song-adv' has 1 image"):
        run(features, real, control, {"noise-adv": digits(5, seed=71), "song-adv": one})
    with pytest.raises(ValueError, match=r"kind 'many sevens' needs 41 digits of class 2 .* real set has only 40"):
        run(features, real, control, {"many sevens": digits([0, 0, 41], seed=72)})
    short_control = (control[0][:50], control[1][:50])               # 40 of class 0, 10 of class 1
    with pytest.raises(ValueError, match=r"kind 'k' needs 12 digits of class 1 .* control set has only 10"):
        run(features, real, short_control, {"k": digits(12, seed=73)})
    with pytest.raises(ValueError, match=r"count=31 but kind 'small' has only 30 images"):
        run(features, real, control, {"small": digits(10, seed=74), "big": digits(20, seed=75)}, count=31)
    with pytest.raises(ValueError, match="count must be at least 2"):
        run(features, real, control, {"small": digits(10, seed=74)}, count=1)
    images, labels = digits(4, seed=76)
    with pytest.raises(ValueError, match=r"kind 'x': 12 images but 11 labels"):
        run(features, real, control, {"x": (images, labels[:-1])})


def test_kernel_distance_is_the_pairwise_u_statistic(features):
    from torchmetrics.image.kid import poly_kernel

    x, y = digits(3, seed=80)[0], digits(3, seed=81, shift=0.1)[0]
    fx, fy = features(x).double(), features(y).double()
    k = lambda a, b: poly_kernel(a[None], b[None])[0, 0]              # noqa: E731
    m = len(x)
    terms = [k(fx[i], fx[j]) + k(fy[i], fy[j]) - k(fx[i], fy[j]) - k(fx[j], fy[i])
             for i in range(m) for j in range(m) if i != j]
    assert kernel_distance(features, x, y) == pytest.approx(float(sum(terms)) / (m * (m - 1)), rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        kernel_distance(features, x, y[:-1])


def test_kernel_distance_is_unbiased_for_class_matched_sets_where_kid_is_not(features):
    """Two real sets drawn class by class: the U-statistic over same-class pairs averages about 0;
    torchmetrics' KID estimate (cross term with i = j) falls clearly below 0."""
    from torchmetrics.image.kid import poly_mmd

    ours, kid = [], []
    for draw in range(12):
        x, y = digits(6, seed=100 + 2 * draw)[0], digits(6, seed=101 + 2 * draw)[0]
        ours.append(kernel_distance(features, x, y))
        kid.append(poly_mmd(features(x).double(), features(y).double()).item())
    ours, kid = torch.tensor(ours), torch.tensor(kid)
    spread = ours.std() / len(ours) ** 0.5
    assert abs(ours.mean()) < 3 * spread
    assert kid.mean() < ours.mean() - 5 * spread
