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


# --------------------------------------------------------------------------- grouped classes (paper profile, ImageNet)

class Chain(nn.Module):
    """A toy F on a line: ``s`` = mean brightness of the image; class k's logit is ``-(s - c_k)²``.
    Moving toward the farthest class (ll) walks ``s`` through the classes in between, in order."""

    def __init__(self, centers):
        super().__init__()
        self.register_buffer("centers", torch.as_tensor(centers, dtype=torch.float32))
        self.seen = []     # s of every image F is shown

    def forward(self, images):
        s = images.flatten(1).mean(1)
        self.seen.append(s.detach().clone())
        return -(s[:, None] - self.centers) ** 2


def chain_on_the_path(G, styles, noises, kwargs, first_in_1=2, first_in_2=5):
    """Centres c0 < c1 < c2 < c3 placed on the path the attack takes: the image is in class 0 at
    t = 0, first in class 1 at step ``first_in_1``, first in class 2 at step ``first_in_2``, and
    ll = 3. (The signed step toward class 3 is −sign(∇s) whatever the centres are, so the path of
    ``s`` is read once with centres too far apart to be reached.)"""
    probe = Chain([0.0, 1e3, 2e3, 3e3])
    with torch.no_grad():
        s0 = G.to_unit(G.synthesize(styles, noises)).mean().item()
    probe.centers += s0
    latent_attack(G, probe, styles, noises, torch.tensor([0]), **{**kwargs, "max_iters": first_in_2 + 1})
    path = torch.cat(probe.seen).tolist()
    assert all(a < b for a, b in zip(path, path[1:])), "s must grow along the path"
    boundary_01 = (path[first_in_1 - 1] + path[first_in_1]) / 2
    boundary_12 = (path[first_in_2 - 1] + path[first_in_2]) / 2
    c1 = 2 * boundary_01 - s0
    c2 = 2 * boundary_12 - c1
    assert s0 < c1 < c2
    return Chain([s0, c1, c2, c2 + 1.0])


def test_a_switch_within_the_label_group_is_not_a_success(G):
    """Classes 0 and 1 are one group (say two car classes): the attack walks 0 → 1 → 2. Without
    groups the switch to class 1 fools F; with them only leaving the group (class 2) does."""
    styles, noises = sample_latents(G, torch.tensor([0]), 0)
    kwargs = dict(eps=0.02, delta=0.2)
    F_chain = chain_on_the_path(G, styles, noises, kwargs)
    label = torch.tensor([0])
    groups = {"car": [0, 1]}
    plain = latent_attack(G, F_chain, styles, noises, label, max_iters=10, **kwargs)
    assert plain.success.item() and plain.iterations.item() == 2 and plain.predictions.item() == 1
    grouped = latent_attack(G, F_chain, styles, noises, label, max_iters=10, label_groups=groups, **kwargs)
    assert grouped.targets.item() == plain.targets.item() == 3      # ll = 3 in both: same path
    assert grouped.valid.item() and grouped.success.item()
    assert grouped.iterations.item() == 5 and grouped.predictions.item() == 2
    # stopped at step 2, where the plain attack succeeded: F says class 1, still a car, no success
    short = latent_attack(G, F_chain, styles, noises, label, max_iters=2, label_groups=groups, **kwargs)
    assert short.valid.item() and short.predictions.item() == 1 and not short.success.item()
    assert short.iterations.item() == 2 and short.summary()["success_rate"] == 0
    torch.testing.assert_close(short.images, plain.images)
    # the same groups as a list of class-index sets
    listed = latent_attack(G, F_chain, styles, noises, label, max_iters=10, label_groups=[{0, 1}], **kwargs)
    assert torch.equal(listed.iterations, grouped.iterations) and torch.equal(listed.images, grouped.images)


def test_grouped_ll_is_the_least_likely_class_outside_the_group(G, classifier):
    styles, noises, labels, logits = start(G, classifier)
    ll = logits.argmin(1)
    groups = {"first": [int(labels[0]), int(ll[0])]}     # sample 0's plain ll is in its own group
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.01, delta=0.1, max_iters=1,
                           label_groups=groups)
    correct_sets = [set(groups["first"]) if int(c) in groups["first"] else {int(c)} for c in labels]
    expected = torch.tensor([min((k for k in range(10) if k not in correct), key=lambda k: row[k].item())
                             for row, correct in zip(logits, correct_sets)])
    assert torch.equal(result.targets, expected)
    assert result.targets[0] != ll[0]
    # and the step (eq. 1–2) goes toward that class
    ys, etas = by_hand_one_step(G, classifier, styles, noises, expected, 0.01, 0.1)
    for got, want in zip(result.styles.conv + result.noises, ys + etas):
        assert torch.allclose(got, want, atol=1e-6)


