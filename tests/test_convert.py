"""twostream convert: mmaction2 and torchvision-reference checkpoints, built here with those tools' names
and containers, convert with every entry matched (or fail naming the entries that do not)."""
import argparse
import pathlib
import re

import pytest
import torch

from twostream.cli import main
from twostream.convert import ConvertError, convert_checkpoint
from twostream.models import build_model, load_pretrained


def _mmaction2_names(state: dict, is3d: bool) -> dict:
    """Our (torchvision) names -> mmaction2's: ConvModule wraps every conv + BN (``.conv`` / ``.bn``), the head
    is ``cls_head.fc_cls`` (mmaction2 ``ResNet`` / ``ResNet3d`` + ``TSNHead`` / ``I3DHead``)."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc."):
            out["cls_head.fc_cls." + k[3:]] = v
            continue
        rules = ([(r"^stem\.0\.", "conv1.conv."), (r"^stem\.1\.", "conv1.bn."),
                  (r"\.conv(\d)\.0\.", r".conv\1.conv."), (r"\.conv(\d)\.1\.", r".conv\1.bn.")] if is3d else
                 [(r"^conv1\.", "conv1.conv."), (r"^bn1\.", "conv1.bn."),
                  (r"\.conv(\d)\.", r".conv\1.conv."), (r"\.bn(\d)\.", r".conv\1.bn.")])
        rules += [(r"\.downsample\.0\.", ".downsample.conv."), (r"\.downsample\.1\.", ".downsample.bn.")]
        name = k
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        out["backbone." + name] = v
    return out


def _mmaction2_file(path, state, is3d):
    sd = _mmaction2_names(state, is3d)
    sd["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    sd["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    torch.save({"meta": {"mmaction2_version": "1.2.0", "epoch": 100, "iter": 9500,
                         "dataset_meta": {"classes": ["a", "b"]}}, "state_dict": sd}, path)
    return sd


@pytest.mark.parametrize("arch,in_channels,is3d", [("resnet18", 3, False), ("resnet50", 10, False),
                                                    ("r3d_18", 3, True)])
def test_mmaction2_checkpoint_converts_with_every_entry_matched(tmp_path, arch, in_channels, is3d):
    src = build_model(arch, num_classes=5, in_channels=in_channels, base_width=8).state_dict()
    _mmaction2_file(tmp_path / "tsn.pth", src, is3d)
    c = convert_checkpoint(tmp_path / "tsn.pth")
    assert (c.source, c.arch, c.num_classes, c.in_channels, c.base_width) == ("mmaction2", arch, 5, in_channels, 8)
    assert c.state_dict.keys() == src.keys()
    for k in src:
        assert torch.equal(c.state_dict[k], src[k]), k
    assert sorted(c.ignored) == ["data_preprocessor.mean", "data_preprocessor.std"]


def test_mmaction2_r2plus1d_with_factorised_shortcuts_is_refused_naming_them(tmp_path):
    src = build_model("r2plus1d_18", num_classes=4, base_width=8).state_dict()
    sd = {}
    for k, v in src.items():
        k2 = re.sub(r"^stem\.0\.", "conv1.conv.conv_s.", k)
        k2 = re.sub(r"^stem\.1\.", "conv1.conv.bn_s.", k2)
        k2 = re.sub(r"^stem\.3\.", "conv1.conv.conv_t.", k2)
        k2 = re.sub(r"^stem\.4\.", "conv1.bn.", k2)
        k2 = re.sub(r"\.conv(\d)\.0\.0\.", r".conv\1.conv.conv_s.", k2)
        k2 = re.sub(r"\.conv(\d)\.0\.1\.", r".conv\1.conv.bn_s.", k2)
        k2 = re.sub(r"\.conv(\d)\.0\.3\.", r".conv\1.conv.conv_t.", k2)
        k2 = re.sub(r"\.conv(\d)\.1\.", r".conv\1.bn.", k2)
        k2 = re.sub(r"\.downsample\.1\.", ".downsample.bn.", k2)
        if ".downsample.0." in k2:  # mmaction2 factorises the 1x1x1 shortcut too: conv_s, bn_s, conv_t
            base = "backbone." + k2.split(".downsample.0.")[0] + ".downsample.conv."
            sd[base + "conv_s.weight"] = v
            sd[base + "conv_t.weight"] = torch.zeros(v.shape[0], v.shape[0], 1, 1, 1)
            continue
        sd["cls_head.fc_cls." + k2[3:] if k2.startswith("fc.") else "backbone." + k2] = v
    torch.save({"state_dict": sd}, tmp_path / "r21d.pth")
    with pytest.raises(ConvertError, match=r"does not convert to r2plus1d_18: 6 left over .*"
                       r"backbone\.layer2\.0\.downsample\.conv\.conv_s\.weight.*missing from the file: "
                       r"layer2\.0\.downsample\.0\.weight"):
        convert_checkpoint(tmp_path / "r21d.pth")
    # the same file with torchvision's plain shortcut converts, block convs and stem included
    for k in [k for k in sd if ".downsample.conv." in k]:
        del sd[k]
    for k, v in src.items():
        if ".downsample.0." in k:
            sd["backbone." + k.replace(".downsample.0.", ".downsample.conv.")] = v
    torch.save({"state_dict": sd}, tmp_path / "r21d_plain.pth")
    c = convert_checkpoint(tmp_path / "r21d_plain.pth")
    assert c.arch == "r2plus1d_18" and all(torch.equal(c.state_dict[k], src[k]) for k in src)


def test_a_key_left_over_or_missing_is_named(tmp_path):
    src = build_model("resnet18", num_classes=3, base_width=8).state_dict()
    sd = _mmaction2_file(tmp_path / "a.pth", src, False)
    sd["backbone.layer4.1.non_local_block.g.conv.weight"] = torch.zeros(1)
    del sd["backbone.layer1.0.conv2.bn.running_var"]
    torch.save({"state_dict": sd}, tmp_path / "b.pth")
    with pytest.raises(ConvertError, match=r"1 left over .*: backbone\.layer4\.1\.non_local_block\.g\.conv\.weight; "
                       r"1 missing from the file: layer1\.0\.bn2\.running_var"):
        convert_checkpoint(tmp_path / "b.pth")


def _reference_checkpoint(path, model, extra_args=None):
    """What torchvision's references/video_classification/train.py saves as checkpoint.pth."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    warm = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.001, total_iters=10)
    main_s = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 30], gamma=0.1)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, schedulers=[warm, main_s], milestones=[10])
    for p in model.parameters():  # one step, so the optimizer holds momentum buffers as after training
        p.grad = torch.zeros_like(p)
    opt.step()
    sched.step()
    args = argparse.Namespace(data_path="/datasets/kinetics", model="r2plus1d_18", clip_len=16, lr=0.01,
                              lr_milestones=[20, 30], weights=None, amp=True, output_dir=".", **(extra_args or {}))
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
                "epoch": 44, "args": args, "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict()}, path)


