"""Tests of the pure-PyTorch StyleGAN2 (gatlib.generators.stylegan2): layer conventions, the style (y)
and noise (eta) variables of the paper (§3.1, eq. 1-2), caching, StyleGAN2 properties, D, and the
``layout="stylegan2"`` of real checkpoints (one conv at 4x4; numerics vs upstream: test_checkpoints.py)."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from gatlib.generators import Discriminator, Generator, Styles, count_parameters, to_unit_range
from gatlib.generators.stylegan2 import ModulatedConv, upsample2d, _fir_kernel

B = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny batches: one thread is fastest, and avoids OpenMP spin-waits when other processes share
    the cores (2 threads on a busy 2-core machine made this file 15x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = Generator().eval()
    with torch.no_grad():   # a trained generator has non-zero noise strengths and a learned w_avg
        for i, layer in enumerate(g.layers):
            layer.noise_strength.fill_(0.05 * (i + 1))
        g.mapping.w_avg.normal_()
        g.mapping.w_avg_class.normal_()
    return g


def _inputs(G, seed=0, batch=B):
    gen = torch.Generator().manual_seed(seed)
    z = G.sample_z(batch, gen)
    c = torch.arange(batch) % G.num_classes
    return z, c, G.make_noise(batch, generator=gen)


def test_layer_conventions(G):
    assert G.num_layers == G.num_ws == 8 == 2 * math.log2(32) - 2
    assert G.layer_resolutions == [4, 4, 8, 8, 16, 16, 32, 32]
    assert G.torgb_layers == [1, 3, 5, 7]
    assert G.layer_groups() == {"coarse": [0, 1, 2], "middle": [3, 4, 5], "fine": [6, 7]}
    assert G.consecutive_groups(2) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert G.consecutive_groups(3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert G.torgb_of_layers(G.layer_groups()["fine"]) == [3]
    assert G.channels == {4: 128, 8: 128, 16: 64, 32: 64}
    assert 0.5e6 < count_parameters(G) < 2e6
    clone = Generator(**{**G.config, "channels": {str(k): v for k, v in G.config["channels"].items()}})
    clone.load_state_dict(G.state_dict())   # config (even JSON round-tripped) rebuilds the network


def test_layer_count_256_tiny_channels():
    g = Generator(resolution=256, num_classes=0, z_dim=8, w_dim=8, mapping_layers=1,
                  channels={r: 4 for r in (4, 8, 16, 32, 64, 128, 256)}, image_channels=3)
    assert g.num_layers == 14
    assert [len(v) for v in g.layer_groups().values()] == [5, 5, 4]
    x = g(torch.randn(1, 8))
    assert x.shape == (1, 3, 256, 256) and 0 <= x.min() and x.max() <= 1


def test_shapes(G):
    z, c, noises = _inputs(G)
    w = G.mapping(z, c)
    assert w.shape == (B, G.w_dim)
    styles = G.styles(w)
    assert isinstance(styles, Styles)
    assert [tuple(y.shape) for y in styles.conv] == [(B, 128)] * 5 + [(B, 64)] * 3
    assert [tuple(y.shape) for y in styles.torgb] == [(B, 128), (B, 128), (B, 64), (B, 64)]
    assert [tuple(n.shape) for n in noises] == [(B, 1, r, r) for r in G.layer_resolutions]
    raw = G.synthesize(styles, noises)
    assert raw.shape == (B, 1, 32, 32)
    images = G(z, c, noises=noises)
    torch.testing.assert_close(images, to_unit_range(raw))
    assert images.min() >= 0 and images.max() <= 1
    # a per-layer w (style mixing) with identical rows is the same as the shared w
    torch.testing.assert_close(G.synthesize(G.styles(G.broadcast(w)), noises), raw)


def test_gradients_reach_every_style_and_noise(G):
    z, c, noises = _inputs(G)
    with torch.no_grad():
        styles = G.styles(G.mapping(z, c))
    for y in styles.tensors(torgb=True):
        y.requires_grad_()
    for space in ("input", "scaled"):
        etas = [n.clone().requires_grad_() for n in noises]
        G.synthesize(styles, etas, noise_space=space).square().sum().backward()
        for i, y in enumerate(styles.tensors(torgb=True)):
            assert y.grad is not None and y.grad.abs().sum() > 0, f"no gradient for style {i}"
            y.grad = None
        for i, eta in enumerate(etas):
            assert eta.grad is not None and eta.grad.abs().sum() > 0, f"no gradient for noise {i} ({space})"


@pytest.mark.parametrize("noise_space", ["input", "scaled"])
def test_start_layer_cache_equals_full_pass(G, noise_space):
    z, c, noises = _inputs(G, seed=1)
    with torch.no_grad():
        styles = G.styles(G.mapping(z, c))
        full, record = G.synthesize(styles, noises, noise_space=noise_space, return_cache=True)
        assert sorted(record) == list(range(G.num_layers))
        for k in range(G.num_layers):
            cache = G.cache(styles, noises, k, noise_space=noise_space)
            torch.testing.assert_close(cache[k][0], record[k][0].expand_as(cache[k][0]))
            part = G.synthesize(styles, noises, start_layer=k, cache=cache, noise_space=noise_space)
            torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(G.synthesize(styles, noises, start_layer=k, cache=record,
                                                    noise_space=noise_space), full, rtol=1e-5, atol=1e-5)
    # gradients flow to the recomputed layers' variables
    k = G.layer_groups()["fine"][0]
    y = styles.clone()
    y.conv[k].requires_grad_()
    eta = noises[-1].clone().requires_grad_()
    out = G.synthesize(y, noises[:-1] + [eta], start_layer=k, cache=G.cache(styles, noises, k, noise_space),
                       noise_space=noise_space)
    out.sum().backward()
    assert y.conv[k].grad.abs().sum() > 0 and eta.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        G.synthesize(styles, noises, start_layer=3)


def test_noise_space_input_vs_scaled(G):
    z, c, noises = _inputs(G, seed=2)
    with torch.no_grad():
        styles = G.styles(G.mapping(z, c))
        a = G.synthesize(styles, noises, noise_space="input")
        scaled = [layer.noise_strength * n for layer, n in zip(G.layers, noises)]
        b = G.synthesize(styles, scaled, noise_space="scaled")
        torch.testing.assert_close(a, b)
        # noise matters, and a None entry means no noise in that layer
        assert not torch.allclose(a, G.synthesize(styles, [None] * G.num_layers))


def test_demodulation_invariance(G):
    """StyleGAN2: scaling a conv's style y by a positive constant leaves the image unchanged (the
    demodulation normalises it away); a ToRGB style (no demodulation) is not invariant."""
    z, c, noises = _inputs(G, seed=3)
    with torch.no_grad():
        styles = G.styles(G.mapping(z, c))
        ref = G.synthesize(styles, noises)
        for i in (0, 2, 5):
            s = styles.clone()
            s.conv[i] = s.conv[i] * 3.7
            torch.testing.assert_close(G.synthesize(s, noises), ref, rtol=1e-4, atol=1e-4)
        s = styles.clone()
        s.torgb[-1] = s.torgb[-1] * 3.7
        assert not torch.allclose(G.synthesize(s, noises), ref, atol=1e-3)


def _reference_modconv(layer: ModulatedConv, x, y, noise):
    """NVlabs' fused_modconv=True formulation (per-sample weights, grouped conv), explicit gains."""
    b = x.shape[0]
    w = layer.weight[None] * y[:, None, :, None, None]
    w = w * (w.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    xg = (x * layer.input_gain).reshape(1, -1, *x.shape[2:])
    if layer.up:
        wt = w.transpose(1, 2).flip([3, 4]).reshape(-1, layer.out_channels, 3, 3)
        out = F.conv_transpose2d(xg, wt, stride=2, groups=b).reshape(b, layer.out_channels, *[2 * s + 1 for s in x.shape[2:]])
        out = F.conv2d(out, layer.fir, padding=1, groups=layer.out_channels)
    else:
        out = F.conv2d(xg, w.reshape(-1, layer.in_channels, 3, 3), padding=1, groups=b).reshape(b, layer.out_channels, *x.shape[2:])
    out = out + layer.noise_strength * noise + layer.bias[None, :, None, None]
    return F.leaky_relu(out, 0.2)


@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_matches_grouped_conv_reference(up):
    torch.manual_seed(0)
    layer = ModulatedConv(6, 5, 8, 8, up=up).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x = torch.randn(3, 6, 4 if up else 8, 4 if up else 8, dtype=torch.float64)
    y = torch.randn(3, 6, dtype=torch.float64)
    noise = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(layer(x.clone(), y, noise), _reference_modconv(layer, x, y, noise))


def test_fir_upsampling_is_bilinear_in_the_interior():
    x = torch.randn(2, 3, 8, 8)
    a = upsample2d(x, _fir_kernel(3, 4.0))
    b = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert a.shape == b.shape
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])


