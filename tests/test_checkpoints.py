"""Tests of the safe checkpoint loaders (gatlib.generators.checkpoints).

The fixtures are written the way the upstream *writers* write them, not by a gatlib exporter:

* rosinality/stylegan2-pytorch: a compact port of its ``model.py`` Generator (same module tree, so
  ``state_dict()`` has rosinality's exact key names and shapes; fused modulated conv, upfirdn2d
  blur, FusedLeakyReLU), saved with ``torch.save`` as ``train.py`` does (``g``, ``d``, ``g_ema``,
  optimiser states, ``args`` = ``argparse.Namespace``, ``ada_aug_p``) or as ``convert_weight.py``
  does (``g_ema`` + ``latent_avg``).
* NVlabs stylegan2-ada-pytorch: a compact port of ``training/networks.py`` (fused
  ``modulated_conv2d``, ``conv2d_resample``, ``upfirdn2d`` reference, ``bias_act`` with clamp,
  conditional mapping) whose classes reduce like ``torch_utils.persistence`` classes
  (``_reconstruct_persistent_obj(meta)`` with ``module_src``, ``class_name``, ``state``), pickled
  with plain ``pickle.dump`` (tensor storages then go through ``torch.storage._load_from_bytes``).

The ports' forward passes are the references the converted ``Generator`` must reproduce.
"""
from __future__ import annotations

import argparse
import builtins
import io
import math
import os
import pickle
import pickletools
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gatlib.generators import Generator
from gatlib.generators.checkpoints import (
    CheckpointError,
    PersistentRecord,
    SafeUnpickler,
    TorchModuleRecord,
    UnsafeCheckpointError,
    load_generator,
    load_nvlabs_pkl,
    load_rosinality,
    load_tf_pkl,
    read_nvlabs_pkl,
    read_tf_pkl,
    torch_load_safe,
)

TOL = dict(rtol=1e-5, atol=1e-5)   # compared in float64: only the float32 rounding of converted weights remains (~1e-6)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ==============================================================================================
# rosinality/stylegan2-pytorch, model.py (ported; CPU code paths of op/)


def make_kernel(k):
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    k /= k.sum()
    return k


def upfirdn2d_native(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    _, channel, in_h, in_w = input.shape
    input = input.reshape(-1, in_h, in_w, 1)
    _, in_h, in_w, minor = input.shape
    kernel_h, kernel_w = kernel.shape
    out = input.view(-1, in_h, 1, in_w, 1, minor)
    out = F.pad(out, [0, 0, 0, up_x - 1, 0, 0, 0, up_y - 1])
    out = out.view(-1, in_h * up_y, in_w * up_x, minor)
    out = F.pad(out, [0, 0, max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    out = out[:, max(-pad_y0, 0): out.shape[1] - max(-pad_y1, 0), max(-pad_x0, 0): out.shape[2] - max(-pad_x1, 0), :]
    out = out.permute(0, 3, 1, 2)
    out = out.reshape([-1, 1, in_h * up_y + pad_y0 + pad_y1, in_w * up_x + pad_x0 + pad_x1])
    w = torch.flip(kernel, [0, 1]).view(1, 1, kernel_h, kernel_w)
    out = F.conv2d(out, w)
    out = out.reshape(-1, minor, in_h * up_y + pad_y0 + pad_y1 - kernel_h + 1,
                      in_w * up_x + pad_x0 + pad_x1 - kernel_w + 1)
    out = out.permute(0, 2, 3, 1)
    out = out[:, ::down_y, ::down_x, :]
    out_h = (in_h * up_y + pad_y0 + pad_y1 - kernel_h) // down_y + 1
    out_w = (in_w * up_x + pad_x0 + pad_x1 - kernel_w) // down_x + 1
    return out.view(-1, channel, out_h, out_w)


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    return upfirdn2d_native(input, kernel, up, up, down, down, pad[0], pad[1], pad[0], pad[1])


def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
    rest_dim = [1] * (input.ndim - bias.ndim - 1)
    return F.leaky_relu(input + bias.view(1, bias.shape[0], *rest_dim), negative_slope=0.2) * scale


class PixelNorm(nn.Module):
    def forward(self, input):
        return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)


class Upsample(nn.Module):
    def __init__(self, kernel, factor=2):
        super().__init__()
        self.factor = factor
        kernel = make_kernel(kernel) * (factor ** 2)
        self.register_buffer("kernel", kernel)
        p = kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, input):
        return upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)


class Blur(nn.Module):
    def __init__(self, kernel, pad, upsample_factor=1):
        super().__init__()
        kernel = make_kernel(kernel)
        if upsample_factor > 1:
            kernel = kernel * (upsample_factor ** 2)
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, input):
        return upfirdn2d(input, self.kernel, pad=self.pad)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, input):
        if self.activation:
            out = F.linear(input, self.weight * self.scale)
            return fused_leaky_relu(out, self.bias * self.lr_mul)
        return F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """rosinality's ModulatedConv2d, ``fused=True`` path (its default)."""

    def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                 blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.eps = 1e-8
        self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_channel, out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(list(blur_kernel), pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def forward(self, input, style):
        batch, in_channel, height, width = input.shape
        style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * style
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
        if self.upsample:
            input = input.view(1, batch * in_channel, height, width)
            weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                    self.kernel_size)
            out = F.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
            _, _, height, width = out.shape
            out = out.view(batch, self.out_channel, height, width)
            return self.blur(out)
        input = input.view(1, batch * in_channel, height, width)
        out = F.conv2d(input, weight, padding=self.padding, groups=batch)
        _, _, height, width = out.shape
        return out.view(batch, self.out_channel, height, width)


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image, noise=None):
        if noise is None:
            batch, _, height, width = image.shape
            noise = image.new_empty(batch, 1, height, width).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channel, size=4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, input):
        return self.input.repeat(input.shape[0], 1, 1, 1)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel))

    def forward(self, input):
        return fused_leaky_relu(input, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                    blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, input, style, noise=None):
        return self.activate(self.noise(self.conv(input, style), noise=noise))


