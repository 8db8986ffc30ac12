"""Video classifiers: shapes, the registry, torchvision-compatible 3D ResNets, time-shift behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from twostream.models import (ARCH_INPUT, ARCHS, DESCRIPTIONS, adapt_input_conv, build_model, channels_last_format,
                              count_parameters, load_pretrained)
from twostream.models.resnet import resnet18

torch.set_num_threads(1)

CLIP_ARCHS = [a for a, kind in ARCH_INPUT.items() if kind == "clip"]
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

# (T, H, W) per arch; T respects each model's minimum (slow_fusion 10, c3d 16).
SIZES = {
    "single_frame": [(1, 32, 32), (5, 40, 56)],
    "late_fusion": [(2, 32, 32), (7, 40, 56)],
    "early_fusion": [(4, 32, 32), (10, 40, 56)],
    "slow_fusion": [(10, 32, 32), (13, 40, 56)],
    "c3d": [(16, 32, 32), (19, 40, 56)],
    "r3d_18": [(1, 32, 32), (4, 32, 32), (9, 40, 56)],
    "r2plus1d_18": [(1, 32, 32), (4, 32, 32), (9, 40, 56)],
}


def test_registry_is_complete():
    assert set(CLIP_ARCHS) == set(SIZES)
    assert set(ARCHS) == set(ARCH_INPUT) == set(DESCRIPTIONS)
    assert set(ARCH_INPUT.values()) == {"frame", "clip"}
    assert all(isinstance(d, str) and 20 < len(d) < 120 and "\n" not in d for d in DESCRIPTIONS.values())


@pytest.mark.parametrize("arch", CLIP_ARCHS)
@pytest.mark.parametrize("in_channels", [3, 2])
def test_output_shapes(arch, in_channels):
    for t, h, w in SIZES[arch]:
        torch.manual_seed(0)
        model = build_model(arch, num_classes=6, in_channels=in_channels, num_frames=t, base_width=8).eval()
        with torch.no_grad():
            out = model(torch.randn(2, in_channels, t, h, w))
        assert out.shape == (2, 6), (arch, t, h, w)
        assert torch.isfinite(out).all()


def test_late_fusion_ends_merges_first_and_last_frame_only():
    torch.manual_seed(0)
    model = build_model("late_fusion", num_classes=4, merge="ends", base_width=8).eval()
    x = torch.randn(1, 3, 6, 32, 32)
    y = x.clone()
    y[:, :, 1:5] = torch.randn(1, 3, 4, 32, 32)  # change the middle frames
    z = x.clone()
    z[:, :, [0, 5]] = z[:, :, [5, 0]]  # swap the ends: order matters to the fusion layer
    with torch.no_grad():
        torch.testing.assert_close(model(y), model(x))
        assert (model(z) - model(x)).abs().max() > 1e-4
    assert model.fuse[0].in_features == 2 * model.backbone.num_features


def test_single_frame_averages_per_frame_scores():
    torch.manual_seed(0)
    model = build_model("single_frame", num_classes=4, base_width=8).eval()
    x = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        per_frame = torch.stack([model.backbone(x[:, :, t]) for t in range(3)], dim=1)
        torch.testing.assert_close(model(x), per_frame.mean(1))


def test_early_fusion_folds_frames_into_channels_frame_major():
    torch.manual_seed(0)
    model = build_model("early_fusion", num_classes=4, in_channels=2, num_frames=3, base_width=8)
    x = torch.arange(2 * 2 * 3).float().view(1, 2, 3, 1, 2).expand(-1, -1, -1, 2, -1)  # (N, C, T, H, W)
    folded = model.fold(x)
    assert folded.shape == (1, 6, 2, 2)
    # Channel order f0c0, f0c1, f1c0, ...: x and y of each flow field stay together.
    assert [folded[0, i, 0, 0].item() for i in range(6)] == [x[0, i % 2, i // 2, 0, 0].item() for i in range(6)]
    assert model.backbone.conv1.in_channels == 6


# --- torchvision-compatible 3D ResNets -----------------------------------------------------------


def video_resnet_keys(factorised: bool) -> list[str]:
    """torchvision's state-dict keys for r3d_18 / r2plus1d_18, in registration order (from its source)."""

    def bn(p: str) -> list[str]:
        return [f"{p}.{b}" for b in BN]

    def conv(p: str) -> list[str]:  # one conv_builder: a Conv3d, or Conv2Plus1D = conv, BN, ReLU, conv
        return [f"{p}.0.weight", *bn(f"{p}.1"), f"{p}.3.weight"] if factorised else [f"{p}.weight"]

    keys = ["stem.0.weight", *bn("stem.1")] + (["stem.3.weight", *bn("stem.4")] if factorised else [])
    for stage in range(1, 5):
        for i in range(2):
            p = f"layer{stage}.{i}"
            keys += conv(f"{p}.conv1.0") + bn(f"{p}.conv1.1") + conv(f"{p}.conv2.0") + bn(f"{p}.conv2.1")
            if stage > 1 and i == 0:
                keys += [f"{p}.downsample.0.weight", *bn(f"{p}.downsample.1")]
    return keys + ["fc.weight", "fc.bias"]