def test_truncation(G):
    z, c, _ = _inputs(G, seed=4)
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.0), G.mapping.w_avg_class[c])
    w = G.mapping(z, c)
    torch.testing.assert_close(G.truncate(w, 0.0), G.mapping.w_avg.expand_as(w))
    torch.testing.assert_close(G.truncate(w, 1.0, c), w)
    half = G.truncate(G.broadcast(w), 0.5, c)
    torch.testing.assert_close(half[:, 3], 0.5 * (w + G.mapping.w_avg_class[c]))
    unc = Generator(num_classes=0, channels={4: 8, 8: 8, 16: 8, 32: 8}).eval()
    unc.mapping.w_avg.normal_()
    torch.testing.assert_close(unc.mapping(z, truncation_psi=0.0), unc.mapping.w_avg.expand(B, -1))


def test_w_avg_ema_and_mean_w():
    g = Generator(channels={4: 8, 8: 8, 16: 8, 32: 8})
    z, c = torch.randn(8, 128), torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    g.eval()
    g.mapping(z, c)
    assert g.mapping.w_avg.abs().sum() == 0
    g.train()
    w = g.mapping(z, c)
    torch.testing.assert_close(g.mapping.w_avg, 0.005 * w.detach().mean(0))
    torch.testing.assert_close(g.mapping.w_avg_class[1], 0.005 * w.detach()[2:5].mean(0))
    assert g.mapping.w_avg_class[3:].abs().sum() == 0
    g.eval()
    gen = torch.Generator().manual_seed(0)
    assert g.mean_w(3, n=64, generator=gen).shape == (128,)
    assert g.mean_w(torch.tensor([1, 3, 1]), n=64, generator=gen).shape == (3, 128)
    g.estimate_w_avg(n=64, generator=gen)
    assert (g.mapping.w_avg_class.abs().sum(1) > 0).all()


