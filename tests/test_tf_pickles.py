"""TensorFlow-era NVlabs pickles (``dnnlib.tflib.network.Network``): StyleGAN v1 -> ``GeneratorV1``,
StyleGAN2 -> ``Generator(layout="stylegan2")``, read without executing anything from the file.

The fixtures are written the way NVlabs' TF code writes them: a stand-in ``Network`` class with the
module and name ``dnnlib.tflib.network.Network`` whose ``__getstate__`` returns TF's state dict
(``version``, ``name``, ``static_kwargs``, ``components``, ``build_module_src``, ``build_func_name``,
``variables`` = (name, numpy array) pairs, TF layouts: dense [in, out], conv [kh, kw, in, out]),
pickled as ``(G, D, Gs)`` with plain ``pickle.dump``. The variables come from one of our models
(exported to TF names), and the loaded model is checked twice: against that model, and against a
forward pass written here from NVlabs' TF code (``networks_stylegan.py`` / ``networks_stylegan2.py``:
``G_style``/``G_main``, ``G_mapping``, ``G_synthesis``/``G_synthesis_stylegan2``), which reads the
variables by their TF names only.
"""
from __future__ import annotations

import math
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gatlib.generators import Generator, GeneratorV1
from gatlib.generators.checkpoints import (
    CheckpointError,
    TFNetworkRecord,
    UnsafeCheckpointError,
    load_generator,
    load_nvlabs_pkl,
    load_tf_pkl,
    read_nvlabs_pkl,
    read_tf_pkl,
    tf_params,
)

pytestmark = pytest.mark.usefixtures("one_thread")
TOL = dict(rtol=1e-5, atol=1e-5)          # float64 forward passes; only float32 weights are rounded
SQRT2 = math.sqrt(2.0)
CHANNELS = {4: 16, 8: 12, 16: 8}


# ==============================================================================================
# The writer: a stand-in for dnnlib.tflib.network.Network