def test_r3d_18_matches_torchvision():
    with torch.device("meta"):  # full size, but no memory or init time: only names and shapes matter
        model = build_model("r3d_18", num_classes=400)
        flow = build_model("r3d_18", num_classes=400, in_channels=2)
    assert count_parameters(model) == 33_371_472  # torchvision R3D_18_Weights meta "num_params"
    sd = model.state_dict()
    assert list(sd) == video_resnet_keys(factorised=False)
    assert len(sd) == 122
    assert sd["stem.0.weight"].shape == (64, 3, 3, 7, 7)
    assert sd["layer1.0.conv1.0.weight"].shape == (64, 64, 3, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1, 1)
    assert model.layer2[0].downsample[0].stride == (2, 2, 2)
    assert sd["fc.weight"].shape == (400, 512)
    # The same key names for a flow model; only the stem's input channels change.
    assert list(flow.state_dict()) == list(sd)
    assert count_parameters(model) - count_parameters(flow) == 64 * 3 * 7 * 7


def test_r2plus1d_18_matches_torchvision():
    with torch.device("meta"):
        model = build_model("r2plus1d_18", num_classes=400)
    assert count_parameters(model) == 31_505_325  # torchvision R2Plus1D_18_Weights meta "num_params"
    sd = model.state_dict()
    assert list(sd) == video_resnet_keys(factorised=True)
    assert len(sd) == 224
    assert sd["stem.0.weight"].shape == (45, 3, 1, 7, 7)
    assert sd["stem.3.weight"].shape == (64, 45, 3, 1, 1)
    # Intermediate width 64*64*27 // (64*9 + 3*64) = 144.
    assert sd["layer1.0.conv1.0.0.weight"].shape == (144, 64, 1, 3, 3)
    assert sd["layer1.0.conv1.0.3.weight"].shape == (64, 144, 3, 1, 1)


def test_c3d_without_batch_norm_is_the_papers_net():
    with torch.device("meta"):
        model = build_model("c3d", num_classes=487, batch_norm=False)
    sd = model.state_dict()
    layers = ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b", "fc6", "fc7", "fc8"]
    assert list(sd) == [f"{name}.{p}" for name in layers for p in ("weight", "bias")]
    assert sd["conv1.weight"].shape == (64, 3, 3, 3, 3)
    assert sd["fc6.weight"].shape == (4096, 8192)  # pool5 output 512 x 1 x 4 x 4 at 16 x 112 x 112
    assert sd["fc8.weight"].shape == (487, 4096)
    # 27,655,936 in the eight convolutions + 52,335,079 in fc6-fc8 (Sports-1M, 487 classes).
    assert count_parameters(model) == 79_991_015
    small = build_model("c3d", num_classes=3, base_width=8).eval()
    with torch.no_grad():
        maps = small.stage_outputs(torch.randn(1, 3, 16, 112, 112))
    assert [tuple(m.shape[2:]) for m in maps] == [(16, 56, 56), (8, 28, 28), (4, 14, 14), (2, 7, 7), (1, 4, 4)]


# --- time shifts ---------------------------------------------------------------------------------