class ToRGB(nn.Module):
    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=(1, 3, 3, 1)):
        super().__init__()
        if upsample:
            self.upsample = Upsample(list(blur_kernel))
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, input, style, skip=None):
        out = self.conv(input, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class RosinalityGenerator(nn.Module):
    """rosinality's Generator; ``narrow`` scales its channel table (as some forks do) to keep the
    test fast; everything else is as upstream."""

    def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, lr_mlp=0.01, narrow=1.0):
        super().__init__()
        self.size, self.style_dim = size, style_dim
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp,
                                                              activation="fused_lrelu") for _ in range(n_mlp)])
        base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
                256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
        self.channels = {k: int(v * narrow) for k, v in base.items()}
        self.input = ConstantInput(self.channels[4])
        self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.log_size = int(math.log(size, 2))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        in_channel = self.channels[4]
        for layer_idx in range(self.num_layers):
            res = (layer_idx + 5) // 2
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, 2 ** res, 2 ** res))
        for i in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel
        self.n_latent = self.log_size * 2 - 2

    def forward(self, styles, truncation=1, truncation_latent=None, input_is_latent=False, noise=None,
                randomize_noise=True):
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else \
                [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]
        latent = styles[0].unsqueeze(1).repeat(1, self.n_latent, 1) if styles[0].ndim < 3 else styles[0]
        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2],
                                                        noise[2::2], self.to_rgbs):
            out = conv1(out, latent[:, i], noise=noise1)
            out = conv2(out, latent[:, i + 1], noise=noise2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip, None


def _randomize(module: nn.Module, seed: int) -> None:
    """A trained generator: non-zero noise strengths and biases."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("noise.weight") or name.endswith("noise_strength"):
                p.copy_(0.2 + 0.3 * torch.rand(p.shape, generator=gen))
            elif name.endswith("bias") and "modulation" not in name and "affine" not in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def _rosinality_model(seed=0, size=64, style_dim=16, n_mlp=2, channel_multiplier=1, narrow=1 / 16):
    torch.manual_seed(seed)
    g = RosinalityGenerator(size, style_dim, n_mlp, channel_multiplier=channel_multiplier, narrow=narrow).eval()
    _randomize(g, seed)
    return g


def _rosinality_args(**overrides):
    args = dict(path="lmdb/ffhq", iter=800000, batch=16, n_sample=64, size=64, r1=10.0, path_regularize=2.0,
                path_batch_shrink=2, d_reg_every=16, g_reg_every=4, mixing=0.9, ckpt=None, lr=0.002,
                channel_multiplier=1, wandb=False, local_rank=0, augment=False, augment_p=0.0,
                ada_target=0.6, ada_length=500000, ada_every=256, latent=16, n_mlp=2, start_iter=0,
                distributed=False)
    args.update(overrides)
    return argparse.Namespace(**args)


def _rosinality_training_checkpoint(path, g_ema, args=None):
    """What rosinality's train.py writes every few thousand iterations."""
    g = _rosinality_model(seed=1)
    d = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(4, 1))
    g_optim = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(d.parameters(), lr=0.002, betas=(0.0, 0.99))
    g(torch.randn(2, 16)[None])[0].square().mean().backward()
    g_optim.step()
    torch.save({"g": g.state_dict(), "d": d.state_dict(), "g_ema": g_ema.state_dict(),
                "g_optim": g_optim.state_dict(), "d_optim": d_optim.state_dict(),
                "args": _rosinality_args() if args is None else args, "ada_aug_p": 0.0}, path)


ROSINALITY_KEYS_16PX = """style.1.weight style.1.bias style.2.weight style.2.bias input.input conv1.conv.weight
conv1.conv.modulation.weight conv1.conv.modulation.bias conv1.noise.weight conv1.activate.bias to_rgb1.bias
to_rgb1.conv.weight to_rgb1.conv.modulation.weight to_rgb1.conv.modulation.bias convs.0.conv.weight
convs.0.conv.blur.kernel convs.0.conv.modulation.weight convs.0.conv.modulation.bias convs.0.noise.weight
convs.0.activate.bias convs.1.conv.weight convs.1.conv.modulation.weight convs.1.conv.modulation.bias
convs.1.noise.weight convs.1.activate.bias convs.2.conv.weight convs.2.conv.blur.kernel
convs.2.conv.modulation.weight convs.2.conv.modulation.bias convs.2.noise.weight convs.2.activate.bias
convs.3.conv.weight convs.3.conv.modulation.weight convs.3.conv.modulation.bias convs.3.noise.weight
convs.3.activate.bias to_rgbs.0.bias to_rgbs.0.upsample.kernel to_rgbs.0.conv.weight
to_rgbs.0.conv.modulation.weight to_rgbs.0.conv.modulation.bias to_rgbs.1.bias to_rgbs.1.upsample.kernel
to_rgbs.1.conv.weight to_rgbs.1.conv.modulation.weight to_rgbs.1.conv.modulation.bias noises.noise_0
noises.noise_1 noises.noise_2 noises.noise_3 noises.noise_4""".split()