def test_conditional_mapping_uses_c(G):
    z = torch.randn(1, G.z_dim).expand(G.num_classes, -1)
    w = G.mapping(z, torch.arange(G.num_classes))
    assert torch.cdist(w, w).add(torch.eye(G.num_classes)).min() > 1e-3
    onehot = F.one_hot(torch.arange(G.num_classes), G.num_classes).float()
    torch.testing.assert_close(G.mapping(z, onehot), w)
    with pytest.raises(ValueError):
        G.mapping(z, None)


def test_determinism_with_seeded_generator(G):
    z1, c, n1 = _inputs(G, seed=7)
    z2, _, n2 = _inputs(G, seed=7)
    torch.testing.assert_close(z1, z2)
    for a, b in zip(n1, n2):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(G(z1, c, noises=n1), G(z2, c, noises=n2))
    _, _, n3 = _inputs(G, seed=8)
    assert not torch.allclose(n1[0], n3[0])


def test_discriminator():
    torch.manual_seed(0)
    D = Discriminator()
    x = torch.randn(6, 1, 32, 32)
    c = torch.tensor([0, 1, 2, 3, 4, 5])
    out = D(x, c)
    assert out.shape == (6,)
    assert not torch.allclose(out, D(x, (c + 1) % 10))                   # projection uses c
    # R1 needs a double backward through D
    xr = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(D(xr, c).sum(), xr, create_graph=True)
    g.square().sum().backward()
    assert all(p.grad is not None for name, p in D.named_parameters() if name != "out.bias")
    Du = Discriminator(num_classes=0, channels={4: 8, 8: 8, 16: 8, 32: 8}, image_channels=3)
    assert Du(torch.randn(5, 3, 32, 32)).shape == (5,)