def _random_video(frames: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def _assert_follows_shift(f_clip, f_shifted, *, frames, k, stride, reach):
    """``shifted`` is ``clip`` moved k frames later in time. A feature at temporal position p
    with temporal stride ``stride`` sees input frames ``[stride*p - reach[0], stride*p + reach[1]]``;
    where that window lies inside both clips, the shifted clip's feature at p + k/stride must equal
    the clip's at p."""
    assert k % stride == 0
    d = k // stride
    a, b = reach
    ps = [p for p in range(f_clip.shape[2]) if stride * p - a >= 0 and stride * p + k + b <= frames - 1]
    assert len(ps) >= 2, "too few interior positions for a meaningful check"
    assert f_clip.abs().max() > 1e-3, "features vanished: the check would be vacuous"
    torch.testing.assert_close(f_shifted[:, :, [p + d for p in ps]], f_clip[:, :, ps], rtol=1e-4, atol=1e-5)
    # Equivariance, not invariance: without undoing the shift the features differ.
    assert (f_shifted[:, :, ps] - f_clip[:, :, ps]).abs().max() > 1e-2 * f_clip.abs().max()


@pytest.mark.parametrize(
    "arch, kw, frames, k, stage, stride, reach",
    [
        # slow_fusion: valid temporal convs; stage 1 = 4 frames at stride 2, stage 2 = 2 of those at stride 2.
        ("slow_fusion", {}, 20, 2, 0, 2, (0, 3)),
        ("slow_fusion", {}, 20, 4, 0, 2, (0, 3)),
        ("slow_fusion", {}, 20, 4, 1, 4, (0, 5)),
        # c3d: padded 3x3x3 convs; pool1 keeps time, pool2 halves it.
        ("c3d", {}, 16, 3, 0, 1, (1, 1)),
        ("c3d", {}, 16, 1, 0, 1, (1, 1)),
        ("c3d", {}, 16, 2, 1, 2, (2, 3)),
        ("c3d", {"batch_norm": False}, 16, 2, 1, 2, (2, 3)),
    ],
)
def test_3d_conv_features_follow_a_time_shift(arch, kw, frames, k, stage, stride, reach):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=5, base_width=8, **kw).eval()
    video = _random_video(frames + k, seed=1)
    clip, shifted = video[:, :, k:], video[:, :, :frames]  # shifted[t + k] == clip[t]
    with torch.no_grad():
        f_clip = model.stage_outputs(clip)[stage]
        f_shifted = model.stage_outputs(shifted)[stage]
    _assert_follows_shift(f_clip, f_shifted, frames=frames, k=k, stride=stride, reach=reach)