def test_rosinality_port_has_upstream_key_names():
    g = RosinalityGenerator(16, 8, 2, narrow=1 / 64)
    assert list(g.state_dict()) == ROSINALITY_KEYS_16PX
    assert g.state_dict()["conv1.conv.weight"].shape == (1, 8, 8, 3, 3)
    assert g.state_dict()["to_rgb1.bias"].shape == (1, 3, 1, 1)


def test_rosinality_training_checkpoint_matches_upstream(tmp_path):
    ref = _rosinality_model()
    path = tmp_path / "010000.pt"
    _rosinality_training_checkpoint(path, ref)
    G = load_generator(path)
    assert isinstance(G, Generator) and not G.training
    assert G.layout == "stylegan2" and G.config["layout"] == "stylegan2"
    assert (G.resolution, G.z_dim, G.w_dim, G.num_classes, G.image_channels) == (64, 16, 16, 0, 3)
    assert G.channels == {4: 32, 8: 32, 16: 32, 32: 32, 64: 16}
    assert G.num_ws == G.num_layers == ref.n_latent == 10 and G.num_convs == ref.num_layers == 9
    assert G.checkpoint_info["format"] == "rosinality" and G.checkpoint_info["entry"] == "g_ema"

    G, ref = G.double(), ref.double()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, 16, generator=gen, dtype=torch.float64)
    noises = G.make_noise(3, generator=gen)
    with torch.no_grad():
        expected, _ = ref([z], noise=noises)
        torch.testing.assert_close(G.synthesize(G.styles(G.mapping(z)), noises), expected, **TOL)
        # one w per layer (style mixing): checks conv i <-> w i and ToRGB j <-> w 2j+1
        ws = torch.randn(3, ref.n_latent, 16, generator=gen, dtype=torch.float64)
        expected, _ = ref([ws], input_is_latent=True, noise=noises)
        torch.testing.assert_close(G.synthesize(G.styles(ws), noises), expected, **TOL)
        # upstream's fixed noise buffers (randomize_noise=False) are G.const_noise()
        expected, _ = ref([z], randomize_noise=False)
        torch.testing.assert_close(G.synthesize(G.styles(G.mapping(z)), G.const_noise()), expected, **TOL)
        # start_layer / cache reproduce the full pass on the converted model
        styles = G.styles(ws)
        full = G.synthesize(styles, noises)
        for k in (1, 4, G.num_layers - 1):
            part = G.synthesize(styles, noises, start_layer=k, cache=G.cache(styles, noises, k))
            torch.testing.assert_close(part, full, **TOL)
    # no latent_avg in a training checkpoint: w_avg is estimated (rosinality's mean_latent)
    assert G.checkpoint_info["latent_avg"] is False and G.mapping.w_avg.abs().sum() > 0
    assert torch.allclose(G.mapping.w_avg, ref.style(torch.randn(4096, 16, dtype=torch.float64)).mean(0), atol=0.15)


def test_rosinality_g_ema_only_with_latent_avg_and_truncation(tmp_path):
    ref = _rosinality_model(seed=3, size=16, style_dim=8, n_mlp=3, channel_multiplier=2, narrow=1 / 32)
    latent_avg = torch.randn(8)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    # convert_weight.py's output, in the pre-1.6 (non-zip) torch.save format of the 2020 releases
    torch.save({"g_ema": ref.state_dict(), "latent_avg": latent_avg}, path, _use_new_zipfile_serialization=False)
    G = load_rosinality(path)
    assert G.mapping.w_avg.tolist() == latent_avg.tolist()
    assert G.config["mapping_layers"] == 3 and G.channels == {4: 16, 8: 16, 16: 16}
    G, ref, latent_avg = G.double(), ref.double(), latent_avg.double()
    z = torch.randn(4, 8, dtype=torch.float64)
    noises = G.make_noise(4)
    with torch.no_grad():
        expected, _ = ref([z], truncation=0.5, truncation_latent=latent_avg, noise=noises)
        got = G.synthesize(G.styles(G.mapping(z, truncation_psi=0.5)), noises)
    torch.testing.assert_close(got, expected, **TOL)


def test_rosinality_refusals_and_errors(tmp_path):
    ref = _rosinality_model(seed=4, size=16, style_dim=8, narrow=1 / 32)
    sd = ref.state_dict()
    # a fork with extra weights: listed, not silently dropped
    path = tmp_path / "fork.pt"
    torch.save({"g_ema": {**sd, "extra.weight": torch.zeros(3)}}, path)
    with pytest.raises(CheckpointError, match="extra.weight"):
        load_generator(path)
    # args that contradict the weights
    path = tmp_path / "mismatch.pt"
    torch.save({"g_ema": sd, "args": _rosinality_args(size=256, latent=8)}, path)
    with pytest.raises(CheckpointError, match="size"):
        load_generator(path)
    # SWAGAN
    path = tmp_path / "swagan.pt"
    torch.save({"g_ema": sd, "args": _rosinality_args(arch="swagan", size=16, latent=8)}, path)
    with pytest.raises(CheckpointError, match="swagan"):
        load_rosinality(path)
    # not rosinality at all
    path = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    with pytest.raises(CheckpointError, match="model"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="not a rosinality checkpoint"):
        load_rosinality(path)


class CustomArg:
    """A user class inside ``args``: torch.load(weights_only=True) must refuse it (and never call
    its ``__setstate__``, which would write the marker file)."""

    def __setstate__(self, state):
        with open(state["marker"], "w") as f:
            f.write("ran")