@pytest.fixture
def tf_env(monkeypatch, tmp_path):
    """Fake ``dnnlib.tflib.network`` module with a ``Network`` class that pickles like TF's. Its
    ``__setstate__`` and the ``build_module_src`` of every network write a marker if ever run."""
    marker = tmp_path / "code-ran"

    class Network:
        def __init__(self, name, func_name, static_kwargs, variables, components=None, version=4):
            src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('src ran')\n"
            self._state = dict(version=version, name=name, static_kwargs=dict(static_kwargs),
                               components=dict(components or {}), build_module_src=src,
                               build_func_name=func_name, variables=list(variables.items()))

        def __getstate__(self):
            return self._state

        def __setstate__(self, state):
            marker.write_text("Network.__setstate__ ran")

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    network = types.ModuleType("dnnlib.tflib.network")
    network.Network = Network
    for name, module in [("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.tflib", types.ModuleType("dnnlib.tflib")),
                         ("dnnlib.tflib.network", network)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(Network=Network, marker=marker)


def write_snapshot(env, path, Gs, protocol=4):
    """``(G, D, Gs)`` as NVlabs' ``misc.save_pkl`` writes it; G is a differently named copy."""
    G = env.Network("G", Gs._state["build_func_name"], Gs._state["static_kwargs"],
                    OrderedDict(Gs._state["variables"]), Gs._state["components"])
    D = env.Network("D", "D_basic", {"resolution": 16},
                    OrderedDict([("lod", np.float32(0)), ("4x4/Conv/weight", np.ones((3, 3, 4, 4), np.float32))]))
    with open(path, "wb") as f:
        pickle.dump((G, D, Gs), f, protocol=protocol)


def np32(t):
    return t.detach().double().numpy().astype(np.float32)


def randomize(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
        for layer in getattr(module, "layers", []):
            layer.noise_strength.copy_(0.3 + 0.2 * torch.rand(layer.noise_strength.shape, generator=gen))
        module.mapping.w_avg.normal_(generator=gen)
    return module


# ==============================================================================================
# StyleGAN v1: export of a GeneratorV1 to TF variables, and v1's TF forward pass


def v1_model(num_classes=0, mapping_fmaps=None, fused_scale="auto", seed=0):
    torch.manual_seed(seed)
    G = GeneratorV1(resolution=16, num_classes=num_classes, z_dim=8, w_dim=8, mapping_layers=3,
                    mapping_fmaps=mapping_fmaps, channels=CHANNELS, fused_scale=fused_scale).eval()
    randomize(G, seed)
    G.set_const_noise([torch.randn(1, 1, r, r) for r in G.conv_resolutions])
    return G


def v1_scope(G, i):
    r = G.layers[i].resolution
    return "4x4/Const" if i == 0 else "4x4/Conv" if i == 1 else f"{r}x{r}/Conv0_up" if i % 2 == 0 else f"{r}x{r}/Conv1"


def v1_network(env, G, kwargs=None, extra_synthesis=None):
    """A v1 ``Gs``: G_style with G_mapping and G_synthesis components, variables in TF layout."""
    mapping = OrderedDict()
    if G.num_classes:
        mapping["LabelConcat/weight"] = np32(G.mapping.label_embed)
    for i, fc in enumerate(G.mapping.fcs):
        mapping[f"Dense{i}/weight"] = np32(fc.weight.t())
        mapping[f"Dense{i}/bias"] = np32(fc.bias)
    synthesis = OrderedDict(lod=np.float32(0))
    for i, n in enumerate(G.const_noise()):
        synthesis[f"noise{i}"] = np32(n)
    synthesis["4x4/Const/const"] = np32(G.const[None])
    for i, layer in enumerate(G.layers):
        s = v1_scope(G, i)
        if layer.conv is not None:
            synthesis[f"{s}/weight"] = np32(layer.conv.weight.permute(2, 3, 1, 0))
        synthesis[f"{s}/Noise/weight"] = np32(layer.noise_strength)
        synthesis[f"{s}/bias"] = np32(layer.bias)
        one = torch.cat([torch.ones(layer.out_channels), torch.zeros(layer.out_channels)])
        synthesis[f"{s}/StyleMod/weight"] = np32(layer.affine.weight.t())
        synthesis[f"{s}/StyleMod/bias"] = np32(layer.affine.bias - one)
    synthesis["ToRGB_lod0/weight"] = np32(G.to_rgb.weight.permute(2, 3, 1, 0))
    synthesis["ToRGB_lod0/bias"] = np32(G.to_rgb.bias)
    synthesis["ToRGB_lod1/weight"] = np.ones((1, 1, 12, 3), np.float32)    # progressive-growing leftovers
    synthesis["ToRGB_lod1/bias"] = np.zeros(3, np.float32)
    synthesis.update(extra_synthesis or {})
    kw = {**dict(num_channels=3, resolution=16, label_size=G.num_classes, latent_size=8, dlatent_size=8,
                 mapping_layers=3, structure="linear"), **(kwargs or {})}
    if G.config["mapping_fmaps"] != G.w_dim:
        kw["mapping_fmaps"] = G.config["mapping_fmaps"]
    m = env.Network("G_mapping", "G_mapping", dict(kw, dlatent_broadcast=6), mapping)
    s = env.Network("G_synthesis", "G_synthesis", kw, synthesis)
    top = OrderedDict(lod=np.float32(0), dlatent_avg=np32(G.mapping.w_avg))
    return env.Network("G", "G_style", kw, top, {"synthesis": s, "mapping": m})


def t64(params, name):
    return torch.from_numpy(np.asarray(params[name])).double()


def lrelu(x):
    return torch.maximum(x, 0.2 * x)


def tf_v1_forward(params, kw, z, labels, psi, cutoff):
    """NVlabs ``networks_stylegan.G_style`` at lod 0, ``randomize_noise=False``, from TF variables."""
    p = lambda name: t64(params, name)  # noqa: E731
    # G_mapping
    x = z
    if "mapping/LabelConcat/weight" in params:
        x = torch.cat([x, labels @ p("mapping/LabelConcat/weight")], 1)
    x = x * torch.rsqrt(x.square().mean(1, keepdim=True) + 1e-8)
    lrmul = kw.get("mapping_lrmul", 0.01)
    for i in range(kw["mapping_layers"]):
        w = p(f"mapping/Dense{i}/weight")
        x = lrelu(x @ (w * SQRT2 / math.sqrt(w.shape[0]) * lrmul) + p(f"mapping/Dense{i}/bias") * lrmul)
    num_layers = 2 * int(math.log2(kw["resolution"])) - 2
    dlatents = x[:, None].repeat(1, num_layers, 1)
    # G_style truncation: lerp(dlatent_avg, dlatents, where(layer < cutoff, psi, 1))
    coefs = torch.tensor([psi if i < cutoff else 1.0 for i in range(num_layers)], dtype=torch.float64)[None, :, None]
    avg = p("dlatent_avg")
    dlatents = avg + (dlatents - avg) * coefs

    # G_synthesis
    def conv2d(x, w, gain=SQRT2):
        w = w * gain / math.sqrt(np.prod(w.shape[:-1]))
        return F.conv2d(x, w.permute(3, 2, 0, 1), padding=w.shape[0] // 2)

    def upscale2d_conv2d(x, w, fused):
        if not fused:               # conv2d(upscale2d(x)): nearest neighbour by tiling
            return conv2d(x.repeat_interleave(2, 2).repeat_interleave(2, 3), w)
        w = w * SQRT2 / math.sqrt(np.prod(w.shape[:-1]))
        w = w.permute(0, 1, 3, 2)                                         # [k, k, out, in]
        w = F.pad(w.permute(2, 3, 0, 1), [1, 1, 1, 1]).permute(2, 3, 0, 1)   # pad the spatial dims
        w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
        # tf.nn.conv2d_transpose(x, w [k, k, out, in], stride 2, SAME)
        return F.conv_transpose2d(x, w.permute(3, 2, 0, 1), stride=2, padding=1)

    def blur(x):
        f = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
        f = (f[:, None] * f[None, :]) / 16
        return F.conv2d(x, f.expand(x.shape[1], 1, 3, 3), padding=1, groups=x.shape[1])

    def epilogue(x, i, scope):
        x = x + p(f"synthesis/noise{i}") * p(f"{scope}/Noise/weight").reshape(1, -1, 1, 1)
        x = lrelu(x + p(f"{scope}/bias").reshape(1, -1, 1, 1))
        x = x - x.mean((2, 3), keepdim=True)
        x = x * torch.rsqrt(x.square().mean((2, 3), keepdim=True) + 1e-8)
        w = p(f"{scope}/StyleMod/weight")
        style = dlatents[:, i] @ (w / math.sqrt(w.shape[0])) + p(f"{scope}/StyleMod/bias")
        style = style.reshape(-1, 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]

    x = p("synthesis/4x4/Const/const").repeat(z.shape[0], 1, 1, 1)
    x = epilogue(x, 0, "synthesis/4x4/Const")
    x = epilogue(conv2d(x, p("synthesis/4x4/Conv/weight")), 1, "synthesis/4x4/Conv")
    fused_scale = kw.get("fused_scale", "auto")
    for res in range(3, int(math.log2(kw["resolution"])) + 1):
        s = f"synthesis/{2 ** res}x{2 ** res}"
        fused = min(x.shape[2:]) * 2 >= 128 if fused_scale == "auto" else fused_scale
        x = epilogue(blur(upscale2d_conv2d(x, p(f"{s}/Conv0_up/weight"), fused)), res * 2 - 4, f"{s}/Conv0_up")
        x = epilogue(conv2d(x, p(f"{s}/Conv1/weight")), res * 2 - 3, f"{s}/Conv1")
    return conv2d(x, p("synthesis/ToRGB_lod0/weight"), gain=1) + p("synthesis/ToRGB_lod0/bias").reshape(1, -1, 1, 1)


@pytest.mark.parametrize("num_classes, mapping_fmaps, fused_scale, protocol",
                         [(0, None, "auto", 4), (3, 10, True, 2)])
def test_stylegan1_pickle_matches_tf_forward(tf_env, tmp_path, num_classes, mapping_fmaps, fused_scale, protocol):
    ref = v1_model(num_classes, mapping_fmaps, fused_scale)
    kwargs = {"truncation_cutoff": 4} if fused_scale == "auto" else {"fused_scale": True}
    Gs = v1_network(tf_env, ref, kwargs)
    path = tmp_path / "karras2019stylegan-tiny-16x16.pkl"
    write_snapshot(tf_env, path, Gs, protocol=protocol)
    G = load_generator(path)
    assert not tf_env.marker.exists()                     # neither __setstate__ nor build_module_src ran
    assert isinstance(G, GeneratorV1) and not G.training
    assert G.checkpoint_info["format"] == "tensorflow" and G.checkpoint_info["entry"] == "Gs"
    assert G.checkpoint_info["version"] == "stylegan1" and G.checkpoint_info["build_func_name"] == "G_style"
    assert G.config == ref.config | {"truncation_cutoff": 4 if fused_scale == "auto" else 8}
    assert [layer.fused for layer in G.layers] == [layer.fused for layer in ref.layers]
    torch.testing.assert_close(G.mapping.w_avg, ref.mapping.w_avg)
    torch.testing.assert_close(G.mapping.w_avg_class, ref.mapping.w_avg.expand(max(num_classes, 1), -1))
    for got, want in zip(G.const_noise(), ref.const_noise()):
        torch.testing.assert_close(got, want)

    G, ref = G.double(), ref.double()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    onehot = F.one_hot(labels, num_classes).double() if num_classes else None
    params, kw = tf_params(read_tf_pkl(path)[2]), Gs._state["static_kwargs"]
    with torch.no_grad():
        for psi in (1.0, 0.6):
            want = tf_v1_forward(params, kw, z, onehot, psi, G.truncation_cutoff)
            w = G.mapping(z, labels)
            ws = G.truncate(w, psi, None, G.truncation_cutoff) if psi != 1 else w
            torch.testing.assert_close(G.synthesize(G.styles(ws), G.const_noise()), want, **TOL)
            torch.testing.assert_close(ref.synthesize(ref.styles(ws), ref.const_noise()), want, **TOL)
            torch.testing.assert_close(G(z, labels, truncation_psi=psi, noises=G.const_noise()), G.to_unit(want), **TOL)


# ==============================================================================================
# StyleGAN2 (config F): export of a Generator(layout="stylegan2"), and StyleGAN2's TF forward pass


def sg2_model(num_classes=0, seed=0):
    torch.manual_seed(seed)
    G = Generator(resolution=16, num_classes=num_classes, z_dim=8, w_dim=8, mapping_layers=2, channels=CHANNELS,
                  image_channels=3, layout="stylegan2").eval()
    randomize(G, seed)
    G.set_const_noise([torch.randn(1, 1, r, r) for r in G.conv_resolutions])
    return G


def sg2_network(env, G, kwargs=None, extra_synthesis=None):
    mapping = OrderedDict()
    if G.num_classes:
        mapping["LabelEmbed/weight"] = np32(G.mapping.embed.weight.t())
        mapping["LabelEmbed/bias"] = np32(G.mapping.embed.bias)
    for i, fc in enumerate(G.mapping.fcs):
        mapping[f"Dense{i}/weight"] = np32(fc.weight.t())
        mapping[f"Dense{i}/bias"] = np32(fc.bias)
    synthesis = OrderedDict()
    for k, n in enumerate(G.const_noise()):
        synthesis[f"noise{k}"] = np32(n)
    synthesis["4x4/Const/const"] = np32(G.const[None])
    for k, layer in enumerate(G.layers):
        r = layer.resolution
        s = "4x4/Conv" if k == 0 else f"{r}x{r}/Conv0_up" if layer.up else f"{r}x{r}/Conv1"
        fan_in = layer.weight[0].numel()
        synthesis[f"{s}/weight"] = np32((layer.weight * math.sqrt(fan_in)).permute(2, 3, 1, 0))
        synthesis[f"{s}/mod_weight"] = np32(layer.affine.weight.t())
        synthesis[f"{s}/mod_bias"] = np32(layer.affine.bias - 1)
        synthesis[f"{s}/noise_strength"] = np32(layer.noise_strength)
        synthesis[f"{s}/bias"] = np32(layer.bias)
    for rgb in G.torgbs:
        s = f"{rgb.resolution}x{rgb.resolution}/ToRGB"
        synthesis[f"{s}/weight"] = np32(rgb.weight.t()[None, None])
        synthesis[f"{s}/mod_weight"] = np32(rgb.affine.weight.t())
        synthesis[f"{s}/mod_bias"] = np32(rgb.affine.bias - 1)
        synthesis[f"{s}/bias"] = np32(rgb.bias)
    synthesis.update(extra_synthesis or {})
    kw = dict(num_channels=3, resolution=16, label_size=G.num_classes, latent_size=8, dlatent_size=8,
              mapping_layers=2, fmap_base=16 << 10, architecture="skip")
    kw.update(kwargs or {})
    m = env.Network("G_mapping", "G_mapping", dict(kw, dlatent_broadcast=6), mapping)
    s = env.Network("G_synthesis", "G_synthesis_stylegan2", kw, synthesis)
    top = OrderedDict(lod=np.float32(0), dlatent_avg=np32(G.mapping.w_avg))
    return env.Network("G", "G_main", kw, top, {"synthesis": s, "mapping": m})


def tf_sg2_forward(params, kw, z, labels, psi):
    """NVlabs ``networks_stylegan2.G_main`` (``G_synthesis_stylegan2``, skip, fused_modconv=False,
    ``randomize_noise=False``), from TF variables."""
    p = lambda name: t64(params, name)  # noqa: E731
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    k = k[:, None] * k[None, :]
    k = k / k.sum() * 4                                                   # _setup_kernel(k) * gain * factor^2

    def dense(x, w, lrmul=1.0):
        return x @ (w * lrmul / math.sqrt(w.shape[0]))

    def fir(x, pad0, pad1, up=1):           # _upfirdn_2d_ref: zero insertion, padding, conv with k
        if up == 2:
            x = torch.stack([x, torch.zeros_like(x)], -1).reshape(*x.shape[:3], -1)
            x = torch.stack([x, torch.zeros_like(x)], -2).reshape(x.shape[0], x.shape[1], -1, x.shape[3])
        x = F.pad(x, [pad0, pad1, pad0, pad1])
        return F.conv2d(x, k.flip([0, 1]).expand(x.shape[1], 1, 4, 4), groups=x.shape[1])

    # G_mapping
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    if "mapping/LabelEmbed/weight" in params:
        y = dense(labels, p("mapping/LabelEmbed/weight")) + p("mapping/LabelEmbed/bias")
        x = torch.cat([x, y * torch.rsqrt(y.square().mean(1, keepdim=True) + 1e-8)], 1)
    for i in range(kw["mapping_layers"]):
        x = lrelu(dense(x, p(f"mapping/Dense{i}/weight"), 0.01) + 0.01 * p(f"mapping/Dense{i}/bias")) * SQRT2
    num_layers = 2 * int(math.log2(kw["resolution"])) - 2
    avg = p("dlatent_avg")
    dlatents = avg + (x[:, None].repeat(1, num_layers, 1) - avg) * psi

    def modconv(x, y, scope, up=False, demodulate=True):
        w = p(f"{scope}/weight")
        w = w / math.sqrt(np.prod(w.shape[:-1]))                          # [k, k, I, O]
        s = dense(y, p(f"{scope}/mod_weight")) + p(f"{scope}/mod_bias") + 1
        ww = w[None] * s[:, None, None, :, None]
        if demodulate:
            d = torch.rsqrt(ww.square().sum((1, 2, 3)) + 1e-8)
            ww = ww * d[:, None, None, None, :]
        out = []
        for b in range(x.shape[0]):                                      # one sample at a time
            wb = ww[b]
            if up:   # upsample_conv_2d: conv2d_transpose(VALID) with w[::-1, ::-1], then upfirdn pad (1, 1)
                t = F.conv_transpose2d(x[b:b + 1], wb.flip([0, 1]).permute(2, 3, 0, 1), stride=2)
                out.append(fir(t, 1, 1))
            else:
                out.append(F.conv2d(x[b:b + 1], wb.permute(3, 2, 0, 1), padding=wb.shape[0] // 2))
        return torch.cat(out)

    def layer(x, i, scope, up=False):
        x = modconv(x, dlatents[:, i], scope, up=up)
        x = x + p(f"synthesis/noise{i}") * p(f"{scope}/noise_strength")
        return lrelu(x + p(f"{scope}/bias").reshape(1, -1, 1, 1)) * SQRT2

    def torgb(x, y, res):
        scope = f"synthesis/{2 ** res}x{2 ** res}/ToRGB"
        t = modconv(x, dlatents[:, res * 2 - 3], scope, demodulate=False) + p(f"{scope}/bias").reshape(1, -1, 1, 1)
        return t if y is None else y + t

    x = p("synthesis/4x4/Const/const").repeat(z.shape[0], 1, 1, 1)
    x = layer(x, 0, "synthesis/4x4/Conv")
    y = torgb(x, None, 2)
    for res in range(3, int(math.log2(kw["resolution"])) + 1):
        s = f"synthesis/{2 ** res}x{2 ** res}"
        x = layer(x, res * 2 - 5, f"{s}/Conv0_up", up=True)
        x = layer(x, res * 2 - 4, f"{s}/Conv1")
        y = torgb(x, fir(y, 2, 1, up=2), res)                            # upsample_2d: up 2, pad (2, 1)
    return y


@pytest.mark.parametrize("num_classes", [0, 4])
def test_stylegan2_pickle_matches_tf_forward(tf_env, tmp_path, num_classes):
    ref = sg2_model(num_classes)
    Gs = sg2_network(tf_env, ref)
    path = tmp_path / "stylegan2-tiny-config-f.pkl"
    write_snapshot(tf_env, path, Gs)
    G = load_generator(path)
    assert not tf_env.marker.exists()
    assert isinstance(G, Generator) and G.layout == "stylegan2" and G.checkpoint_info["version"] == "stylegan2"
    assert (G.resolution, G.num_classes, G.z_dim, G.w_dim, G.channels) == (16, num_classes, 8, 8, CHANNELS)
    assert G.num_ws == 6 and G.num_convs == 5
    torch.testing.assert_close(G.mapping.w_avg, ref.mapping.w_avg)

    G, ref = G.double(), ref.double()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1]) if num_classes else None
    onehot = F.one_hot(labels, num_classes).double() if num_classes else None
    params, kw = tf_params(read_tf_pkl(path)[2]), Gs._state["static_kwargs"]
    with torch.no_grad():
        for psi in (1.0, 0.5):
            want = tf_sg2_forward(params, kw, z, onehot, psi)
            w = G.mapping.truncate(G.mapping(z, labels), psi)                # TF truncates towards dlatent_avg
            torch.testing.assert_close(G.synthesize(G.styles(w), G.const_noise()), want, **TOL)
            torch.testing.assert_close(ref.synthesize(ref.styles(w), ref.const_noise()), want, **TOL)


# ==============================================================================================
# Records, routing and refusals


def test_tf_records_and_routing(tf_env, tmp_path):
    Gs = v1_network(tf_env, v1_model())
    path = tmp_path / "snapshot.pkl"
    write_snapshot(tf_env, path, Gs)
    data = read_tf_pkl(path)
    assert isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkRecord) for n in data)
    net = data[2]
    assert (net.version, net.name, net.build_func_name) == (4, "G", "G_style")
    assert sorted(net.components) == ["mapping", "synthesis"] and "src ran" in net.build_module_src
    assert net.components["mapping"].static_kwargs["dlatent_broadcast"] == 6
    params = tf_params(net)
    assert params["mapping/Dense0/weight"].shape == (8, 8)
    assert params["synthesis/4x4/Const/const"].shape == (1, 16, 4, 4)
    assert params["lod"] == 0 and isinstance(params["dlatent_avg"], np.ndarray)
    assert not tf_env.marker.exists()
    # the NVlabs reader refuses the Network class and points to the TF reader; load_nvlabs_pkl routes
    with pytest.raises(UnsafeCheckpointError, match="dnnlib.tflib.network.Network.*load_tf_pkl"):
        read_nvlabs_pkl(path)
    assert isinstance(load_nvlabs_pkl(path), GeneratorV1)
    # a single Network (no tuple) loads too
    single = tmp_path / "Gs.pkl"
    single.write_bytes(pickle.dumps(Gs, protocol=4))
    G = load_tf_pkl(single)
    assert G.checkpoint_info["entry"] is None and not G.training
    # gatlib.zoo.generator hands paths to load_generator
    from gatlib import zoo
    assert isinstance(zoo.generator(str(path)), GeneratorV1)
    # a gatlib {"state_dict", "config"} file of a GeneratorV1 round-trips
    saved = tmp_path / "v1.pt"
    torch.save({"state_dict": G.state_dict(), "config": G.config}, saved)
    H = load_generator(saved)
    assert isinstance(H, GeneratorV1) and H.config == G.config


class Payload:
    """``__reduce__`` -> ``fn(arg)``: what a malicious pickle runs on plain ``pickle.load``."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def test_hostile_tf_pickles_are_refused(tf_env, tmp_path):
    pwned = tmp_path / "pwned"
    G = v1_model()
    system = f"{os.system.__module__}.system"
    cases = {
        # a payload in static_kwargs, next to genuine networks
        system: v1_network(tf_env, G, {"structure": Payload(os.system, f"touch {pwned}")}),
        # a global that is harmless elsewhere but not on the TF allow-list, hidden in static_kwargs
        "collections.OrderedDict": v1_network(tf_env, G, {"structure": OrderedDict(a=1)}),
        "builtins.eval": v1_network(tf_env, G, {"structure": eval}),
        # a torch tensor instead of a numpy array
        "torch._utils._rebuild_tensor_v2": v1_network(tf_env, G, extra_synthesis={"x": torch.zeros(2)}),
    }
    path = tmp_path / "evil.pkl"
    for name, Gs in cases.items():
        write_snapshot(tf_env, path, Gs)
        for loader in (load_generator, load_tf_pkl, read_tf_pkl):
            with pytest.raises(UnsafeCheckpointError) as err:
                loader(path)
            assert f"`{name}`" in str(err.value) and "Nothing from the file was executed" in str(err.value)
    # the payload first, the Network after: routed to the NVlabs reader, refused there as well
    path.write_bytes(pickle.dumps((Payload(os.system, f"touch {pwned}"), v1_network(tf_env, G)), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=system):
        load_generator(path)
    # an object array; a malformed state; a Network without state (TF's __setstate__ never got one)
    Gs = v1_network(tf_env, G, extra_synthesis={"x": np.array([object()], dtype=object)})
    write_snapshot(tf_env, path, Gs)
    with pytest.raises(UnsafeCheckpointError):
        load_generator(path)
    Gs = v1_network(tf_env, G)
    Gs._state["variables"] = {"not": "a list"}
    path.write_bytes(pickle.dumps(Gs, protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="malformed TensorFlow-era Network"):
        load_generator(path)
    bare = object.__new__(tf_env.Network)
    bare._state = None
    tf_env.Network.__getstate__ = lambda self: None
    path.write_bytes(pickle.dumps((bare, bare, bare), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match="TensorFlow-era.*without its state"):
        load_generator(path)
    assert not pwned.exists() and not tf_env.marker.exists()


def test_unsupported_tf_networks_are_named(tf_env, tmp_path):
    path = tmp_path / "x.pkl"
    G1, G2 = v1_model(), sg2_model()

    def refused(Gs, match):
        write_snapshot(tf_env, path, Gs)
        with pytest.raises(CheckpointError, match=match):
            load_generator(path)

    refused(v1_network(tf_env, G1, {"use_pixel_norm": True}), "use_pixel_norm=True is not supported")
    refused(v1_network(tf_env, G1, {"blur_filter": [1, 3, 3, 1]}), "blur_filter")
    refused(v1_network(tf_env, G1, {"my_fork_option": 1}), r"unknown TensorFlow keyword arguments \['my_fork_option'\]")
    refused(v1_network(tf_env, G1, extra_synthesis={"lod": np.float32(1.5)}), "lod = 1.5")
    refused(v1_network(tf_env, G1, extra_synthesis={"32x32/Extra/weight": np.ones(2, np.float32)}),
            "resolution 16 but synthesis layers up to 32")
    refused(v1_network(tf_env, G1, extra_synthesis={"4x4/Extra/weight": np.ones(2, np.float32)}),
            r"does not know.*4x4/Extra/weight")
    refused(sg2_network(tf_env, G2, {"architecture": "resnet"}), "architecture='resnet'")
    refused(sg2_network(tf_env, G2, extra_synthesis={"ToRGB_lod0/weight": np.ones((1, 1, 8, 3), np.float32)}),
            "progressive growing")
    bad = sg2_network(tf_env, G2)
    bad._state["components"]["mapping"]._state["variables"].append(("LabelConcat/weight", np.ones((2, 8), np.float32)))
    refused(bad, "LabelConcat")
    # a discriminator pickled alone, and a tuple that is not (G, D, Gs)
    D = tf_env.Network("D", "D_basic", {}, OrderedDict(lod=np.float32(0)))
    path.write_bytes(pickle.dumps(D, protocol=4))
    with pytest.raises(CheckpointError, match="not a StyleGAN generator"):
        load_generator(path)
    path.write_bytes(pickle.dumps((D, D), protocol=4))
    with pytest.raises(CheckpointError, match=r"expected \(G, D, Gs\)"):
        load_generator(path)
    # truncated file
    write_snapshot(tf_env, path, v1_network(tf_env, G1))
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError):
        load_generator(path)
    assert not tf_env.marker.exists()


@pytest.mark.notebooks
@pytest.mark.parametrize("version", ["stylegan1", "stylegan2"])
def test_tf_pickles_run_chapter_02_on_the_paper_profile(tf_env, tmp_path, paper_chapter_02, version):
    """A TF-era pickle of each version goes through chapter 02's attack end to end (issue: the
    paper's own generators on the paper profile): class-conditional, 3 classes, the paper's steps."""
    if version == "stylegan1":
        Gs = v1_network(tf_env, v1_model(num_classes=3), {"truncation_cutoff": 4})
    else:
        Gs = sg2_network(tf_env, sg2_model(num_classes=3))
    path = tmp_path / f"{version}-tiny.pkl"
    write_snapshot(tf_env, path, Gs)
    result = paper_chapter_02(path, num_classes=3)
    assert not tf_env.marker.exists()                   # the notebook's loader executed nothing either
    assert result["parameters"]["eps"] == 0.004 and result["parameters"]["delta"] == 0.2
    assert any("success" in key for key in result["numbers"]), sorted(result["numbers"])[:20]