def test_generator_double_backward():
    """Path-length regularisation needs grad of the image w.r.t. w with create_graph."""
    g = Generator(channels={4: 8, 8: 8, 16: 8, 32: 8})
    w = g.mapping(torch.randn(2, 128), torch.tensor([1, 2]))
    img = g.synthesize(g.styles(w), g.make_noise(2))
    (gw,) = torch.autograd.grad((img * torch.randn_like(img)).sum(), w, create_graph=True)
    gw.square().sum().backward()
    assert g.layers[3].weight.grad is not None and g.mapping.fcs[0].weight.grad is not None


# ----------------------------------------------------------------------------------------------
# layout="stylegan2": the layout of real StyleGAN2 checkpoints (one conv at 4x4)


@pytest.fixture(scope="module")
def G2():
    torch.manual_seed(1)
    g = Generator(resolution=16, num_classes=3, z_dim=8, w_dim=8, mapping_layers=2,
                  channels={4: 16, 8: 8, 16: 8}, image_channels=3, layout="stylegan2").eval()
    with torch.no_grad():
        for i, layer in enumerate(g.layers):
            layer.noise_strength.fill_(0.1 * (i + 1))
            layer.bias.normal_()
    return g


def test_stylegan2_layout_conventions(G2):
    # a layer is a w index: 6 at 16 px; 5 convs (one at 4x4); the last w index only feeds the last ToRGB
    assert G2.num_layers == G2.num_ws == 6 and G2.num_convs == 5
    assert G2.conv_resolutions == [4, 8, 8, 16, 16]
    assert G2.layer_resolutions == [4, 8, 8, 16, 16, 16]
    assert G2.torgb_layers == [1, 3, 5]                      # ToRGB j reads w index 2j+1 (upstream)
    assert [layer.up for layer in G2.layers] == [False, True, False, True, False]
    assert [layer.input_gain for layer in G2.layers] == [1.0] + [math.sqrt(2)] * 4
    assert G2.layer_groups() == {"coarse": [0, 1], "middle": [2, 3], "fine": [4, 5]}
    assert G2.consecutive_groups(2) == [[0, 1], [2, 3], [4, 5]]
    assert G2.torgb_of_layers(G2.layer_groups()["fine"]) == [2]
    z, c = torch.randn(B, 8), torch.arange(B) % 3
    styles = G2.styles(G2.mapping(z, c))
    assert [tuple(y.shape) for y in styles.conv] == [(B, 16), (B, 16), (B, 8), (B, 8), (B, 8)]
    assert [tuple(y.shape) for y in styles.torgb] == [(B, 16), (B, 8), (B, 8)]
    assert [tuple(n.shape) for n in G2.make_noise(B)] == [(B, 1, r, r) for r in G2.conv_resolutions]
    assert len(styles.tensors([4, 5])) == 1 and len(styles.tensors([5])) == 0   # layer 5 has no conv
    assert G2(z, c).shape == (B, 3, 16, 16)
    with pytest.raises(ValueError):
        G2.synthesize(styles, G2.make_noise(B) + [torch.zeros(B, 1, 16, 16)])
    # the config rebuilds the same network (keys and shapes)
    clone = Generator(**G2.config)
    assert clone.layout == "stylegan2" and G2.config["layout"] == "stylegan2"
    clone.load_state_dict(G2.state_dict())
    # 1024 px: 18 w indices (the paper's "18 layers"), 17 convs
    big = Generator(resolution=1024, num_classes=0, z_dim=4, w_dim=4, mapping_layers=1,
                    channels={2 ** i: 1 for i in range(2, 11)}, layout="stylegan2")
    assert (big.num_ws, big.num_convs, len(big.torgbs)) == (18, 17, 9)
    assert [len(g) for g in big.layer_groups().values()] == [6, 6, 6]
    with pytest.raises(ValueError):
        Generator(layout="stylegan3")