def _moving_square(frames: int, event_start: int, seed: int = 0) -> torch.Tensor:
    """A static textured background and a textured square that moves right 3 px per frame during
    three frames from ``event_start`` (before and after, it rests): one short motion event."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(1, 3, 1, 32, 32, generator=g).repeat(1, 1, frames, 1, 1)
    square = torch.rand(1, 3, 6, 6, generator=g)
    for t in range(frames):
        step = min(max(t - event_start, 0), 3)
        video[:, :, t, 12:18, 4 + 3 * step:10 + 3 * step] = square
    return video


def test_early_fusion_first_layer_does_not_follow_a_time_shift():
    frames, k = 10, 2
    early = build_model("early_fusion", num_classes=5, num_frames=frames, base_width=8).eval()
    slow = build_model("slow_fusion", num_classes=5, base_width=8).eval()
    # The same motion, k frames later in the second clip; both clips contain the whole event.
    video = _moving_square(frames + k, event_start=5)
    clip, shifted = video[:, :, k:], video[:, :, :frames]
    with torch.no_grad():
        e_clip = early.backbone.conv1(early.fold(clip))  # (1, 8, 16, 16): no time axis to move along
        e_shifted = early.backbone.conv1(early.fold(shifted))
        s_clip = slow.stage_outputs(clip)[0]  # (1, 8, T1, 8, 8)
        s_shifted = slow.stage_outputs(shifted)[0]
    # Each frame slot has its own filter slice, so the moved event changes the response.
    assert (e_shifted - e_clip).abs().max() > 0.1 * e_clip.abs().max()
    assert (e_shifted - e_clip).norm() > 0.05 * e_clip.norm()
    # The 3D convolution answers the same event with the same response, k/2 positions later.
    _assert_follows_shift(s_clip, s_shifted, frames=frames, k=k, stride=2, reach=(0, 3))


# --- training and errors -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", CLIP_ARCHS)
def test_every_parameter_learns_and_the_loss_falls(arch):
    t, h, w = SIZES[arch][0]
    t = max(t, 2)
    torch.manual_seed(0)
    model = build_model(arch, num_classes=3, num_frames=t, base_width=8, dropout=0.0)
    x, y = torch.randn(6, 3, t, h, w), torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(6):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if step == 0:
            # No dead branches (DistributedDataParallel would fail on unused parameters).
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize(
    "arch, shape",
    [("single_frame", (2, 3, 32, 32)), ("slow_fusion", (1, 3, 9, 32, 32)), ("c3d", (1, 3, 8, 32, 32)),
     ("r3d_18", (1, 2, 4, 32, 32)), ("early_fusion", (1, 3, 5, 32, 32)), ("late_fusion", (1, 3, 4, 32, 32, 1))],
)
def test_bad_clip_raises_naming_shape(arch, shape):
    model = build_model(arch, num_classes=3, num_frames=4 if arch == "early_fusion" else None, base_width=8)
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        model(torch.randn(*shape))


def test_build_model_refusals():
    with pytest.raises(ValueError, match="unknown arch 'resnet101'.*r3d_18"):
        build_model("resnet101", num_classes=3)
    early = build_model("early_fusion", num_classes=3, base_width=8)  # Karpathy's T=10 by default
    assert early.num_frames == 10 and early.backbone.conv1.in_channels == 30
    with pytest.raises(ValueError, match=r"T=10 frames, got shape \(1, 3, 16, 32, 32\)"):
        early(torch.randn(1, 3, 16, 32, 32))
    with pytest.raises(ValueError, match="slow_fusion needs num_frames >= 10, got 8"):
        build_model("slow_fusion", num_classes=3, num_frames=8)
    with pytest.raises(ValueError, match="c3d needs num_frames >= 16"):
        build_model("c3d", num_classes=3, num_frames=8)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        build_model("single_frame", num_classes=3, backbone="vgg16")
    with pytest.raises(ValueError, match="merge"):
        build_model("late_fusion", num_classes=3, merge="max")


def test_frame_archs_ignore_num_frames_and_take_stacks():
    model = build_model("resnet18", num_classes=3, in_channels=20, num_frames=10, base_width=8).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 20, 32, 32)).shape == (2, 3)


def test_width_option_gives_cpu_sized_models():
    # base_width=8 is what the CPU demo trains; every clip model must then be small.
    sizes = {a: count_parameters(build_model(a, num_classes=10, num_frames=16, base_width=8)) for a in CLIP_ARCHS}
    assert all(n < 1_500_000 for n in sizes.values()), sizes
    wide = build_model("slow_fusion", num_classes=10, base_width=16)
    assert count_parameters(wide) > 3 * sizes["slow_fusion"]  # conv weights grow with the square of the width
    deeper = build_model("single_frame", num_classes=10, backbone="resnet34", base_width=8)
    assert count_parameters(deeper) > sizes["single_frame"]


@pytest.mark.parametrize("arch", CLIP_ARCHS + ["resnet18"])
def test_channels_last_format_fits_the_weights(arch):
    model = build_model(arch, num_classes=3, base_width=8)
    fmt = channels_last_format(model)
    assert fmt == (torch.channels_last_3d if arch in ("slow_fusion", "c3d", "r3d_18", "r2plus1d_18")
                   else torch.channels_last)
    model.to(memory_format=fmt)  # raises if the format does not fit the weights' rank


def test_2d_weights_load_into_the_backbone_of_video_models(tmp_path):
    torch.manual_seed(0)
    src = resnet18(num_classes=1000, base_width=8).state_dict()
    torch.save(src, tmp_path / "imagenet.pth")
    single = build_model("single_frame", num_classes=4, base_width=8)
    assert load_pretrained(single, tmp_path / "imagenet.pth") == ["backbone.fc.bias", "backbone.fc.weight"]
    assert torch.equal(single.backbone.layer3[1].conv2.weight, src["layer3.1.conv2.weight"])

    late = build_model("late_fusion", num_classes=4, base_width=8, merge="ends")
    skipped = load_pretrained(late, tmp_path / "imagenet.pth")
    # The file's classifier is not used (the backbone has none); the fusion head stays random.
    assert skipped == ["backbone.fc.bias", "backbone.fc.weight", "fc.bias", "fc.weight", "fuse.0.bias", "fuse.0.weight"]
    assert torch.equal(late.backbone.conv1.weight, src["conv1.weight"])

    early = build_model("early_fusion", num_classes=4, in_channels=2, num_frames=5, base_width=8)
    load_pretrained(early, tmp_path / "imagenet.pth")
    torch.testing.assert_close(early.backbone.conv1.weight, adapt_input_conv(src["conv1.weight"], 10))

    with pytest.raises(ValueError, match=r"imagenet\.pth do not match the architecture of SlowFusion"):
        load_pretrained(build_model("slow_fusion", num_classes=4, base_width=8), tmp_path / "imagenet.pth")
