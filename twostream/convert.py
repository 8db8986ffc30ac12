"""Checkpoints of other tools -> a plain state dict with our names (``twostream convert``).

Two sources:

* **mmaction2** recognizer checkpoints: ``{"meta", "state_dict"}`` with ``backbone.*`` and
  ``cls_head.fc_cls.*`` keys. Its ResNet backbones wrap each convolution and its BatchNorm in a
  ``ConvModule`` (``conv1.conv``, ``conv1.bn``, ``layer1.0.conv1.conv``, ``layer1.0.downsample.conv``, ...),
  its R(2+1)D convolutions are ``conv_s`` / ``bn_s`` / ``conv_t``. Mapped: the 2D ResNet-18/34/50 of TSN
  (Wang et al. 2016) and the 3D ResNet-18 (R3D, Tran et al. 2018) and R(2+1)D-18 layouts where every name has
  a counterpart here; anything else is refused with the names that do not map. mmaction2's R(2+1)D shortcut
  convolutions are themselves factorised, and its 3D ResNets max-pool after the stem, so only files whose
  names and shapes all match convert, and the network is then ours (see the README).
  ``data_preprocessor.*`` buffers (the input mean/std) are not weights: they are reported and left out.
* the **torchvision video-classification reference** (``references/video_classification/train.py``):
  ``checkpoint.pth`` / ``model_N.pth`` = ``{"model", "optimizer", "lr_scheduler", "epoch", "args"[, "scaler"]}``
  where ``args`` is the ``argparse.Namespace`` of the run. ``torch.load(weights_only=True)`` refuses that
  class, so exactly ``argparse.Namespace`` is added to the allowed globals for this read (its fields are
  plain values), nothing else. The model's names are torchvision's, which are ours.

The converted state dict is checked against the twostream model it fits (``--arch``, or inferred from the
keys): every entry of the model must come from the file and every entry of the file must land in the model,
with equal shapes, or the conversion fails naming the entries left over, missing or mis-shaped. The output
loads with ``twostream train --pretrained OUT`` (or ``load_state_dict``).
"""
from __future__ import annotations

import argparse
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from flowprep.store import atomic_path

from .errors import ConfigError
from .models import ARCHS, build_model

FORMATS = ("auto", "mmaction2", "torchvision-reference")