def test_stylegan2_layout_w_indices(G2):
    """Conv i reads w index i, ToRGB j reads w index 2j+1; the last w index moves only the last
    ToRGB's style."""
    w = G2.mapping(torch.randn(2, 8), torch.tensor([0, 1]))
    ws = G2.broadcast(w)
    ref = G2.styles(ws)
    for k in range(G2.num_ws):
        moved = ws.clone()
        moved[:, k] += 1.0
        s = G2.styles(moved)
        changed_conv = [i for i in range(G2.num_convs) if not torch.equal(s.conv[i], ref.conv[i])]
        changed_rgb = [j for j in range(len(G2.torgbs)) if not torch.equal(s.torgb[j], ref.torgb[j])]
        assert changed_conv == ([k] if k < G2.num_convs else [])
        assert changed_rgb == G2.torgb_of_layers([k])


@pytest.mark.parametrize("noise_space", ["input", "scaled"])
def test_stylegan2_layout_cache_equals_full_pass(G2, noise_space):
    gen = torch.Generator().manual_seed(3)
    z, c = G2.sample_z(B, gen), torch.arange(B) % 3
    noises = G2.make_noise(B, generator=gen)
    with torch.no_grad():
        styles = G2.styles(G2.mapping(z, c))
        full, record = G2.synthesize(styles, noises, noise_space=noise_space, return_cache=True)
        assert sorted(record) == list(range(G2.num_layers))
        for k in range(G2.num_layers):
            cache = G2.cache(styles, noises, k, noise_space=noise_space)
            torch.testing.assert_close(cache[k][0], record[k][0].expand_as(cache[k][0]))
            part = G2.synthesize(styles, noises, start_layer=k, cache=cache, noise_space=noise_space)
            torch.testing.assert_close(part, full, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(G2.synthesize(styles, noises, start_layer=k, cache=record,
                                                     noise_space=noise_space), full, rtol=1e-5, atol=1e-5)
    # from the last layer on, only the last ToRGB runs: its style gets a gradient, earlier ones none
    last = G2.num_layers - 1
    y = styles.clone()
    for t in (y.torgb[-1], y.torgb[-2], y.conv[-1]):
        t.requires_grad_()
    out = G2.synthesize(y, noises, start_layer=last, cache=G2.cache(styles, noises, last, noise_space),
                        noise_space=noise_space)
    out.square().sum().backward()
    assert y.torgb[-1].grad.abs().sum() > 0 and y.torgb[-2].grad is None and y.conv[-1].grad is None
    # gradients reach every style and noise in a full pass
    y = styles.clone()
    etas = [n.clone().requires_grad_() for n in noises]
    for t in y.tensors(torgb=True):
        t.requires_grad_()
    G2.synthesize(y, etas, noise_space=noise_space).square().sum().backward()
    assert all(t.grad.abs().sum() > 0 for t in y.tensors(torgb=True) + etas)


def test_conv_clamp_and_const_noise():
    torch.manual_seed(0)
    kw = dict(resolution=8, num_classes=0, z_dim=4, w_dim=4, mapping_layers=1, channels={4: 4, 8: 4},
              layout="stylegan2")
    free, clamped = Generator(**kw).eval(), Generator(**kw, conv_clamp=0.1).eval()
    clamped.load_state_dict(free.state_dict())
    assert clamped.config["conv_clamp"] == 0.1 and free.config["conv_clamp"] is None
    styles = free.styles(free.mapping(torch.randn(2, 4)))
    noises = free.make_noise(2)
    a, b = free.synthesize(styles, noises), clamped.synthesize(styles, noises)
    assert not torch.allclose(a, b)
    x = clamped.layers[0](clamped.const[None], styles.conv[0], noises[0])
    assert x.abs().max() <= 0.1 / math.sqrt(2) + 1e-7        # the gained activation is within +-0.1
    rgb = clamped.torgbs[0](x, styles.torgb[0])
    assert rgb.abs().max() <= 0.1 + 1e-7
    huge = Generator(**kw, conv_clamp=1e9).eval()
    huge.load_state_dict(free.state_dict())
    torch.testing.assert_close(huge.synthesize(styles, noises), a)
    # the attacks differentiate through a clamped generator (NVlabs' CIFAR-10 model has conv_clamp=256):
    # the gradient equals that of an unclamped one where nothing is clipped
    for G in (huge, free):
        with torch.no_grad():   # leaf styles, as the attacks have them
            y = G.styles(G.mapping(torch.randn(2, 4, generator=torch.Generator().manual_seed(1))))
        for t in y.tensors(torgb=True):
            t.requires_grad_()
        G.synthesize(y, noises).square().sum().backward()
        grads = [t.grad for t in y.tensors(torgb=True)]
        if G is huge:
            clamped_grads = grads
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    for got, want in zip(clamped_grads, grads):
        torch.testing.assert_close(got, want)
    # fixed noise images: non-persistent buffers, broadcast over the batch
    assert free.const_noise() is None
    fixed = [torch.randn(r, r) for r in free.conv_resolutions]
    free.set_const_noise(fixed)
    assert "const_noise_0" not in free.state_dict()
    assert [tuple(n.shape) for n in free.const_noise()] == [(1, 1, r, r) for r in free.conv_resolutions]
    torch.testing.assert_close(free.synthesize(styles, free.const_noise()),
                               free.synthesize(styles, [n.expand(2, 1, -1, -1) for n in free.const_noise()]))
    with pytest.raises(ValueError):
        free.set_const_noise(fixed[:-1])


# ----------------------------------------------------------------------------------------------
# Bad input: one clear ValueError per problem, naming it (shape and length checks only)


def _tiny(num_classes=3, layout="gat"):
    torch.manual_seed(0)
    return Generator(resolution=16, num_classes=num_classes, z_dim=8, w_dim=8, mapping_layers=1,
                     channels={4: 4, 8: 4, 16: 4}, layout=layout).eval()


@pytest.mark.parametrize("layout", ["gat", "stylegan2"])
def test_a_wrong_number_of_noises_is_named(layout):
    g = _tiny(layout=layout)        # "stylegan2": one noise per conv, one fewer than the w indices
    styles, noises = g.styles(g.mapping(torch.randn(2, 8), torch.tensor([0, 1]))), g.make_noise(2)
    for wrong in (noises[:-1], noises + [noises[-1]]):
        with pytest.raises(ValueError, match=rf"need {g.num_convs} noises, one per conv .*got {len(wrong)}"):
            g.synthesize(styles, wrong)
        with pytest.raises(ValueError, match=rf"need {g.num_convs} noises, one per conv .*got {len(wrong)}"):
            g.cache(styles, wrong, 2)


def test_a_noise_of_the_wrong_shape_is_named():
    g = _tiny()
    styles, noises = g.styles(g.mapping(torch.randn(2, 8), torch.tensor([0, 1]))), g.make_noise(2)
    assert g.conv_resolutions == [4, 4, 8, 8, 16, 16]
    for bad in (torch.zeros(2, 1, 16, 16),     # another layer's resolution
                torch.zeros(3, 1, 8, 8),       # another batch
                torch.zeros(2, 8, 8),          # no channel dimension
                torch.zeros(2, 4, 8, 8)):      # one noise per channel
        wrong = noises[:3] + [bad] + noises[4:]
        message = rf"noise 3 \(layer 3, 8x8\) must have shape \(2, 1, 8, 8\).*got {re.escape(str(tuple(bad.shape)))}"
        with pytest.raises(ValueError, match=message):
            g.synthesize(styles, wrong)
        with pytest.raises(ValueError, match=message):           # the cache path checks them too
            g.cache(styles, wrong, 5)
        cache = g.cache(styles, noises, 2)
        with pytest.raises(ValueError, match=message):
            g.synthesize(styles, wrong, start_layer=2, cache=cache)
    # what stays valid: per-sample noises, batch-1 noises broadcast over the batch, None entries
    with torch.no_grad():
        shared = [n[:1] for n in noises]
        torch.testing.assert_close(g.synthesize(styles, shared),
                                   g.synthesize(styles, [n.expand(2, -1, -1, -1) for n in shared]))
        g.synthesize(styles, [None] * g.num_convs)
    # fixed noise images of the wrong size are named too (not a raw reshape error)
    with pytest.raises(ValueError, match=r"noise image 2 \(layer 2, 8x8\) must hold 64 values, got shape \(4, 4\)"):
        g.set_const_noise([torch.zeros(r, r) for r in g.conv_resolutions[:2]] + [torch.zeros(4, 4)] * 4)
    assert g.const_noise() is None                               # nothing half-stored


def test_a_per_layer_w_with_the_wrong_number_of_rows_is_named():
    for g in (_tiny(), _tiny(layout="stylegan2")):
        w = g.mapping(torch.randn(2, 8), torch.tensor([0, 1]))
        for rows in (g.num_ws - 1, g.num_ws + 1):            # an IndexError / silently dropped rows before
            with pytest.raises(ValueError, match=rf"one row per w index: \(B, num_ws={g.num_ws}, 8\), got {rows} rows"):
                g.styles(w[:, None].expand(-1, rows, -1))
        with pytest.raises(ValueError, match=r"w must be \(B, w_dim=8\) or \(B, num_ws=\d+, w_dim=8\), got shape \(2, 5\)"):
            g.styles(w[:, :5])
        with pytest.raises(ValueError, match=r"w must be .* got shape \(8,\)"):
            g.styles(w[0])
        torch.testing.assert_close(g.synthesize(g.styles(g.broadcast(w)), g.make_noise(2, torch.Generator().manual_seed(0))),
                                   g.synthesize(g.styles(w), g.make_noise(2, torch.Generator().manual_seed(0))))


def test_cache_checks_noise_space_as_synthesize_does():
    g = _tiny()
    styles, noises = g.styles(g.mapping(torch.randn(2, 8), torch.tensor([0, 1]))), g.make_noise(2)
    message = r"noise_space must be one of \('input', 'scaled'\), got 'scaeld'"
    with pytest.raises(ValueError, match=message):
        g.cache(styles, noises, 3, noise_space="scaeld")         # a typo used to mean "scaled" here
    with pytest.raises(ValueError, match=message):
        g.synthesize(styles, noises, noise_space="scaeld")
    with pytest.raises(ValueError, match=message):
        g(torch.randn(2, 8), torch.tensor([0, 1]), noise_space="scaeld")


@pytest.mark.parametrize("start_layer", [-1, 6, 7])
def test_start_layer_outside_the_layers_is_named(start_layer):
    g = _tiny()                    # 6 layers: start_layer lies in 0..5
    styles, noises = g.styles(g.mapping(torch.randn(2, 8), torch.tensor([0, 1]))), g.make_noise(2)
    message = rf"start_layer must lie in \[0, 6\) \(G.num_layers=6\), got {start_layer}"
    with pytest.raises(ValueError, match=message):
        g.cache(styles, noises, start_layer)
    _, record = g.synthesize(styles, noises, return_cache=True)
    with pytest.raises(ValueError, match=message):
        g.synthesize(styles, noises, start_layer=start_layer, cache={**record, start_layer: record[0]})


def test_an_unconditional_generator_refuses_class_labels():
    g = _tiny(num_classes=0)
    z = torch.randn(2, 8)
    w = g.mapping(z)
    labels = torch.tensor([3, 1])
    message = r"unconditional \(num_classes=0\): it takes no class labels, so c must be None, got "
    for call in (lambda: g.mapping(z, labels), lambda: g(z, labels), lambda: g.mapping(z, 0, truncation_psi=0.5),
                 lambda: g.truncate(w, 0.5, labels), lambda: g.mapping.center(labels, 2),
                 lambda: g.mean_w(labels, n=8)):
        with pytest.raises(ValueError, match=message):
            call()
    # no labels, or NVlabs' empty (B, 0) label tensor of an unconditional network, keep working
    torch.testing.assert_close(g.mapping(z, torch.zeros(2, 0), truncation_psi=0.5), g.mapping(z, truncation_psi=0.5))
    assert g.mean_w(None, n=8).shape == (8,)
    # a conditional generator still needs them
    with pytest.raises(ValueError, match="class-conditional: pass class labels"):
        _tiny().mapping(z, None)
