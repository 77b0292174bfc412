"""StyleGAN v1 (``gatlib.generators.stylegan.GeneratorV1``): v1's layer arithmetic (AdaIN, per-channel
noise, blur, fused / non-fused up-sampling, truncation cutoff) and the generator API every attack
uses — ``latent_attack`` runs on it unchanged."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gatlib.attacks.latent import PAPER_STEP_SIZES, latent_attack, sample_latents
from gatlib.generators import GeneratorV1, Styles
from gatlib.generators.stylegan import (
    PAPER_GENERATORS,
    PAPER_LAYER_RANGES,
    StyleLayer,
    paper_layer_groups,
    paper_settings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

CHANNELS = {4: 16, 8: 12, 16: 8}


def tiny(num_classes=0, seed=0, **kwargs):
    """16 px (6 layers), tiny channels, non-zero noise strengths (an untrained v1 has zeros)."""
    torch.manual_seed(seed)
    G = GeneratorV1(resolution=16, num_classes=num_classes, z_dim=8, w_dim=8, mapping_layers=2,
                    channels=CHANNELS, **kwargs).eval()
    with torch.no_grad():
        for layer in G.layers:
            layer.noise_strength.uniform_(0.2, 0.6)
            layer.bias.normal_(0, 0.1)
            layer.affine.bias.add_(0.1 * torch.randn_like(layer.affine.bias))
        G.mapping.w_avg.normal_()
        G.mapping.w_avg_class.normal_()
    return G


@pytest.fixture(scope="module")
def G():
    return tiny()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 5)).eval()


def test_layer_conventions(G):
    assert G.layout == "stylegan1" and G.num_layers == G.num_ws == G.num_convs == 6
    assert G.layer_resolutions == G.conv_resolutions == [4, 4, 8, 8, 16, 16]
    assert [layer.kind for layer in G.layers] == ["const", "conv", "up", "conv", "up", "conv"]
    assert G.torgb_layers == [] and G.torgb_of_layers(range(6)) == []
    assert G.layer_groups() == {"coarse": [0, 1], "middle": [2, 3], "fine": [4, 5]}
    assert G.consecutive_groups(2) == [[0, 1], [2, 3], [4, 5]]
    assert G.truncation_cutoff == 8
    # rebuilt from its config
    H = GeneratorV1(**G.config)
    H.load_state_dict(G.state_dict())
    z = torch.randn(2, 8)
    noises = G.make_noise(2, torch.Generator().manual_seed(0))
    torch.testing.assert_close(H.synthesize(H.styles(H.mapping(z)), noises),
                               G.synthesize(G.styles(G.mapping(z)), noises))


def test_paper_layer_ranges_are_the_18_layer_thirds():
    G = GeneratorV1(resolution=1024, z_dim=4, w_dim=4, mapping_layers=1, channel_base=64, channel_max=4)
    assert G.num_layers == 18 and [layer.fused for layer in G.layers][::2] == [False] * 5 + [True] * 4
    groups = paper_layer_groups(18)
    assert groups == G.layer_groups()
    assert {k: (v[0] + 1, v[-1] + 1) for k, v in groups.items()} == PAPER_LAYER_RANGES
    assert paper_layer_groups(14) == {"coarse": [0, 1, 2, 3, 4], "middle": [5, 6, 7, 8, 9], "fine": [10, 11, 12, 13]}
    cars = paper_settings("/data/karras2019stylegan-cars-512x384.pkl")
    assert cars["num_layers"] == 16 and cars["eps_delta"] == PAPER_STEP_SIZES[("lsun", "non_targeted")]
    assert paper_settings("karras2019stylegan-celebahq-1024x1024.pkl", targeted=True)["eps_delta"] == (0.004, 0.1)
    assert paper_settings("karras2019stylegan-ffhq-1024x1024.pkl")["eps_delta"] is None
    assert all(info["version"] in ("stylegan1", "stylegan2") for info in PAPER_GENERATORS.values())


def test_shapes(G):
    z = torch.randn(3, 8)
    w = G.mapping(z)
    styles = G.styles(w)
    assert w.shape == (3, 8) and isinstance(styles, Styles) and styles.torgb == []
    assert [tuple(y.shape) for y in styles.conv] == [(3, 32), (3, 32), (3, 24), (3, 24), (3, 16), (3, 16)]
    assert [tuple(n.shape) for n in G.make_noise(3)] == [(3, 1, r, r) for r in (4, 4, 8, 8, 16, 16)]
    assert G.synthesize(styles, G.make_noise(3)).shape == (3, 3, 16, 16)
    images = G(z, truncation_psi=0.5)
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    ws = G.broadcast(w)
    torch.testing.assert_close(G.synthesize(G.styles(ws), G.make_noise(3, torch.Generator().manual_seed(1))),
                               G.synthesize(styles, G.make_noise(3, torch.Generator().manual_seed(1))))


def test_adain_and_noise_of_one_layer():
    """noise * B (per channel) + bias -> leaky ReLU -> instance norm -> y_s * x + y_b."""
    torch.manual_seed(0)
    layer = StyleLayer(3, 4, 5, 8, "conv")
    with torch.no_grad():
        layer.noise_strength.copy_(torch.tensor([0.0, 0.5, 1.0, 2.0]))
        layer.bias.normal_()
    x, noise = torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8)
    y_s, y_b = torch.randn(2, 4), torch.randn(2, 4)
    out = layer(x, torch.cat([y_s, y_b], 1), noise)
    h = layer.conv(x) + noise * layer.noise_strength[None, :, None, None] + layer.bias[None, :, None, None]
    h = F.leaky_relu(h, 0.2)
    h = (h - h.mean((2, 3), keepdim=True)) / (h.var((2, 3), unbiased=False, keepdim=True) + 1e-8).sqrt()
    torch.testing.assert_close(out, y_s[:, :, None, None] * h + y_b[:, :, None, None], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.mean((2, 3)), y_b, rtol=1e-4, atol=1e-5)      # AdaIN sets mean y_b, std |y_s|
    torch.testing.assert_close(out.std((2, 3), unbiased=False), y_s.abs(), rtol=1e-3, atol=1e-4)
    # the affine's bias puts v1's "+1" on the scale half
    assert torch.equal(StyleLayer(3, 4, 5, 8, "conv").affine.bias, torch.tensor([1.0] * 4 + [0.0] * 4))


def test_up_sampling_conv_fused_and_not():
    """Not fused = nearest-neighbour up-sampling then the 3x3 conv (v1's conv2d(upscale2d(x)));
    fused = TF's conv2d_transpose with the summed 4x4 kernel (v1's upscale2d_conv2d from 128 px)."""
    torch.manual_seed(0)
    layer = StyleLayer(3, 5, 4, 8, "up")
    x = torch.randn(2, 3, 6, 6)
    w = layer.conv.weight * layer.conv.weight_gain
    nearest = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    torch.testing.assert_close(layer._up_conv(x), nearest, rtol=1e-5, atol=1e-5)
    fused = StyleLayer(3, 5, 4, 8, "up", fused=True)
    fused.load_state_dict(layer.state_dict())
    wp = F.pad(w, [1, 1, 1, 1])
    w4 = wp[:, :, 1:, 1:] + wp[:, :, :-1, 1:] + wp[:, :, 1:, :-1] + wp[:, :, :-1, :-1]
    torch.testing.assert_close(fused._up_conv(x), F.conv_transpose2d(x, w4.transpose(0, 1), stride=2, padding=1))
    assert not torch.allclose(fused._up_conv(x), nearest, atol=1e-3)
    # the [1,2,1] blur follows
    k = torch.tensor([1.0, 2.0, 1.0])
    assert torch.equal(layer.blur_kernel[0, 0], (k[:, None] * k[None, :]) / 16)


@pytest.mark.parametrize("noise_space", ["input", "scaled"])
def test_start_layer_cache_equals_full_pass(G, noise_space):
    gen = torch.Generator().manual_seed(2)
    styles = G.styles(G.mapping(G.sample_z(3, gen)))
    noises = G.make_noise(3, gen)
    with torch.no_grad():
        full, record = G.synthesize(styles, noises, noise_space=noise_space, return_cache=True)
        assert sorted(record) == list(range(6)) and all(img is None for _, img in record.values())
        for k in range(1, G.num_layers + 1):
            cache = G.cache(styles, noises, k, noise_space=noise_space)
            torch.testing.assert_close(G.synthesize(styles, noises, start_layer=k, cache=cache,
                                                    noise_space=noise_space), full)
            if k < G.num_layers:
                torch.testing.assert_close(cache[k][0], record[k][0])
    with pytest.raises(ValueError, match="cache"):
        G.synthesize(styles, noises, start_layer=2)


def test_noise_space_input_vs_scaled(G):
    gen = torch.Generator().manual_seed(4)
    styles = G.styles(G.mapping(G.sample_z(2, gen)))
    noises = G.make_noise(2, gen)
    scaled = [layer.noise_strength[None, :, None, None] * n for layer, n in zip(G.layers, noises)]
    with torch.no_grad():
        torch.testing.assert_close(G.synthesize(styles, scaled, noise_space="scaled"), G.synthesize(styles, noises))
        assert not torch.allclose(G.synthesize(styles, noises), G.synthesize(styles, [None] * 6), atol=1e-3)


def test_gradients_reach_every_style_and_noise(G):
    gen = torch.Generator().manual_seed(5)
    ys = [y.detach().requires_grad_(True) for y in G.styles(G.mapping(G.sample_z(2, gen))).conv]
    etas = [n.requires_grad_(True) for n in G.make_noise(2, gen)]
    G.synthesize(Styles(ys, []), etas).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in ys + etas)


def test_truncation_and_cutoff(G):
    z = torch.randn(4, 8)
    w = G.mapping(z)
    torch.testing.assert_close(G.mapping(z, truncation_psi=0.0), G.mapping.w_avg.expand(4, -1))
    ws = G.mapping(z, truncation_psi=0.0, truncation_cutoff=2)        # v1: only layers < cutoff
    assert ws.shape == (4, 6, 8)
    torch.testing.assert_close(ws[:, :2], G.mapping.w_avg.expand(4, 2, -1))
    torch.testing.assert_close(ws[:, 2:], w[:, None].expand(-1, 4, -1))
    torch.testing.assert_close(G.truncate(w, 0.5, truncation_cutoff=3)[:, 0], G.truncate(w, 0.5))
    noises = G.make_noise(4, torch.Generator().manual_seed(0))
    with torch.no_grad():     # forward truncates the first G.truncation_cutoff layers (8 >= 6: all here)
        torch.testing.assert_close(G(z, truncation_psi=0.7, noises=noises),
                                   G.to_unit(G.synthesize(G.styles(G.mapping(z, truncation_psi=0.7)), noises)))
        torch.testing.assert_close(G(z, truncation_psi=0.7, noises=noises, truncation_cutoff=2),
                                   G.to_unit(G.synthesize(G.styles(G.truncate(w, 0.7, truncation_cutoff=2)), noises)))


def test_conditional_mapping_and_w_avg():
    G = tiny(num_classes=3)
    z = torch.randn(4, 8).repeat(2, 1)
    c = torch.tensor([0, 1, 2, 0, 1, 1, 1, 1])
    w = G.mapping(z, c)
    assert not torch.allclose(w[0], w[4]) and torch.allclose(w[1], w[5])
    # v1's LabelConcat: pixel norm of [z, onehot @ E]
    x = torch.cat([z, F.one_hot(c, 3).float() @ G.mapping.label_embed], 1)
    x = x / x.square().mean(1, keepdim=True).add(1e-8).sqrt()
    for fc in G.mapping.fcs:
        x = F.leaky_relu(x @ (fc.weight * fc.weight_gain).t() + fc.bias * fc.lr_mul, 0.2)
    torch.testing.assert_close(w, x)
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.0), G.mapping.w_avg_class[c])
    with pytest.raises(ValueError, match="class-conditional"):
        G.mapping(z)
    G.estimate_w_avg(n=64, generator=torch.Generator().manual_seed(0))
    rng = torch.Generator().manual_seed(0)          # the same draws: per class, then over all classes
    per_class = torch.stack([G.mean_w(k, n=64, generator=rng) for k in range(3)])
    torch.testing.assert_close(G.mapping.w_avg_class, per_class)
    torch.testing.assert_close(G.mapping.w_avg, G.mean_w(None, n=64, generator=rng))
    images = G(z[:2], c[:2], truncation_psi=0.7)
    assert images.shape == (2, 3, 16, 16)


def start(G, classifier, count=8, seed=3):
    styles, noises = sample_latents(G, torch.zeros(count, dtype=torch.long), seed)
    with torch.no_grad():
        logits = classifier(G.to_unit(G.synthesize(styles, noises)))
    return styles, noises, logits.argmax(1)


@pytest.mark.parametrize("moves", ["style", "noise", "both"])
def test_latent_attack_runs_unchanged_on_v1(G, classifier, moves):
    styles, noises, labels = start(G, classifier)
    layers = G.layer_groups()["middle"]                                  # layers 2, 3
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves=moves,
                           layers=layers, max_iters=4)
    assert result.images.shape == (8, 3, 16, 16) and result.valid.all()
    assert result.success.any()
    for i in range(G.num_layers):
        style_moves = i in layers and moves in ("style", "both")
        noise_moves = i in layers and moves in ("noise", "both")
        assert torch.equal(result.styles.conv[i], styles.conv[i]) != style_moves
        assert torch.equal(result.noises[i], noises[i]) != noise_moves
    # re-rendering from the first moved layer (cache) gives the same attack as full passes
    full = latent_attack(G, classifier, styles, noises, labels, eps=0.05, delta=0.5, moves=moves,
                         layers=layers, max_iters=4, use_cache=False)
    torch.testing.assert_close(result.images, full.images)
    assert torch.equal(result.iterations, full.iterations)
    # the final images are g(y_adv, eta_adv)
    with torch.no_grad():
        torch.testing.assert_close(result.images, G.to_unit(G.synthesize(result.styles, result.noises)),
                                   rtol=1e-5, atol=1e-5)


def test_one_step_is_eq_1_and_2(G, classifier):
    """One non-targeted step on every layer equals y - eps sign(grad_y J), eta - delta sign(grad_eta J)."""
    styles, noises, labels = start(G, classifier, count=4)
    result = latent_attack(G, classifier, styles, noises, labels, eps=0.01, delta=0.1, max_iters=1)
    ys = [y.clone().requires_grad_(True) for y in styles.conv]
    etas = [n.clone().requires_grad_(True) for n in noises]
    logits = classifier(G.to_unit(G.synthesize(Styles(ys, []), etas)))
    loss = F.cross_entropy(logits, logits.argmin(1), reduction="sum")
    grads = torch.autograd.grad(loss, ys + etas)
    for got, t, g, step in zip(result.styles.conv + result.noises, ys + etas, grads, [0.01] * 6 + [0.1] * 6):
        torch.testing.assert_close(got, t.detach() - step * g.sign(), rtol=0, atol=1e-6)
    # v1 has no ToRGB styles: include_torgb moves nothing more
    same = latent_attack(G, classifier, styles, noises, labels, eps=0.01, delta=0.1, max_iters=1, include_torgb=True)
    assert same.styles.torgb == [] and torch.equal(same.images, result.images)