def test_grouped_validity_at_t0_and_success_outside_the_group(G, classifier):
    styles, noises, predicted, _ = start(G, classifier, count=12)
    halves = {"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8, 9]}
    labels = predicted.clone()
    labels[0] = (predicted[0] + 1) % 5 + 5 * (predicted[0] // 5)     # another class of F's group: still correct
    labels[1] = (predicted[1] + 5) % 10                              # a class of the other group: wrong at t = 0
    kwargs = dict(eps=0.05, delta=0.5, max_iters=8)
    plain = latent_attack(G, classifier, styles, noises, labels, **kwargs)
    grouped = latent_attack(G, classifier, styles, noises, labels, label_groups=halves, **kwargs)
    assert not plain.valid[0] and not plain.valid[1]
    assert grouped.valid[0] and not grouped.valid[1] and grouped.valid[2:].all()
    assert not grouped.success[1] and grouped.iterations[1] == 0
    group = lambda classes: classes // 5  # noqa: E731
    fooled, held = grouped.success, grouped.valid & ~grouped.success
    assert fooled.any()
    assert (group(grouped.predictions[fooled]) != group(labels[fooled])).all()
    assert (group(grouped.predictions[held]) == group(labels[held])).all()
    assert grouped.summary()["misclassified_at_start"] == pytest.approx(1 / 12)


def test_a_targeted_attack_with_groups(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=10)
    halves = [range(5), range(5, 10)]
    with pytest.raises(ValueError, match="T outside the group of the label"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=1.0, label_groups=halves,
                      target=(labels + 1) % 5 + 5 * (labels // 5))   # T ≠ c, but a class of c's group
    target = (labels + 5) % 10
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=1.0, label_groups=halves,
                           target=target, max_iters=20)
    assert result.success.any()
    assert torch.equal(result.predictions[result.success], target[result.success])


@pytest.mark.parametrize("groups, error, message", [
    ({"a": [0, 1], "b": [1, 2]}, ValueError, "class 1 is in two groups, a and b"),
    ({"a": [3, 10]}, ValueError, r"group a names classes \[10\], but F outputs 10 logits"),
    ({"a": [-1, 2]}, ValueError, "names class -1"),
    ({"a": []}, ValueError, "group a lists no classes"),
    ({}, ValueError, "label_groups is empty"),
    ([0, 1, 2], TypeError, r"one group of classes 1, 2, 3 is \[\[1, 2, 3\]\]"),
    ({"a": [0.5]}, TypeError, "integer class indices"),
    (torch.zeros(10, dtype=torch.long), TypeError, "not a Tensor"),
    ({"all": range(10)}, ValueError, "holds every class of F"),
])
def test_bad_label_groups_are_named(G, classifier, groups, error, message):
    styles, noises, labels, _ = start(G, classifier, count=4)
    with pytest.raises(error, match=message):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, label_groups=groups)


# --------------------------------------------------------------------------- errors that used to be silent

def test_labels_and_targets_outside_the_classes_of_F_are_named(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=4)
    for bad in (10, -1):
        wrong = labels.clone()
        wrong[2] = bad
        with pytest.raises(ValueError, match=rf"labels \[{bad}\] are not classes of F, which outputs 10 logits"):
            latent_attack(G, classifier, styles, noises, wrong, eps=0.1, delta=0.1)
    with pytest.raises(ValueError, match=r"target \[12\] is not a class of F, which outputs 10 logits"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, target=12)
    with pytest.raises(ValueError, match=r"target must be one class T or one per sample \(4\)"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=0.1, target=torch.tensor([1, 2]))


@pytest.mark.parametrize("step", [0.0, -0.1, float("nan")], ids=["zero", "negative", "nan"])
def test_a_step_that_cannot_move_its_variable_is_an_error(G, classifier, step):
    styles, noises, labels, _ = start(G, classifier, count=4)
    with pytest.raises(ValueError, match=r"eps \(the style step\)"):
        latent_attack(G, classifier, styles, noises, labels, eps=step, delta=0.1, moves="style")
    with pytest.raises(ValueError, match=r"delta \(the noise step\)"):
        latent_attack(G, classifier, styles, noises, labels, eps=0.1, delta=step, moves="noise")
    with pytest.raises(ValueError, match=r"eps \(the style step\)"):
        latent_attack(G, classifier, styles, noises, labels, eps=step, delta=0.1, moves="both")


def test_a_zero_step_for_a_variable_that_stays_is_fine(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=4)
    style_only = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.0, moves="style", max_iters=2)
    noise_only = latent_attack(G, classifier, styles, noises, labels, eps=0.0, delta=0.5, moves="noise", max_iters=2)
    assert all(torch.equal(a, b) for a, b in zip(style_only.noises, noises))
    assert all(torch.equal(a, b) for a, b in zip(noise_only.styles.conv, styles.conv))


def test_noises_of_the_wrong_length_or_batch_are_named(G, classifier):
    styles, noises, labels, _ = start(G, classifier, count=4)
    with pytest.raises(ValueError, match=rf"noises has {len(noises) - 1} entries but G has {len(noises)} convs"):
        latent_attack(G, classifier, styles, noises[:-1], labels, eps=0.1, delta=0.1)
    with pytest.raises(ValueError, match=rf"noises has {len(noises) + 1} entries"):
        latent_attack(G, classifier, styles, noises + noises[:1], labels, eps=0.1, delta=0.1)
    wrong_batch = list(noises)
    wrong_batch[3] = noises[3][:2]
    with pytest.raises(ValueError, match=r"noises\[3\] holds 2 samples; need 4"):
        latent_attack(G, classifier, styles, wrong_batch, labels, eps=0.1, delta=0.1)


# --------------------------------------------------------------------------- more of eq. 1–4 by hand

def test_three_steps_by_hand_toward_the_ll_of_t0(G, classifier):
    """Three steps of eq. 1–2 written out: every step goes toward ll = argmin F at t = 0, even once
    the argmin of the current image has moved elsewhere; a fooled sample stops moving."""
    styles, noises, labels, logits = start(G, classifier, count=12)
    eps, delta, steps = 0.05, 0.5, 3
    ll = logits.argmin(1)
    ys = [y.clone() for y in styles.conv]
    etas = [n.clone() for n in noises]
    alive = torch.ones(len(labels), dtype=torch.bool)
    argmin_moved = torch.zeros(len(labels), dtype=torch.bool)
    for step in range(steps):
        leaves = [t.clone().requires_grad_(True) for t in ys + etas]
        images = G.to_unit(G.synthesize(type(styles)(leaves[:len(ys)], list(styles.torgb)), leaves[len(ys):]))
        now = classifier(images)
        if step > 0:
            alive &= now.argmax(1) == labels          # fooled at this step: leaves before its update
        argmin_moved |= alive & (now.argmin(1) != ll)
        grads = torch.autograd.grad(F.cross_entropy(now, ll, reduction="sum"), leaves)
        for tensor, grad, size in zip(ys + etas, grads, [eps] * len(ys) + [delta] * len(etas)):
            tensor[alive] -= size * grad[alive].sign()
    assert argmin_moved.any(), "choose steps so that some current argmin leaves ll (else ll=argmin is untested)"
    result = latent_attack(G, classifier, styles, noises, labels, eps=eps, delta=delta, max_iters=steps)
    assert torch.equal(result.targets, ll)
    for got, want in zip(result.styles.conv + result.noises, ys + etas):
        assert torch.allclose(got, want, atol=1e-5)


def test_noise_of_a_subset_of_layers_moves_alone(G, classifier):
    styles, noises, labels, _ = start(G, classifier)
    chosen = [1, 4, 6]
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves="noise",
                           layers=chosen, max_iters=4)
    assert result.valid.all()
    for index, (got, original) in enumerate(zip(result.noises, noises)):
        assert torch.equal(got, original) != (index in chosen), index
    for got, original in zip(result.styles.conv + result.styles.torgb, styles.conv + styles.torgb):
        assert torch.equal(got, original)


