"""2D backbones: shapes, torchvision compatibility, cross-modality init, loading pretrained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from twostream.models import ARCHS, adapt_input_conv, count_parameters, load_pretrained
from twostream.models.resnet import resnet18, resnet34, resnet50

torch.set_num_threads(1)

# From torchvision's model docs / weight metadata (ImageNet, 1000 classes, 3 input channels).
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def torchvision_keys(arch: str) -> list[str]:
    """State-dict keys in the order torchvision's ResNet registers them (read from its source)."""
    convs = 3 if arch == "resnet50" else 2
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in BN]
    for stage, n in enumerate(BLOCKS[arch], start=1):
        for i in range(n):
            p = f"layer{stage}.{i}."
            for c in range(1, convs + 1):
                keys += [f"{p}conv{c}.weight"] + [f"{p}bn{c}.{b}" for b in BN]
            # Stage 1 of ResNet-50 needs a projection too: 64 -> 256 channels.
            if i == 0 and (stage > 1 or arch == "resnet50"):
                keys += [f"{p}downsample.0.weight"] + [f"{p}downsample.1.{b}" for b in BN]
    return keys + ["fc.weight", "fc.bias"]


@pytest.fixture(scope="module")
def full_models():
    torch.manual_seed(0)
    return {name: ARCHS[name]() for name in TORCHVISION_PARAMS}


@pytest.mark.parametrize("arch", list(TORCHVISION_PARAMS))
def test_parameter_count_and_keys_match_torchvision(full_models, arch):
    model = full_models[arch]
    assert count_parameters(model) == TORCHVISION_PARAMS[arch]
    sd = model.state_dict()
    assert list(sd) == torchvision_keys(arch)
    assert len(sd) == {"resnet18": 122, "resnet34": 218, "resnet50": 320}[arch]
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["fc.weight"].shape == (1000, 2048 if arch == "resnet50" else 512)
    if arch == "resnet50":
        assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
        assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert sd["layer2.0.conv2.weight"].shape == (128, 128, 3, 3)  # v1.5: the 3x3 strides
        assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)
    else:
        assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
        assert sd["layer4.1.bn2.running_var"].shape == (512,)


def test_torchvision_style_state_dict_loads_strictly(full_models):
    # A state dict keyed and shaped as torchvision's (here: another instance) loads with strict=True,
    # also without num_batches_tracked, as in torchvision's original 2017 ImageNet files.
    legacy = {k: v for k, v in full_models["resnet18"].state_dict().items() if not k.endswith("num_batches_tracked")}
    resnet18().load_state_dict(legacy, strict=True)


@pytest.mark.parametrize("arch", list(TORCHVISION_PARAMS))
@pytest.mark.parametrize("in_channels", [3, 20])
def test_forward_shapes(arch, in_channels):
    torch.manual_seed(0)
    model = ARCHS[arch](num_classes=11, in_channels=in_channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 64, 64)).shape == (2, 11)
        assert model(torch.randn(1, in_channels, 48, 80)).shape == (1, 11)
        assert model.forward_features(torch.randn(1, in_channels, 64, 64)).shape == (1, model.num_features)
        assert model.features(torch.randn(1, in_channels, 64, 96)).shape == (1, model.num_features, 2, 3)
    if in_channels == 20:
        # Only conv1 depends on the input channels.
        extra = 64 * 17 * 7 * 7
        assert count_parameters(model) == count_parameters(ARCHS[arch](num_classes=11)) + extra


def test_num_classes_zero_gives_features_and_dropout_keeps_names():
    model = resnet18(num_classes=0, dropout=0.5, base_width=8).eval()
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 64)
    assert not any(k.startswith("fc.") for k in model.state_dict())
    assert list(resnet18(dropout=0.7).state_dict()) == torchvision_keys("resnet18")


@pytest.mark.parametrize("bad", [torch.randn(2, 3, 32), torch.randn(2, 3, 4, 32, 32), torch.randn(2, 20, 32, 32)])
def test_bad_input_raises_naming_shape(bad):
    model = resnet18(num_classes=4, base_width=8)
    with pytest.raises(ValueError, match=str(tuple(bad.shape)).replace("(", r"\(").replace(")", r"\)")):
        model(bad)


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match="in_channels"):
        resnet18(in_channels=0)
    with pytest.raises(ValueError, match="num_classes"):
        resnet34(num_classes=-1)
    with pytest.raises(ValueError, match="dropout"):
        resnet50(dropout=1.0)
    with pytest.raises(TypeError):
        resnet18(10)  # keyword-only