# mmaction2 name -> our name, applied in order to each key after removing "backbone." (first match wins).
MMACTION2_RENAME: list[tuple[str, str]] = [
    # R(2+1)D stem: conv1 = ConvModule(Conv2plus1d) -> stem.0 (spatial), .1 (its BN), .3 (temporal), .4 (BN)
    (r"^conv1\.conv\.conv_s\.", "stem.0."),
    (r"^conv1\.conv\.bn_s\.", "stem.1."),
    (r"^conv1\.conv\.conv_t\.", "stem.3."),
    (r"^conv1\.bn\.", "@stem_bn."),  # stem.1 (R3D) or stem.4 (R(2+1)D), resolved by the layout
    (r"^conv1\.conv\.", "@stem_conv."),  # conv1 (2D) or stem.0 (3D)
    # R(2+1)D blocks: layerX.Y.convN.conv.{conv_s,bn_s,conv_t} -> layerX.Y.convN.0.{0,1,3}
    (r"^(layer\d+\.\d+)\.conv(\d)\.conv\.conv_s\.", r"\1.conv\2.0.0."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.conv\.bn_s\.", r"\1.conv\2.0.1."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.conv\.conv_t\.", r"\1.conv\2.0.3."),
    (r"^(layer\d+\.\d+)\.downsample\.conv\.", r"\1.downsample.0."),
    (r"^(layer\d+\.\d+)\.downsample\.bn\.", r"\1.downsample.1."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.conv\.", r"@block_conv.\1.\2."),
    (r"^(layer\d+\.\d+)\.conv(\d)\.bn\.", r"@block_bn.\1.\2."),
]


class ConvertError(ConfigError):
    """A checkpoint that cannot be converted; the message names the file and the entries at fault."""


@dataclass
class Converted:
    """The result of :func:`convert_checkpoint`.

    Attributes:
        state_dict: our names -> tensors, every entry of ``arch``'s model.
        arch: the twostream arch it fits.
        source: ``mmaction2`` or ``torchvision-reference``.
        num_classes: rows of the classifier.
        in_channels: input channels of the first convolution.
        base_width: channels of the first stage.
        ignored: file entries deliberately left out (name -> why).
        info: what the file says about itself (e.g. the reference's ``args``), for the user.
    """

    state_dict: dict[str, Tensor]
    arch: str
    source: str
    num_classes: int
    in_channels: int
    base_width: int
    ignored: dict[str, str] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def read_foreign(path: str | Path) -> dict:
    """Load another tool's checkpoint with ``weights_only=True``, allowing ``argparse.Namespace`` and nothing else."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise ConvertError(f"{path}: not a PyTorch checkpoint (not a torch.save zip archive; corrupt or truncated?)")
    try:
        # The torchvision reference pickles its argparse.Namespace; a Namespace holds only attributes, and
        # their values still pass the weights-only checks, so this admits no code.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        what = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines else type(e).__name__)
        raise ConvertError(f"{path}: refused by the weights-only loader ({what}); strip the checkpoint to its "
                           "state dict with the tool that wrote it, on a machine where you trust the file") from None
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def detect_format(obj: dict) -> str:
    """``mmaction2`` (``state_dict`` with ``backbone.*``) or ``torchvision-reference`` (``model`` + ``args``)."""
    sd = obj.get("state_dict")
    if isinstance(sd, dict) and any(k.startswith("backbone.") for k in sd):
        return "mmaction2"
    if isinstance(obj.get("model"), dict) and isinstance(obj.get("args"), argparse.Namespace):
        return "torchvision-reference"
    return ""


def map_mmaction2(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, str], dict[str, str]]:
    """mmaction2 recognizer state dict -> (our names, ignored entries with the reason, our name -> file name)."""
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    ignored: dict[str, str] = {}
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    stem = backbone.get("conv1.conv.weight", backbone.get("conv1.conv.conv_s.weight"))
    is3d = stem is not None and stem.ndim == 5
    factorised = "conv1.conv.conv_s.weight" in backbone
    for key, value in state.items():
        if key.startswith("data_preprocessor."):
            ignored[key] = f"input normalisation, not a weight: {value.flatten().tolist()}"
            continue
        if key.startswith("cls_head.fc_cls."):
            name = "fc." + key[len("cls_head.fc_cls."):]
            out[name], origin[name] = value, key
            continue
        if not key.startswith("backbone."):
            out[key], origin[key] = value, key  # no mapping: reported as left over
            continue
        name = key[len("backbone."):]
        for pattern, repl in MMACTION2_RENAME:
            new = re.sub(pattern, repl, name)
            if new != name:
                name = new
                break
        if name.startswith("@stem_conv."):
            name = ("stem.0." if is3d else "conv1.") + name[len("@stem_conv."):]
        elif name.startswith("@stem_bn."):
            name = ("stem.4." if factorised else "stem.1." if is3d else "bn1.") + name[len("@stem_bn."):]
        elif name.startswith("@block_conv."):
            m = re.match(r"@block_conv\.(layer\d+\.\d+)\.(\d)\.(.*)$", name)
            block, n, rest = m.groups()
            name = f"{block}.conv{n}.0.{rest}" if is3d else f"{block}.conv{n}.{rest}"
        elif name.startswith("@block_bn."):
            m = re.match(r"@block_bn\.(layer\d+\.\d+)\.(\d)\.(.*)$", name)
            block, n, rest = m.groups()
            name = f"{block}.conv{n}.1.{rest}" if is3d else f"{block}.bn{n}.{rest}"
        out[name], origin[name] = value, key
    return out, ignored, origin


def infer_arch(state: dict[str, Tensor]) -> str:
    """The twostream arch whose state dict has these names (ResNet-18/34/50, r3d_18, r2plus1d_18)."""
    blocks = [len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    if "stem.0.weight" in state:
        if blocks == [2, 2, 2, 2]:
            return "r2plus1d_18" if "stem.3.weight" in state else "r3d_18"
    elif "conv1.weight" in state:
        bottleneck = any(".conv3." in k for k in state)
        for name, layout, b in (("resnet18", [2, 2, 2, 2], False), ("resnet34", [3, 4, 6, 3], False),
                                ("resnet50", [3, 4, 6, 3], True)):
            if blocks == layout and bottleneck == b:
                return name
    raise ConvertError(f"no twostream arch has this layout (blocks per stage {blocks}); pass --arch")


def _model_for(arch: str, state: dict[str, Tensor]):
    first = state["stem.0.weight" if "stem.0.weight" in state else "conv1.weight"]
    width = state["stem.3.weight"].shape[0] if "stem.3.weight" in state else first.shape[0]
    fc = state.get("fc.weight")
    num_classes = fc.shape[0] if fc is not None else 0
    model = build_model(arch, num_classes=num_classes, in_channels=first.shape[1], base_width=width)
    return model, num_classes, first.shape[1], width


def check_complete(state: dict[str, Tensor], arch: str, path, origin: dict[str, str] | None = None
                   ) -> tuple[int, int, int]:
    """Refuse unless ``state`` fills exactly the model of ``arch`` (names and shapes). Returns (classes, channels, width).

    ``origin`` (our name -> the file's name) lets the message name the file's entries.
    """
    try:
        model, num_classes, in_channels, width = _model_for(arch, state)
    except KeyError as e:
        raise ConvertError(f"{path}: no first convolution ({e.args[0]}) among the converted entries") from None
    own = model.state_dict()
    origin = origin or {}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    leftover = [origin.get(k, k) for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs {arch} {tuple(own[k].shape)}"
              for k in state if k in own and state[k].shape != own[k].shape]
    if missing or leftover or shapes:
        parts = [f"{len(v)} {what}: {', '.join(v)}" for what, v in
                 (("left over (no place in the model)", leftover), ("missing from the file", missing),
                  ("with another shape", shapes)) if v]
        raise ConvertError(f"{path}: does not convert to {arch}: " + "; ".join(parts))
    return num_classes, in_channels, width


def convert_checkpoint(path: str | Path, *, source: str = "auto", arch: str | None = None) -> Converted:
    """Read another tool's checkpoint and return its weights under our names, checked complete.

    Args:
        path: the checkpoint file.
        source: ``auto`` (detect), ``mmaction2`` or ``torchvision-reference``.
        arch: the twostream arch to convert to (default: inferred from the names; for the torchvision
            reference, the run's ``args.model`` when it is one of ours).

    Raises:
        ConvertError: unreadable or refused file, unknown format, or entries that do not map (named).
    """
    if source not in FORMATS:
        raise ConvertError(f"source must be one of {', '.join(FORMATS)}, got {source!r}")
    obj = read_foreign(path)
    fmt = detect_format(obj) if source == "auto" else source
    ignored: dict[str, str] = {}
    origin: dict[str, str] = {}
    info: dict = {}
    if fmt == "mmaction2":
        sd = obj.get("state_dict")
        if not isinstance(sd, dict):
            raise ConvertError(f"{path}: no 'state_dict' in this mmaction2 checkpoint")
        state, ignored, origin = map_mmaction2(sd)
        meta = obj.get("meta")
        info = {k: meta[k] for k in ("mmaction2_version", "mmaction_version", "epoch", "iter") if isinstance(meta, dict) and k in meta}
    elif fmt == "torchvision-reference":
        state = dict(obj.get("model") or {})
        args = obj.get("args")
        info = {"epoch": obj.get("epoch"), **(vars(args) if isinstance(args, argparse.Namespace) else {})}
        if arch is None and info.get("model") in ARCHS:
            arch = info["model"]
    else:
        raise ConvertError(f"{path}: neither an mmaction2 checkpoint ('state_dict' with 'backbone.*' keys) nor a "
                           "torchvision reference checkpoint ('model' and 'args'); pass --from")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ConvertError(f"{path}: entries that are not tensors: {', '.join(map(str, bad))}")
    if arch is None:
        arch = infer_arch(state)
    elif arch not in ARCHS:
        raise ConvertError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    num_classes, in_channels, width = check_complete(state, arch, path, origin)
    return Converted(state, arch, fmt, num_classes, in_channels, width, ignored, info)


def save_state_dict(state: dict[str, Tensor], out: str | Path) -> None:
    """Write a plain state dict atomically (``torch.save``), readable with ``weights_only=True``."""
    with atomic_path(out) as tmp:
        torch.save({k: v.contiguous() for k, v in state.items()}, tmp)