def test_rosinality_with_unknown_global_is_refused(tmp_path):
    marker = tmp_path / "marker"
    custom = CustomArg.__new__(CustomArg)
    custom.__dict__["marker"] = str(marker)
    path = tmp_path / "custom.pt"
    _rosinality_training_checkpoint(path, _rosinality_model(), args=_rosinality_args(custom=custom))
    with pytest.raises(UnsafeCheckpointError, match="CustomArg") as err:
        load_generator(path)
    assert isinstance(err.value, pickle.UnpicklingError) and "weights_only=False" in str(err.value)
    assert not marker.exists()
    # os.system in a .pt
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "args": Payload(os.system, f"touch {marker}")}, path)
    with pytest.raises(UnsafeCheckpointError, match=f"{os.system.__module__}.system"):
        load_generator(path)
    assert not marker.exists()


@pytest.mark.parametrize("zip_format", [False, True])
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.check_call"])
def test_rosinality_hostile_root_object_is_refused(tmp_path, kind, zip_format):
    """The payload is the file's root object (``torch.save(payload)``), not nested in a dict: refused
    before the loader looks for ``g_ema``, and nothing runs."""
    marker = tmp_path / "pwned"
    fn, arg, _ = _hostile(kind, marker)
    path = tmp_path / "evil-root.pt"
    torch.save(Payload(fn, arg), path, _use_new_zipfile_serialization=zip_format)
    renamed = tmp_path / "evil-root.pkl"          # a torch.save file named .pkl goes to the same reader
    renamed.write_bytes(path.read_bytes())
    # torch names a protocol-2 global as written (Python 2 names: `exec`, `commands.check_call`)
    named = rf"the global `([\w.]+\.)?{fn.__name__}`"
    for loader, where in ((load_generator, path), (load_rosinality, path), (torch_load_safe, path),
                          (load_nvlabs_pkl, renamed), (load_generator, renamed)):
        with pytest.raises(UnsafeCheckpointError, match=named) as err:
            loader(where)
        assert isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists()


def test_gatlib_format_roundtrip(tmp_path):
    for layout in ("gat", "stylegan2"):
        torch.manual_seed(0)
        g = Generator(resolution=16, num_classes=3, z_dim=8, w_dim=8, mapping_layers=2,
                      channels={4: 8, 8: 8, 16: 4}, layout=layout).eval()
        path = tmp_path / f"{layout}.pt"
        torch.save({"state_dict": g.state_dict(), "config": g.config, "name": "x"}, path)
        G = load_generator(path)
        assert G.layout == layout and G.checkpoint_info["format"] == "gatlib"
        z, c = torch.randn(2, 8), torch.tensor([0, 2])
        noises = g.make_noise(2)
        torch.testing.assert_close(G(z, c, noises=noises), g(z, c, noises=noises))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_generator(tmp_path / "nope.pt")
    for name, data in [("garbage.pt", b"not a checkpoint at all"), ("garbage.pkl", b"\x80\x04garbage"),
                       ("text.pkl", b"hello"), ("blob.bin", b"\x00\x01\x02")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError):
            load_generator(tmp_path / name)
    good = tmp_path / "good.pt"
    torch.save({"g_ema": _rosinality_model(size=16, style_dim=8, narrow=1 / 32).state_dict()}, good)
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError):
        load_generator(tmp_path / "truncated.pt")


# ==============================================================================================
# NVlabs stylegan2-ada-pytorch, training/networks.py (ported; reference paths of torch_utils/ops)


def nv_setup_filter(f):
    f = torch.as_tensor(f, dtype=torch.float32)
    f = f.ger(f)
    return f / f.sum()


def nv_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    batch_size, num_channels, in_height, in_width = x.shape
    padx0, padx1, pady0, pady1 = [padding] * 4 if isinstance(padding, int) else padding
    x = x.reshape([batch_size, num_channels, in_height, 1, in_width, 1])
    x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
    x = x.reshape([batch_size, num_channels, in_height * up, in_width * up])
    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0): x.shape[2] - max(-pady1, 0), max(-padx0, 0): x.shape[3] - max(-padx1, 0)]
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f[np.newaxis, np.newaxis].repeat([num_channels, 1] + [1] * f.ndim)
    x = F.conv2d(input=x, weight=f, groups=num_channels)
    return x[:, :, ::down, ::down]


