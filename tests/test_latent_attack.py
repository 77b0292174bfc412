"""The latent attack follows eq. 1–4 to the letter (checked by hand on a small random G and F)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatlib.attacks.latent import latent_attack, sample_latents


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G(tiny_generator):
    return tiny_generator


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10)).eval()


def start(G, classifier, count=12, seed=3):
    """Latents plus labels equal to F's clean predictions, so that every sample is valid."""
    styles, noises = sample_latents(G, torch.arange(count) % 10, seed)
    with torch.no_grad():
        clean = G.to_unit(G.synthesize(styles, noises))
        logits = classifier(clean)
    return styles, noises, logits.argmax(1), logits


def by_hand_one_step(G, classifier, styles, noises, target, eps, delta):
    """y − ε·sign(∇_y J), η − δ·sign(∇_η J) for every layer (eq. 1–2 / 3–4, written out)."""
    ys = [y.clone().requires_grad_(True) for y in styles.conv]
    etas = [n.clone().requires_grad_(True) for n in noises]
    images = G.to_unit(G.synthesize(type(styles)(ys, list(styles.torgb)), etas))
    loss = F.cross_entropy(classifier(images), target, reduction="sum")
    grads = torch.autograd.grad(loss, ys + etas)
    return ([y.detach() - eps * g.sign() for y, g in zip(ys, grads[:len(ys)])],
            [n.detach() - delta * g.sign() for n, g in zip(etas, grads[len(ys):])])


def test_one_non_targeted_step_is_eq_1_and_2_toward_the_least_likely_class(G, classifier):
    styles, noises, labels, logits = start(G, classifier)
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.01, delta=0.1, max_iters=1)
    ll = logits.argmin(1)
    assert torch.equal(result.targets, ll)
    ys, etas = by_hand_one_step(G, classifier, styles, noises, ll, 0.01, 0.1)
    for got, want in zip(result.styles.conv, ys):
        assert torch.allclose(got, want, atol=1e-6)
    for got, want in zip(result.noises, etas):
        assert torch.allclose(got, want, atol=1e-6)


def test_one_targeted_step_is_eq_3_and_4(G, classifier):
    styles, noises, labels, _ = start(G, classifier)
    target = (labels + 1) % 10
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.02, delta=0.2, max_iters=1, target=target)
    ys, etas = by_hand_one_step(G, classifier, styles, noises, target, 0.02, 0.2)
    for got, want in zip(result.styles.conv + result.noises, ys + etas):
        assert torch.allclose(got, want, atol=1e-6)


def test_ll_is_fixed_at_t0_and_the_inputs_are_not_modified(G, classifier):
    styles, noises, labels, logits = start(G, classifier)
    before = [y.clone() for y in styles.conv] + [n.clone() for n in noises]
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, max_iters=6)
    assert torch.equal(result.targets, logits.argmin(1))
    for original, now in zip(before, styles.conv + noises):
        assert torch.equal(original, now)


def test_fooled_samples_leave_the_batch_and_stay_untouched(G, classifier):
    styles, noises, labels, logits = start(G, classifier, count=20)
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, max_iters=8)
    once = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, max_iters=1)
    fooled_first = result.success & (result.iterations == 1)
    assert fooled_first.any(), "choose step sizes so some samples fall in one step"
    for got, want in zip(result.styles.conv + result.noises, once.styles.conv + once.noises):
        assert torch.equal(got[fooled_first], want[fooled_first])
    # and the iteration count agrees with the predictions it reports
    assert (result.predictions[result.success] != labels[result.success]).all()
    assert (result.predictions[~result.success & result.valid] == labels[~result.success & result.valid]).all()


def test_unselected_layers_and_variables_never_change(G, classifier):
    styles, noises, labels, _ = start(G, classifier)
    fine = G.layer_groups()["fine"]
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves="style",
                           layers=fine, max_iters=4)
    for index, (got, original) in enumerate(zip(result.styles.conv, styles.conv)):
        changed = not torch.equal(got, original)
        assert changed == (index in fine) or not result.valid.any()
    for got, original in zip(result.noises, noises):
        assert torch.equal(got, original)


def test_targeted_attack_reaches_the_target(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=10)
    target = (labels + 3) % 10
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=1.0, target=target, max_iters=20)
    assert result.success.float().mean() >= 0.8
    assert torch.equal(result.predictions[result.success], target[result.success])