class CountingClassifier(nn.Module):
    """F, recording how many images every forward pass gets."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.batch_sizes = inner, []

    def forward(self, images):
        self.batch_sizes.append(len(images))
        return self.inner(images)


@pytest.mark.parametrize("use_cache", [True, False])
def test_no_compute_is_spent_on_fooled_or_excluded_samples(G, classifier, use_cache):
    styles, noises, labels, _ = start(G, classifier, count=16)
    labels = labels.clone()
    labels[:2] = (labels[:2] + 1) % 10               # wrong at t = 0: gone after the first pass
    counting = CountingClassifier(classifier)
    max_iters = 8
    result = latent_attack(G, counting, styles, noises, labels, eps=0.05, delta=0.5, max_iters=max_iters,
                           use_cache=use_cache)
    expected = [len(labels)]
    for step in range(1, max_iters + 1):
        left = int((result.valid & ~(result.success & (result.iterations < step))).sum())
        if left == 0:
            break
        expected.append(left)
    assert counting.batch_sizes == expected
    assert expected[1] == len(labels) - 2 and expected[-1] < expected[1]
    assert len(set(expected)) > 2, "samples must leave at different steps"


def test_category_groups_reads_the_chapter_parameter():
    from gatlib.attacks.latent import category_groups

    assert category_groups("", 3) is None
    assert category_groups(" 407, 436,468 ", 436) == {"category": {407, 436, 468}}
    with pytest.raises(ValueError, match="comma-separated class indices"):
        category_groups("cars", 1)
    with pytest.raises(ValueError, match="needs generator_class"):
        category_groups("1,2", -1)
    with pytest.raises(ValueError, match="generator_class 3 is not among"):
        category_groups("1,2", 3)