def nv_upsample2d(x, f, up=2):
    fw = f.shape[-1]
    p = [(fw + up - 1) // 2, (fw - up) // 2, (fw + up - 1) // 2, (fw - up) // 2]
    return nv_upfirdn2d(x, f, up=up, padding=p, gain=up * up)


def nv_conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    kh, kw = w.shape[2:]
    if not flip_weight and (kw > 1 or kh > 1):
        w = w.flip([2, 3])
    op = F.conv_transpose2d if transpose else F.conv2d
    return op(x, w, stride=stride, padding=padding, groups=groups)


def nv_conv2d_resample(x, w, f=None, up=1, padding=0, groups=1, flip_weight=True):
    out_channels, in_channels_per_group, kh, kw = w.shape
    fw = fh = 1 if f is None else f.shape[-1]
    px0 = px1 = py0 = py1 = padding
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_channels_per_group, kh, kw)
            w = w.transpose(1, 2)
            w = w.reshape(groups * in_channels_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = nv_conv2d_wrapper(x=x, w=w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                              flip_weight=(not flip_weight))
        return nv_upfirdn2d(x=x, f=f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2)
    assert px0 == px1 == py0 == py1 >= 0
    return nv_conv2d_wrapper(x=x, w=w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)


def nv_modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None, demodulate=True,
                        flip_weight=True):
    """networks.py ``modulated_conv2d`` with ``fused_modconv=True`` (its eval-mode default), fp32."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = nv_conv2d_resample(x=x, w=w, f=resample_filter, up=up, padding=padding, groups=batch_size,
                           flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x


def nv_bias_act(x, b=None, act="linear", gain=None, clamp=None):
    if b is not None:
        x = x + b.reshape([-1 if i == 1 else 1 for i in range(x.ndim)])
    def_gain = 1.0
    if act == "lrelu":
        x, def_gain = F.leaky_relu(x, 0.2), np.sqrt(2)
    gain = def_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None and clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def nv_normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class Persistent(nn.Module):
    """Reduces like a ``torch_utils.persistence.persistent_class`` instance."""

    module_src = "class Generator: pass\n"

    def remember(self, *args, **kwargs):
        self._init_args, self._init_kwargs = args, kwargs

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=Persistent.module_src, class_name=type(self).__name__,
                    state=self.__dict__)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


class FullyConnectedLayer(Persistent):
    def __init__(self, in_features, out_features, bias=True, activation="linear", lr_multiplier=1, bias_init=0):
        super().__init__()
        self.remember(in_features, out_features, bias=bias, activation=activation, lr_multiplier=lr_multiplier,
                      bias_init=bias_init)
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight * self.weight_gain
        b = self.bias
        if b is not None and self.bias_gain != 1:
            b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return nv_bias_act(x.matmul(w.t()), b, act=self.activation)


class MappingNetwork(Persistent):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.remember(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers)
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim else 0
        features_list = [z_dim + embed_features] + [w_dim] * num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features_list[idx], features_list[idx + 1],
                                                          activation="lrelu", lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1):
        x = nv_normalize_2nd_moment(z)            # upstream casts z and c to float32; kept in the caller's
        if self.c_dim > 0:                         # dtype here so that the test can compare in float64
            y = nv_normalize_2nd_moment(self.embed(c))
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class SynthesisLayer(Persistent):
    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1, conv_clamp=None):
        super().__init__()
        self.remember(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=up, conv_clamp=conv_clamp)
        self.resolution, self.up, self.use_noise, self.activation = resolution, up, True, "lrelu"
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", nv_setup_filter([1, 3, 3, 1]))
        self.padding = kernel_size // 2
        self.act_gain = np.sqrt(2)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode="random", gain=1):
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        flip_weight = (self.up == 1)
        x = nv_modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                                resample_filter=self.resample_filter, flip_weight=flip_weight)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return nv_bias_act(x, self.bias, act=self.activation, gain=act_gain, clamp=act_clamp)


class ToRGBLayer(Persistent):
    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None):
        super().__init__()
        self.remember(in_channels, out_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = nv_modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False)
        return nv_bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(Persistent):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, conv_clamp=None,
                 use_fp16=False):
        super().__init__()
        self.remember(in_channels, out_channels, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                      is_last=is_last, conv_clamp=conv_clamp, use_fp16=use_fp16)
        self.in_channels, self.w_dim, self.resolution, self.img_channels = in_channels, w_dim, resolution, img_channels
        self.is_last, self.architecture, self.use_fp16, self.channels_last = is_last, "skip", use_fp16, False
        self.register_buffer("resample_filter", nv_setup_filter([1, 3, 3, 1]))
        self.num_conv = self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        conv_clamp=conv_clamp)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x, img, ws, noise_mode="random"):
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            img = nv_upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter))
        img = img.add_(y) if img is not None else y
        return x, img


class SynthesisNetwork(Persistent):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=0,
                 conv_clamp=None):
        super().__init__()
        self.remember(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                      channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                      conv_clamp=conv_clamp)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(in_channels, channels_dict[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, conv_clamp=conv_clamp,
                                   use_fp16=res >= fp16_resolution)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f"b{res}", block)

    def forward(self, ws, noise_mode="random"):
        block_ws, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv
        x = img = None
        for res, cur_ws in zip(self.block_resolutions, block_ws):
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, noise_mode=noise_mode)
        return img


class NVGenerator(Persistent):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs):
        super().__init__()
        self.remember(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                      img_channels=img_channels, mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, noise_mode="random"):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)


NVGenerator.__name__ = NVGenerator.__qualname__ = "Generator"   # the class_name NVlabs pickles carry


class Discriminator(Persistent):
    def __init__(self):
        super().__init__()
        self.b4 = FullyConnectedLayer(8, 4, activation="lrelu")
        self.extra = nn.ModuleList([nn.Identity()])       # a plain torch container, pickled by reference
        self.register_buffer("resample_filter", nv_setup_filter([1, 3, 3, 1]))


class AugmentPipe(Persistent):
    def __init__(self):
        super().__init__()
        self.xflip, self.rotate90 = 1.0, 1.0
        self.register_buffer("p", torch.zeros([]))
        self.matrix = np.eye(3, dtype=np.float32)          # a numpy array in the state


@pytest.fixture
def nvlabs_env(monkeypatch, tmp_path):
    """Fake ``torch_utils.persistence`` and ``dnnlib.util`` modules, so that the port's objects pickle
    with the global names NVlabs pickles carry. The reconstruct function (and the module source)
    write a marker file if anything ever runs them."""
    marker = tmp_path / "code-ran"
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):
        marker.write_text("NVlabs' reconstruct function ran")
        raise AssertionError("must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence

    class EasyDict(dict):
        def __getattr__(self, name):
            try:
                return self[name]
            except KeyError:
                raise AttributeError(name) from None

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    dnnlib, util = types.ModuleType("dnnlib"), types.ModuleType("dnnlib.util")
    util.EasyDict, dnnlib.util = EasyDict, util
    for name, module in [("torch_utils", torch_utils), ("torch_utils.persistence", persistence),
                         ("dnnlib", dnnlib), ("dnnlib.util", util)]:
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(Persistent, "module_src",
                        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\n"
                        "class Generator:\n    pass\n")
    return types.SimpleNamespace(marker=marker, EasyDict=EasyDict)


def _nvlabs_generator(env, c_dim=0, conv_clamp=None, seed=0, resolution=16):
    torch.manual_seed(seed)
    G = NVGenerator(z_dim=12, c_dim=c_dim, w_dim=16, img_resolution=resolution, img_channels=3,
                    mapping_kwargs=env.EasyDict(num_layers=2),
                    synthesis_kwargs=env.EasyDict(channel_base=256, channel_max=32, num_fp16_res=4,
                                                  conv_clamp=conv_clamp)).eval()
    _randomize(G, seed)
    with torch.no_grad():
        G.mapping.w_avg.normal_()
    return G


def _nvlabs_snapshot(env, path, G_ema, protocol=pickle.DEFAULT_PROTOCOL):
    """What stylegan2-ada-pytorch's training_loop.py writes (``pickle.dump(snapshot_data, f)``)."""
    data = dict(training_set_kwargs=dict(env.EasyDict(class_name="training.dataset.ImageFolderDataset",
                                                      path="~/datasets/cifar10.zip", use_labels=True,
                                                      max_size=50000, xflip=False, resolution=16)),
                G=_nvlabs_generator(env, G_ema.c_dim, seed=5, resolution=G_ema.img_resolution), D=Discriminator(),
                G_ema=G_ema,
                augment_pipe=AugmentPipe())
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return data