def test_misclassified_samples_are_left_out(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=10)
    wrong = labels.clone()
    wrong[:3] = (labels[:3] + 1) % 10
    result = latent_attack(G, classifier, styles, noises, wrong, eps=0.05, delta=0.5, max_iters=3)
    assert not result.valid[:3].any() and result.valid[3:].all()
    assert not result.success[:3].any() and (result.iterations[:3] == 0).all()
    assert result.summary()["misclassified_at_start"] == pytest.approx(0.3)


def test_re_rendering_from_the_first_moved_layer_gives_the_same_attack(G, classifier):
    styles, noises, labels, _ = start(G, classifier)
    middle = G.layer_groups()["middle"]
    cached = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, layers=middle, max_iters=5)
    full = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, layers=middle, max_iters=5,
                         use_cache=False)
    assert torch.equal(cached.iterations, full.iterations)
    assert torch.allclose(cached.images, full.images, atol=1e-5)


def test_bad_arguments_are_named(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=4)
    with pytest.raises(ValueError, match="moves must be one of"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, moves="pixels")
    with pytest.raises(ValueError, match="layers must lie in"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, layers=[99])
    with pytest.raises(ValueError, match="T different from the label"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, target=labels)


def test_models_come_back_in_their_previous_mode(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=4)
    classifier.train()
    latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, max_iters=2)
    assert classifier.training and all(p.requires_grad for p in classifier.parameters())
    classifier.eval()


@pytest.mark.parametrize("use_cache", [True, False])
def test_a_batch_attack_equals_attacking_each_sample_alone(G, classifier, use_cache):
    """Dropping fooled and misclassified samples (and cutting the cache to the rest) must not change
    anyone's attack: each sample's result is the one it gets when attacked alone."""
    styles, noises, labels, _ = start(G, classifier, count=10)
    labels = labels.clone()
    labels[0] = (labels[0] + 1) % 10              # one sample misclassified at t = 0
    fine = G.layer_groups()["fine"] + G.layer_groups()["middle"]
    kwargs = dict(eps=0.08, delta=0.8, layers=fine, max_iters=6, use_cache=use_cache)
    batch = latent_attack(G, classifier, styles, noises, labels, **kwargs)
    assert len(set(batch.iterations[batch.success].tolist())) > 1, "samples must leave at different steps"
    for i in range(len(labels)):
        one = (type(styles)([s[i:i + 1] for s in styles.conv], [s[i:i + 1] for s in styles.torgb]),
               [n[i:i + 1] for n in noises])
        alone = latent_attack(G, classifier, *one, labels[i:i + 1], **kwargs)
        assert alone.iterations.item() == batch.iterations[i].item() and alone.success.item() == batch.success[i].item()
        torch.testing.assert_close(alone.images[0], batch.images[i], atol=1e-5, rtol=1e-4)


def test_attack_batches_splits_a_per_sample_target_with_the_labels(G, classifier):
    """One T per sample (eq. 3–4) through ``attack_batches``: each batch gets its own slice of the
    targets, so the batched run equals attacking every batch's latents with its own targets."""
    from gatlib.attacks.latent import attack_batches, concatenate

    labels = torch.arange(10) % 10
    target = (labels + 1 + torch.arange(10) % 9) % 10
    kwargs = dict(eps=0.1, delta=1.0, max_iters=5, target=target)
    batched = attack_batches(G, classifier, labels, seed=4, batch_size=4, progress=False, **kwargs)
    assert torch.equal(batched.targets, target)
    by_hand = []
    for number, begin in enumerate(range(0, 10, 4)):
        styles, noises = sample_latents(G, labels[begin:begin + 4], 4 * 100_003 + number)
        by_hand.append(latent_attack(G, classifier, styles, noises, labels[begin:begin + 4],
                                     **{**kwargs, "target": target[begin:begin + 4]}))
    by_hand = concatenate(by_hand)
    assert torch.equal(batched.success, by_hand.success) and torch.equal(batched.iterations, by_hand.iterations)
    with pytest.raises(ValueError, match="target has 3 entries for 10 labels"):
        attack_batches(G, classifier, labels, seed=4, batch_size=4, progress=False, **{**kwargs, "target": target[:3]})