# --- cross-modality initialisation ---------------------------------------------------------------


def test_adapt_input_conv_is_a_pure_channel_mean():
    torch.manual_seed(0)
    w = torch.randn(8, 3, 7, 7)
    before = w.clone()
    out = adapt_input_conv(w, 20)
    assert torch.equal(w, before)
    assert out.shape == (8, 20, 7, 7)
    # Every channel holds the RGB mean, scaled so that the channel sum is unchanged.
    torch.testing.assert_close(out[:, 5], w.mean(1) * 3 / 20)
    torch.testing.assert_close(out.sum(1), w.sum(1))
    assert torch.equal(out[:, 0], out[:, 19])
    torch.testing.assert_close(adapt_input_conv(w, 20, rescale=False)[:, 7], w.mean(1))
    # 3D filters (video ResNet stems) work the same way.
    assert adapt_input_conv(torch.randn(4, 3, 3, 7, 7), 2).shape == (4, 2, 3, 7, 7)
    with pytest.raises(ValueError, match=r"\(8, 3\)"):
        adapt_input_conv(torch.randn(8, 3), 20)
    with pytest.raises(ValueError, match="in_channels"):
        adapt_input_conv(w, 0)


def _randomise_batchnorm(model: nn.Module, seed: int) -> None:
    """Give BN non-trivial statistics and affine terms, as trained weights have, so that the
    network is not positively homogeneous and "equal up to a factor" would not hold by accident."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
            m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.2 * torch.randn(c, generator=g))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_cross_modality_init_flow_of_equal_channels_answers_like_grey_image(tmp_path, arch):
    torch.manual_seed(0)
    rgb = ARCHS[arch](num_classes=7, base_width=16)
    _randomise_batchnorm(rgb, seed=1)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    flow = ARCHS[arch](num_classes=7, in_channels=20, base_width=16)
    assert load_pretrained(flow, path) == []
    rgb.eval(), flow.eval()

    grey = torch.rand(2, 1, 64, 64)  # value g varies over the image, equal over channels
    with torch.no_grad():
        f_rgb = rgb.forward_features(grey.expand(-1, 3, -1, -1))
        f_flow = flow.forward_features(grey.expand(-1, 20, -1, -1))
        assert f_rgb.abs().max() > 0.1
        # Equal up to float rounding: the first conv sums 20 channels of w*3/20 instead of 3 of w, and ResNet-50's
        # 50 layers carry the difference to ~1e-4 relative in an element or two (without the rescale: 20/3x).
        torch.testing.assert_close(f_flow, f_rgb, rtol=5e-4, atol=1e-4)
        torch.testing.assert_close(flow(grey.expand(-1, 20, -1, -1)), rgb(grey.expand(-1, 3, -1, -1)),
                                   rtol=5e-4, atol=1e-4)
        # Not a property of any input: a flow stack with unequal channels answers differently.
        uneven = torch.rand(2, 20, 64, 64)
        assert (flow.forward_features(uneven) - rgb.forward_features(uneven[:, :3])).abs().max() > 1e-2

        # TSN's recipe (no rescaling): the first layer answers 20/3 times as strongly.
        w = rgb.conv1.weight
        tsn = adapt_input_conv(w, 20, rescale=False)
        torch.testing.assert_close(nn.functional.conv2d(grey.expand(-1, 20, -1, -1), tsn, stride=2, padding=3),
                                   rgb.conv1(grey.expand(-1, 3, -1, -1)) * (20 / 3), rtol=1e-4, atol=1e-5)


# --- load_pretrained -----------------------------------------------------------------------------


def _small(**kw) -> nn.Module:
    return resnet18(base_width=8, **kw)


def _assert_loaded(model: nn.Module, source: dict, skip=("fc.",)) -> None:
    for key, value in model.state_dict().items():
        if not key.startswith(skip) and key in source:
            assert torch.equal(value, source[key]), key


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict", "module"])
def test_load_pretrained_roundtrip(tmp_path, wrap):
    torch.manual_seed(0)
    src = _small(num_classes=5).state_dict()
    obj = {"raw": src, "model": {"model": src, "epoch": 3}, "state_dict": {"state_dict": src},
           "module": {f"module.{k}": v for k, v in src.items()}}[wrap]
    torch.save(obj, tmp_path / "w.pth")
    torch.manual_seed(1)
    model = _small(num_classes=5)
    assert load_pretrained(model, tmp_path / "w.pth") == []
    _assert_loaded(model, src, skip=())


def test_load_pretrained_adapts_conv1_and_drops_other_classifier(tmp_path):
    torch.manual_seed(0)
    src = _small(num_classes=1000).state_dict()
    torch.save(src, tmp_path / "imagenet.pth")
    model = _small(num_classes=5, in_channels=20)
    fc_before = model.fc.weight.detach().clone()
    skipped = load_pretrained(model, str(tmp_path / "imagenet.pth"))
    assert skipped == ["fc.bias", "fc.weight"]
    assert torch.equal(model.fc.weight, fc_before)
    torch.testing.assert_close(model.conv1.weight, adapt_input_conv(src["conv1.weight"], 20))
    _assert_loaded(model, {k: v for k, v in src.items() if k != "conv1.weight"})

    headless = _small(num_classes=0)
    assert load_pretrained(headless, tmp_path / "imagenet.pth") == ["fc.bias", "fc.weight"]


def test_load_pretrained_into_a_flow_video_resnet(tmp_path):
    torch.manual_seed(0)
    rgb = ARCHS["r3d_18"](num_classes=400, base_width=8)
    torch.save(rgb.state_dict(), tmp_path / "kinetics.pth")
    flow = ARCHS["r3d_18"](num_classes=6, in_channels=2, base_width=8)
    assert load_pretrained(flow, tmp_path / "kinetics.pth") == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(flow.stem[0].weight, adapt_input_conv(rgb.stem[0].weight, 2))
    assert torch.equal(flow.layer3[1].conv2[0].weight, rgb.layer3[1].conv2[0].weight)


def test_load_pretrained_refuses_what_is_not_a_state_dict(tmp_path):
    cases = {
        "list.pth": lambda p: torch.save([1, 2, 3], p),
        "meta.pth": lambda p: torch.save({"epoch": 3, "lr": 0.1}, p),
        "module.pth": lambda p: torch.save({"model": nn.Linear(2, 2)}, p),  # a pickled module object
        "text.pth": lambda p: p.write_text("not a torch file"),
    }
    for name, write in cases.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=name) as err:
            load_pretrained(_small(), path)
        assert "not a state dict" in str(err.value) or "cannot be read" in str(err.value), str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_pretrained(_small(), tmp_path / "missing.pth")


def test_load_pretrained_refuses_another_architecture(tmp_path):
    torch.manual_seed(0)
    torch.save(resnet50(base_width=8).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(ValueError, match=r"r50\.pth.*do not match.*ResNet") as err:
        load_pretrained(_small(), tmp_path / "r50.pth")
    assert "different shape" in str(err.value) and "unexpected" in str(err.value)

    torch.save(resnet18(base_width=16).state_dict(), tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"wide\.pth.*conv1\.weight: file \(16, 3, 7, 7\) vs model \(8, 3, 7, 7\)"):
        load_pretrained(_small(), tmp_path / "wide.pth")


def test_load_pretrained_non_strict_loads_what_matches(tmp_path):
    torch.manual_seed(0)
    src = resnet34(base_width=8).state_dict()
    torch.save(src, tmp_path / "r34.pth")
    model = _small()
    skipped = load_pretrained(model, tmp_path / "r34.pth", strict_backbone=False)
    # ResNet-34's extra blocks are skipped; every ResNet-18 entry exists in ResNet-34 with its shape.
    assert "layer1.2.conv1.weight" in skipped and "layer3.5.bn2.weight" in skipped
    assert not any(k in model.state_dict() for k in skipped)
    _assert_loaded(model, src, skip=())
    with pytest.raises(ValueError, match="unexpected"):
        load_pretrained(_small(), tmp_path / "r34.pth")