def _globals_in(path):
    """The globals a pickle file asks for (recorded by the safe unpickler as it reads)."""
    seen = set()

    class Recording(SafeUnpickler):
        def find_class(self, module, name):
            seen.add(f"{module}.{name}")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Recording(f).load()
    return seen


@pytest.mark.parametrize("c_dim, conv_clamp, protocol", [(0, None, 3), (4, 0.5, 4), (0, 256, 2)])
def test_nvlabs_pickle_matches_upstream(nvlabs_env, tmp_path, c_dim, conv_clamp, protocol):
    ref = _nvlabs_generator(nvlabs_env, c_dim=c_dim, conv_clamp=conv_clamp)
    path = tmp_path / "network-snapshot-000100.pkl"
    _nvlabs_snapshot(nvlabs_env, path, ref, protocol=protocol)
    # the storages inside went through torch's plain-pickle path
    assert {"torch.storage._load_from_bytes", "torch._utils._rebuild_tensor_v2",
            "torch_utils.persistence._reconstruct_persistent_obj"} <= _globals_in(path)
    G = load_generator(path)
    assert not nvlabs_env.marker.exists()                 # neither module_src nor the reduce function ran
    assert G.layout == "stylegan2" and G.checkpoint_info == {"format": "nvlabs", "path": str(path), "entry": "G_ema"}
    assert (G.resolution, G.z_dim, G.w_dim, G.num_classes, G.image_channels) == (16, 12, 16, c_dim, 3)
    assert G.channels == {4: 32, 8: 32, 16: 16} and G.num_ws == ref.num_ws == 6 and G.num_convs == 5
    assert G.conv_clamp == (None if conv_clamp is None else float(conv_clamp))
    torch.testing.assert_close(G.mapping.w_avg, ref.mapping.w_avg)

    G, ref = G.double(), ref.double()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(4, 12, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 1, 3, 1])
    c = F.one_hot(labels, c_dim).double() if c_dim else None
    with torch.no_grad():
        for psi in (1.0, 0.6):
            expected = ref(z, c, truncation_psi=psi, noise_mode="const")
            got = G.synthesize(G.styles(G.mapping(z, labels if c_dim else None, truncation_psi=psi)), G.const_noise())
            torch.testing.assert_close(got, expected, **TOL)
        ws = torch.randn(4, ref.num_ws, 16, generator=gen, dtype=torch.float64)    # one w per layer
        torch.testing.assert_close(G.synthesize(G.styles(ws), G.const_noise()),
                                   ref.synthesis(ws, noise_mode="const"), **TOL)
        torch.testing.assert_close(G.synthesize(G.styles(ws), [None] * G.num_convs),
                                   ref.synthesis(ws, noise_mode="none"), **TOL)
        if conv_clamp == 0.5:   # the clamp is active here: without it the image differs
            for module in [*G.layers, *G.torgbs]:
                module.act_clamp = module.conv_clamp = None
            assert not torch.allclose(G.synthesize(G.styles(ws), G.const_noise()),
                                      ref.synthesis(ws, noise_mode="const"), atol=1e-2)