def test_torchvision_reference_checkpoint_with_its_namespace(tmp_path, capsys):
    model = build_model("r2plus1d_18", num_classes=7, base_width=8)
    _reference_checkpoint(tmp_path / "checkpoint.pth", model)
    with pytest.raises(Exception, match="argparse.Namespace"):  # what a plain weights-only load says
        torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert main(["convert", str(tmp_path / "checkpoint.pth"), "-o", str(tmp_path / "w.pth")]) == 0
    assert "torchvision-reference -> r2plus1d_18 (7 classes" in capsys.readouterr().out
    fresh = build_model("r2plus1d_18", num_classes=7, base_width=8)
    assert load_pretrained(fresh, tmp_path / "w.pth") == []  # every entry, strict
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_only_the_namespace_is_allowed(tmp_path, capsys):
    model = build_model("r3d_18", num_classes=3, base_width=8)
    marker = tmp_path / "pwned"
    _reference_checkpoint(tmp_path / "evil.pth", model, {"hook": _Payload(marker)})
    assert main(["convert", str(tmp_path / "evil.pth"), "-o", str(tmp_path / "w.pth")]) == 2
    err = capsys.readouterr().err
    assert "evil.pth: refused by the weights-only loader (WeightsUnpickler error: Unsupported global" in err
    assert not marker.exists() and not (tmp_path / "w.pth").exists()
    _reference_checkpoint(tmp_path / "other.pth", model, {"root": pathlib.PurePosixPath("/data")})
    with pytest.raises(ConvertError, match="PurePosixPath"):
        convert_checkpoint(tmp_path / "other.pth")


def test_not_a_known_checkpoint(tmp_path):
    torch.save({"weights": {"a": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(ConvertError, match="neither an mmaction2 checkpoint"):
        convert_checkpoint(tmp_path / "x.pth")
    (tmp_path / "y.pth").write_bytes(b"garbage")
    with pytest.raises(ConvertError, match="not a PyTorch checkpoint"):
        convert_checkpoint(tmp_path / "y.pth")
