"""The networks of twostream, built by name: :func:`build_model` over the plain dict :data:`ARCHS`.

Two kinds of input (see :data:`ARCH_INPUT`):

* ``"frame"``: ``(N, C, H, W)``, one RGB frame (C=3) or one stack of L flow fields (C=2L), as the
  spatial and temporal streams of Simonyan & Zisserman 2014 take them (2D ResNets, :mod:`.resnet`).
* ``"clip"``: ``(N, C, T, H, W)``, T frames of C channels (3 for RGB, 2 for flow), for the video
  classifiers of :mod:`.video`.

Every model returns logits ``(N, num_classes)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import ConfigError

from .inflate import InflatedResNet, inflate_resnet, inflate_state_dict, inflate_weight
from .resnet import ResNet, adapt_input_conv, load_pretrained, load_state, read_state_dict, resnet18, resnet34, resnet50
from .video import (C3D, EarlyFusion, LateFusion, SingleFrame, SlowFusion, VideoResNet, c3d, early_fusion,
                    late_fusion, r2plus1d_18, r3d_18, single_frame, slow_fusion)

__all__ = [
    "ARCHS",
    "ARCH_INPUT",
    "DESCRIPTIONS",
    "build_model",
    "count_parameters",
    "channels_last_format",
    "adapt_input_conv",
    "load_pretrained",
    "read_state_dict",
    "load_state",
    "inflate_weight",
    "inflate_resnet",
    "inflate_state_dict",
    "InflatedResNet",
    "ResNet",
    "SingleFrame",
    "LateFusion",
    "EarlyFusion",
    "SlowFusion",
    "C3D",
    "VideoResNet",
]

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "single_frame": single_frame,
    "late_fusion": late_fusion,
    "early_fusion": early_fusion,
    "slow_fusion": slow_fusion,
    "c3d": c3d,
    "r3d_18": r3d_18,
    "r2plus1d_18": r2plus1d_18,
}

ARCH_INPUT: dict[str, str] = {
    "resnet18": "frame",
    "resnet34": "frame",
    "resnet50": "frame",
    "single_frame": "clip",
    "late_fusion": "clip",
    "early_fusion": "clip",
    "slow_fusion": "clip",
    "c3d": "clip",
    "r3d_18": "clip",
    "r2plus1d_18": "clip",
}

DESCRIPTIONS: dict[str, str] = {
    "resnet18": "2D ResNet-18 on one RGB frame or one flow stack: a two-stream stream (He et al. 2016)",
    "resnet34": "2D ResNet-34 on one RGB frame or one flow stack: a two-stream stream (He et al. 2016)",
    "resnet50": "2D ResNet-50 (bottleneck) on one RGB frame or one flow stack (He et al. 2016)",
    "single_frame": "2D ResNet on each frame, class scores averaged over the clip (Karpathy et al. 2014)",
    "late_fusion": "shared per-frame 2D ResNet, features merged by fully connected layers (Karpathy et al. 2014)",
    "early_fusion": "T frames stacked into the channels of a 2D ResNet: fused at the first layer (Karpathy et al. 2014)",
    "slow_fusion": "3D convolutions whose temporal extent grows layer by layer (Karpathy et al. 2014)",
    "c3d": "eight 3x3x3 convolutions and three fully connected layers (Tran et al. 2015)",
    "r3d_18": "18-layer ResNet with 3x3x3 convolutions; torchvision names (Tran et al. 2018, Hara et al. 2018)",
    "r2plus1d_18": "18-layer ResNet with (2+1)D convolutions: 1x3x3 then 3x1x1; torchvision names (Tran et al. 2018)",
}

assert ARCHS.keys() == ARCH_INPUT.keys() == DESCRIPTIONS.keys()


def build_model(arch: str, *, num_classes: int, in_channels: int = 3, num_frames: int | None = None,
                **kw) -> nn.Module:
    """Build a network by name.

    Args:
        arch: a key of :data:`ARCHS`.
        num_classes: number of classes.
        in_channels: for ``"frame"`` archs, 3 (RGB) or 2L (a flow stack); for ``"clip"`` archs, the
            channels of one frame, 3 (RGB) or 2 (flow).
        num_frames: T of the clips for ``"clip"`` archs: fixes ``early_fusion``'s input (default
            10), is checked against the minimum of ``slow_fusion`` (10) and ``c3d`` (16); ignored by
            ``"frame"`` archs, whose in_channels already say how many flow fields a stack holds.
        **kw: passed to the builder, e.g. ``dropout``, ``base_width`` (all archs), ``backbone``
            (``"resnet18"``/``"resnet34"``/``"resnet50"`` for single_frame, late_fusion,
            early_fusion), ``merge`` and ``hidden`` (late_fusion), ``fc_dim`` (c3d).

    Returns:
        The model, in training mode, with random initialisation.
    """
    if arch not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    builder = ARCHS[arch]
    if ARCH_INPUT[arch] == "clip":
        return builder(num_classes=num_classes, in_channels=in_channels, num_frames=num_frames, **kw)
    return builder(num_classes=num_classes, in_channels=in_channels, **kw)


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def channels_last_format(model: nn.Module) -> torch.memory_format:
    """The channels-last memory format that fits ``model``'s convolution weights.

    ``torch.channels_last_3d`` when it has a ``Conv3d``, else ``torch.channels_last``. The input
    layout is no guide: single_frame, late_fusion and early_fusion take 5-D clips but hold 4-D
    ``Conv2d`` weights, and ``model.to(memory_format=torch.channels_last_3d)`` raises on those.
    """
    if any(isinstance(m, nn.Conv3d) for m in model.modules()):
        return torch.channels_last_3d
    return torch.channels_last