def test_nvlabs_records(nvlabs_env, tmp_path):
    path = tmp_path / "snapshot.pkl"
    _nvlabs_snapshot(nvlabs_env, path, _nvlabs_generator(nvlabs_env, c_dim=2))
    data = read_nvlabs_pkl(path)
    assert set(data) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    G = data["G_ema"]
    assert isinstance(G, PersistentRecord) and G.class_name == "Generator"
    assert "module_src ran" in G.module_src and not nvlabs_env.marker.exists()   # kept as text, not run
    assert G["mapping"]["fc0"]["weight"].shape == (16, 12 + 16)
    assert isinstance(G["mapping"]["fc0"]["weight"], nn.Parameter)
    assert float(G["mapping"]["fc0"]["weight_gain"]) == pytest.approx(0.01 / math.sqrt(28))
    assert G.state["_init_kwargs"]["mapping_kwargs"] == {"num_layers": 2}
    assert data["training_set_kwargs"]["use_labels"] is True
    assert data["D"].modules["extra"].class_name == "torch.nn.modules.container.ModuleList"
    assert isinstance(data["D"].modules["extra"], TorchModuleRecord)
    np.testing.assert_array_equal(np.asarray(data["augment_pipe"].state["matrix"]), np.eye(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match="no 'nope'"):
        G["nope"]


class Payload:
    """``__reduce__`` -> ``fn(arg)``: what a malicious pickle runs on plain ``pickle.load``."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.check_call"])
def test_nvlabs_hostile_pickle_is_refused(nvlabs_env, tmp_path, kind):
    marker = tmp_path / "pwned"
    fn, arg, name = {
        "os.system": (os.system, f"touch {marker}", f"{os.system.__module__}.system"),
        "builtins.exec": (builtins.exec, f"open({str(marker)!r}, 'w').write('x')", "builtins.exec"),
        "subprocess.check_call": (subprocess.check_call, ["touch", str(marker)], "subprocess.check_call"),
    }[kind]
    path = tmp_path / "evil.pkl"
    ref = _nvlabs_generator(nvlabs_env)
    with open(path, "wb") as f:    # the payload sits next to a genuine G_ema
        pickle.dump({"G_ema": ref, "augment_pipe": Payload(fn, arg)}, f)
    for loader in (load_generator, load_nvlabs_pkl, read_nvlabs_pkl):
        with pytest.raises(UnsafeCheckpointError) as err:
            loader(path)
        assert name in str(err.value) and isinstance(err.value, pickle.UnpicklingError)
    assert not marker.exists() and not nvlabs_env.marker.exists()


def _hostile(kind: str, marker):
    """``(fn, arg, name in the refusal)`` of a payload that would create ``marker`` if it ever ran."""
    return {
        "os.system": (os.system, f"touch {marker}", f"{os.system.__module__}.system"),
        "builtins.exec": (builtins.exec, f"open({str(marker)!r}, 'w').write('x')", "builtins.exec"),
        "subprocess.check_call": (subprocess.check_call, ["touch", str(marker)], "subprocess.check_call"),
    }[kind]


def _root_is_a_reduce(data: bytes) -> bool:
    """The pickle's root object is built by a REDUCE (the last opcode before STOP, memo writes aside)."""
    ops = [op.name for op, _, _ in pickletools.genops(data)
           if op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME")]
    return ops[-2:] == ["REDUCE", "STOP"]


@pytest.mark.parametrize("protocol", [0, 2, 4])       # GLOBAL (protocols 0-3) and STACK_GLOBAL (4+) opcodes
@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "subprocess.check_call"])
def test_nvlabs_hostile_root_object_is_refused(nvlabs_env, tmp_path, kind, protocol):
    """The payload is the pickle's root object, not nested in a snapshot dict: every reader refuses
    it, naming the global, and nothing runs."""
    marker = tmp_path / "pwned"
    fn, arg, name = _hostile(kind, marker)
    data = pickle.dumps(Payload(fn, arg), protocol=protocol)
    assert _root_is_a_reduce(data)
    path = tmp_path / "evil-root.pkl"
    path.write_bytes(data)
    for loader in (load_generator, load_nvlabs_pkl, read_nvlabs_pkl, load_tf_pkl, read_tf_pkl):
        with pytest.raises(UnsafeCheckpointError) as err:
            loader(path)
        assert name in str(err.value) and isinstance(err.value, pickle.UnpicklingError), (loader.__name__, err.value)
    assert not marker.exists() and not nvlabs_env.marker.exists()


