"""The SPADE generator (gatlib.generators.spade): γ and β as tensors an attack owns, and NVlabs'
``latest_net_G.pth`` key layout."""
import pytest
import torch

from gatlib.generators import spade

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides):
    torch.manual_seed(0)
    config = dict(label_nc=5, image_nc=1, ngf=4, crop_size=64, z_dim=8, param_free_norm="instance", spectral=False)
    return spade.SPADEGenerator(**{**config, **overrides}).eval()


def segmaps(batch=2, size=64, classes=5):
    torch.manual_seed(1)
    masks = torch.randint(0, classes, (batch, size // 8, size // 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    return spade.one_hot(masks, classes)


def test_modulations_cover_every_spade_layer_at_its_resolution():
    G = tiny()
    mods = G.modulations(segmaps())
    assert list(mods) == G.layer_names
    assert G.layer_names[:2] == ["head_0.norm_0", "head_0.norm_1"] and "up_0.norm_s" in G.layer_names
    sizes = G.block_sizes()
    assert sizes["head_0"] == (2, 2) and sizes["up_3"] == (64, 64)
    for name, (gamma, beta) in mods.items():
        block = name.split(".")[0]
        assert gamma.shape == beta.shape and gamma.shape[0] == 2 and gamma.shape[2:] == sizes[block]
    images = G(segmaps(), torch.randn(2, 8))
    assert images.shape == (2, 1, 64, 64) and images.min() >= 0 and images.max() <= 1


def test_synthesize_renders_from_the_given_gamma_beta_only():
    G, maps, z = tiny(), segmaps(), torch.randn(2, 8)
    mods = G.modulations(maps)
    base = G.synthesize(maps, mods, z)
    torch.testing.assert_close(G.to_unit(base), G(maps, z))
    moved = dict(mods)
    gamma, beta = mods["up_2.norm_1"]
    moved["up_2.norm_1"] = (gamma + 0.5, beta)
    assert not torch.allclose(G.synthesize(maps, moved, z), base), "γ moves the image"
    # the map is not read again for γ/β: with other maps but the same modulations, only the map's
    # other uses (none with a z input) could change the image
    other = segmaps(classes=5).roll(1, dims=1)
    torch.testing.assert_close(G.synthesize(other, mods, z), base)


def test_gradients_reach_gamma_and_beta_of_every_layer():
    G, maps = tiny(), segmaps()
    mods = {name: (g.detach().requires_grad_(True), b.detach().requires_grad_(True))
            for name, (g, b) in G.modulations(maps).items()}
    G.synthesize(maps, mods, torch.randn(2, 8)).square().mean().backward()
    for name, (gamma, beta) in mods.items():
        assert gamma.grad is not None and beta.grad is not None and beta.grad.abs().sum() > 0, name


def test_nvlabs_state_dict_layout_loads_with_spectral_norm_folded(tmp_path):
    torch.manual_seed(2)
    source = spade.SPADEGenerator(label_nc=6, image_nc=3, ngf=4, crop_size=64, z_dim=0, param_free_norm="batch",
                                  spectral=True)
    maps = spade.one_hot(torch.randint(0, 6, (3, 64, 64)), 6)
    source.train()
    with torch.no_grad():
        for _ in range(3):        # moves the BatchNorm statistics and the spectral-norm vectors u, v
            source(maps)
    source.eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}   # as DataParallel saves it
    for key in ("module.fc.weight", "module.head_0.conv_0.weight_orig", "module.head_0.conv_0.weight_u",
                "module.up_0.conv_s.weight_orig", "module.head_0.norm_0.mlp_shared.0.weight",
                "module.head_0.norm_0.mlp_gamma.weight", "module.up_0.norm_s.mlp_beta.bias",
                "module.head_0.norm_0.param_free_norm.running_mean", "module.conv_img.weight"):
        assert key in state, key      # NVlabs' SPADEGenerator names
    torch.save(state, tmp_path / "latest_net_G.pth")
    G = spade.load_nvlabs(tmp_path / "latest_net_G.pth", crop_size=64)
    assert G.config["label_nc"] == 6 and G.config["ngf"] == 4 and G.config["z_dim"] == 0
    assert G.config["param_free_norm"] == "batch" and not G.training
    with torch.no_grad():
        torch.testing.assert_close(G(maps), source(maps), rtol=1e-4, atol=1e-5)


def test_coco_geometry_and_refusals(tmp_path):
    coco = spade.SPADEGenerator(label_nc=184, image_nc=3, ngf=2, crop_size=256)
    assert (coco.sh, coco.sw) == (8, 8) and coco.block_sizes()["up_3"] == (256, 256)
    assert "up_4" in dict(spade.SPADEGenerator(label_nc=3, ngf=2, crop_size=256, num_upsampling_layers="most")
                          .named_children())
    with pytest.raises(ValueError, match="multiple of 2"):
        spade.SPADEGenerator(label_nc=3, ngf=2, crop_size=40)
    with pytest.raises(ValueError, match="param_free_norm"):
        spade.SPADEGenerator(label_nc=3, ngf=2, crop_size=64, param_free_norm="group")
    with pytest.raises(ValueError, match="segmap must be"):
        tiny().modulations(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="label map values"):
        spade.one_hot(torch.full((1, 4, 4), 7), 5)
    with pytest.raises(FileNotFoundError):
        spade.load_nvlabs(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ValueError, match="could not be loaded"):
        spade.load_nvlabs(tmp_path / "junk.pth")
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a SPADE generator"):
        spade.load_nvlabs(tmp_path / "other.pth")