@pytest.mark.parametrize("zip_format", [False, True])
def test_nvlabs_hostile_storage_blob_is_refused(nvlabs_env, tmp_path, zip_format):
    """A ``torch.storage._load_from_bytes`` argument whose bytes are a torch.save of a payload."""
    marker = tmp_path / "pwned"
    blob = io.BytesIO()
    torch.save(Payload(os.system, f"touch {marker}"), blob, _use_new_zipfile_serialization=zip_format)
    path = tmp_path / "evil-storage.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Payload(torch.storage._load_from_bytes, blob.getvalue())}))
    with pytest.raises(UnsafeCheckpointError, match=f"{os.system.__module__}.system"):
        load_generator(path)
    assert not marker.exists()
    # a blob that unpickles fine but is not a storage
    blob = io.BytesIO()
    torch.save({"not": "a storage"}, blob, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(pickle.dumps({"G_ema": Payload(torch.storage._load_from_bytes, blob.getvalue())}))
    with pytest.raises(UnsafeCheckpointError, match="not a storage"):
        load_generator(path)


def test_nvlabs_unsupported_networks(nvlabs_env, tmp_path, monkeypatch):
    # StyleGAN3: its synthesis network starts from a SynthesisInput
    SynthesisInput = type("SynthesisInput", (Persistent,), {})
    SG3Synthesis = type("SynthesisNetwork", (Persistent,), {})
    G = _nvlabs_generator(nvlabs_env)
    synthesis = SG3Synthesis()
    synthesis.input = SynthesisInput()
    synthesis.L0_36_512 = FullyConnectedLayer(4, 4)
    G.synthesis = synthesis
    path = tmp_path / "stylegan3-t-ffhq.pkl"
    _nvlabs_snapshot(nvlabs_env, path, G)
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_generator(path)
    # 'resnet' generator architecture
    G = _nvlabs_generator(nvlabs_env)
    G.synthesis.b8.architecture = "resnet"
    _nvlabs_snapshot(nvlabs_env, path, G)
    with pytest.raises(CheckpointError, match="resnet"):
        load_generator(path)
    # TensorFlow-era pickle (dnnlib.tflib.Network objects)
    tflib = types.ModuleType("dnnlib.tflib.network")
    Network = type("Network", (), {"__module__": "dnnlib.tflib.network"})
    tflib.Network = Network
    monkeypatch.setitem(sys.modules, "dnnlib.tflib", types.ModuleType("dnnlib.tflib"))
    monkeypatch.setitem(sys.modules, "dnnlib.tflib.network", tflib)
    path = tmp_path / "stylegan2-ffhq-config-f.pkl"
    path.write_bytes(pickle.dumps((Network(), Network(), Network())))
    with pytest.raises(UnsafeCheckpointError, match="TensorFlow"):
        load_generator(path)
    # a G_ema of the wrong shape: a clear error, not an AttributeError
    G = _nvlabs_generator(nvlabs_env)
    G.mapping.fc0.weight = nn.Parameter(torch.zeros(3))
    _nvlabs_snapshot(nvlabs_env, path, G)
    with pytest.raises(CheckpointError, match="not a generator this loader understands"):
        load_generator(path)
    # a pickle without a generator
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(CheckpointError, match="weights"):
        load_generator(path)
    # truncated snapshot
    good = tmp_path / "good.pkl"
    _nvlabs_snapshot(nvlabs_env, good, _nvlabs_generator(nvlabs_env))
    path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError):
        load_generator(path)
    assert not nvlabs_env.marker.exists()


class Reduce:
    """``__reduce__`` -> ``fn(*args)``."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def test_safe_unpickler_hardening(tmp_path):
    path = tmp_path / "x.pkl"
    # a tensor whose size reaches beyond its storage (torch would silently grow the storage)
    storage = torch.arange(4.0)._typed_storage()
    path.write_bytes(pickle.dumps({"t": Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (100,), (1,), False,
                                                 {})}))
    with pytest.raises(UnsafeCheckpointError, match="beyond its storage"):
        read_nvlabs_pkl(path)
    path.write_bytes(pickle.dumps({"t": Reduce(torch._utils._rebuild_tensor_v2, storage, 1, (3,), (1,), False, {})}))
    assert read_nvlabs_pkl(path)["t"].tolist() == [1.0, 2.0, 3.0]
    # BUILD with slot state on an allow-listed class would setattr on it: refused
    path.write_bytes(b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x0b\x00\x00\x00__getattr__cbuiltins\nset\ns\x86b.")
    with pytest.raises(UnsafeCheckpointError, match="refused to modify"):
        read_nvlabs_pkl(path)
    path.write_bytes(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__)s\x86b.")
    with pytest.raises(UnsafeCheckpointError, match="refused to modify"):
        read_nvlabs_pkl(path)
    # numpy: plain numeric scalars only
    path.write_bytes(pickle.dumps([np.float64(0.5), np.int32(3)]))
    assert read_nvlabs_pkl(path) == [0.5, 3]
    path.write_bytes(pickle.dumps(np.array([object()], dtype=object)))
    with pytest.raises(UnsafeCheckpointError):
        read_nvlabs_pkl(path)


def _record_many(directory: str, names: list) -> None:
    """In a child process: record ``names`` in the zoo manifest of ``directory``."""
    from pathlib import Path

    from gatlib import zoo

    zoo.CHECKPOINT_DIR = Path(directory)
    zoo.MANIFEST = zoo.CHECKPOINT_DIR / "manifest.json"
    for name in names:
        entry = zoo.ZooEntry(name, "test", "classifier", "mlp", 0, "a test entry")
        zoo._record(entry, {"state_dict": {}, "name": name}, {"value": 1.0}, 0.1, {"recipe": name})


def test_zoo_trainings_that_finish_together_keep_every_manifest_entry(tmp_path):
    import json
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(str(tmp_path), [f"w{w}-{i}" for i in range(8)]))
               for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest) == sorted(f"w{w}-{i}" for w in range(3) for i in range(8))
    assert all((tmp_path / f"{name}.pt").is_file() for name in manifest)


@pytest.mark.notebooks
def test_nvlabs_cifar10_layout_runs_chapter_02_on_the_paper_profile(nvlabs_env, tmp_path, paper_chapter_02):
    """The Colab flagship's generator file in miniature: a stylegan2-ada-pytorch snapshot with
    CIFAR-10's layout (conditional, c_dim=10, 32x32 RGB, conv_clamp=256) through chapter 02's attack."""
    path = tmp_path / "cifar10.pkl"
    _nvlabs_snapshot(nvlabs_env, path, _nvlabs_generator(nvlabs_env, c_dim=10, conv_clamp=256, resolution=32))
    result = paper_chapter_02(path, num_classes=10)
    assert not nvlabs_env.marker.exists()
    assert any("success" in key for key in result["numbers"]), sorted(result["numbers"])[:20]

