"""2D -> 3D inflation: start a 3D network from the weights of a 2D one (I3D).

Carreira & Zisserman, "Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset", CVPR 2017,
sec. 2.4: a ``k x k`` filter becomes a ``t x k x k`` filter by repeating it ``t`` times along time and
dividing by ``t``. On a "boring" video (one image repeated), every inflated filter then gives the 2D
filter's response at every time step, so the inflated net classifies the clip as the 2D net classifies
the image, and training starts from ImageNet features.

Two uses here:

* :func:`inflate_resnet`: a 2D :class:`.resnet.ResNet` turned into a 3D network of the same layers
  (:class:`InflatedResNet`, state-dict names unchanged). Time is padded by repeating the first and last
  frame rather than with zeros, so the response on a clip of identical frames equals the 2D net's at
  every time step, ends included (``tests/test_pretrained.py`` checks it).
* :func:`inflate_state_dict`: ImageNet weights of a 2D ResNet-18 -> the state dict of our ``r3d_18``
  (torchvision's R3D-18 names), for ``--arch r3d_18 --pretrained imagenet``. R3D-18 has no max pool
  after its stem and zero-pads time, so it is not the same function as the 2D net; each of its blocks
  is, on identical frames away from the clip's ends.
"""
from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import ResNet, _check_shape

__all__ = ["inflate_weight", "InflatedConv3d", "InflatedResNet", "inflate_resnet", "inflate_state_dict",
           "R3D_FROM_RESNET"]


def inflate_weight(weight: Tensor, time: int) -> Tensor:
    """I3D inflation of a 2D filter bank: ``(O, I, kh, kw)`` -> ``(O, I, time, kh, kw)``, repeated and / time.

    Args:
        weight: 2D convolution weights.
        time: temporal extent of the new filters.

    Returns:
        A new tensor whose sum over time is ``weight``: a clip of equal frames gets the 2D response.
    """
    if not isinstance(weight, Tensor) or weight.ndim != 4:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"inflate_weight expects 2D conv filters (O, I, kh, kw), got {shape}")
    if time < 1:
        raise ValueError(f"time must be >= 1, got {time}")
    return (weight.unsqueeze(2) / time).expand(-1, -1, time, -1, -1).clone()


class InflatedConv3d(nn.Conv3d):
    """A ``t x k x k`` convolution made from a 2D one: stride and zero padding in space as the 2D
    layer had, stride 1 in time and ``(t - 1) // 2`` frames of edge replication (not zeros) in time."""

    def __init__(self, conv: nn.Conv2d, time: int):
        if time % 2 == 0:
            raise ValueError(f"the temporal kernel must be odd to keep the clip length, got {time}")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("inflate_resnet supports convolutions with numeric zero padding only")
        super().__init__(conv.in_channels, conv.out_channels, (time, *conv.kernel_size),
                         stride=(1, *conv.stride), padding=(0, *conv.padding), dilation=(1, *conv.dilation),
                         groups=conv.groups, bias=conv.bias is not None)
        self.time_pad = (time - 1) // 2
        with torch.no_grad():
            self.weight.copy_(inflate_weight(conv.weight, time))
            if conv.bias is not None:
                self.bias.copy_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            x = F.pad(x, (0, 0, 0, 0, self.time_pad, self.time_pad), mode="replicate")  # (N, C, T + 2p, H, W)
        return super().forward(x)


def _bn3d(bn: nn.BatchNorm2d) -> nn.BatchNorm3d:
    out = nn.BatchNorm3d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                         track_running_stats=bn.track_running_stats)
    out.load_state_dict(bn.state_dict())
    return out


def _inflate_children(module: nn.Module, time: int) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d):
            # A 1x1 convolution mixes channels only: it stays 1x1x1, as in I3D's ResNets.
            t = time if max(child.kernel_size) > 1 else 1
            setattr(module, name, InflatedConv3d(child, t))
        elif isinstance(child, nn.BatchNorm2d):
            setattr(module, name, _bn3d(child))
        elif isinstance(child, nn.MaxPool2d):
            k, s, p = (nn.modules.utils._pair(v) for v in (child.kernel_size, child.stride, child.padding))
            setattr(module, name, nn.MaxPool3d((1, *k), stride=(1, *s), padding=(0, *p)))
        elif isinstance(child, nn.AdaptiveAvgPool2d):
            setattr(module, name, nn.AdaptiveAvgPool3d(1))
        elif isinstance(child, (nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.Conv1d, nn.BatchNorm1d)):
            raise ValueError(f"inflate_resnet cannot inflate {type(child).__name__}")
        else:
            _inflate_children(child, time)


class InflatedResNet(nn.Module):
    """A 2D ResNet with every layer inflated to 3D (I3D); built by :func:`inflate_resnet`.

    Takes clips ``(N, C, T, H, W)`` and returns logits ``(N, num_classes)``; T is kept through the
    network (no temporal stride) and averaged by the final pool. Parameter names equal the 2D net's.
    """

    def __init__(self, resnet: ResNet, time_kernel: int = 3):
        super().__init__()
        net = copy.deepcopy(resnet)
        _inflate_children(net, time_kernel)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
                     "dropout", "fc"):
            setattr(self, name, getattr(net, name))
        self.in_channels = resnet.in_channels
        self.num_features = resnet.num_features
        self.time_kernel = time_kernel

    def forward(self, x: Tensor) -> Tensor:
        _check_shape(x, ndim=5, channels=self.in_channels, layout="(N, C, T, H, W)", who=type(self).__name__)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, D, T, h, w)
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))


def inflate_resnet(resnet: ResNet, *, time_kernel: int = 3) -> InflatedResNet:
    """I3D: the 3D network whose response on a clip of identical frames is ``resnet``'s on one of them.

    Args:
        resnet: a 2D ResNet, e.g. with ImageNet weights loaded; not modified.
        time_kernel: temporal extent (odd) of every inflated ``k x k`` convolution with k > 1.
    """
    if not isinstance(resnet, ResNet):
        raise ValueError(f"inflate_resnet expects a twostream ResNet, got {type(resnet).__name__}")
    return InflatedResNet(resnet, time_kernel)


# Names of torchvision's R3D-18 (our r3d_18) -> names of the 2D ResNet-18 whose weights fill them.
R3D_FROM_RESNET: list[tuple[str, str]] = [
    (r"^stem\.0\.", "conv1."),
    (r"^stem\.1\.", "bn1."),
    (r"^(layer\d\.\d)\.conv(\d)\.0\.", r"\1.conv\2."),
    (r"^(layer\d\.\d)\.conv(\d)\.1\.", r"\1.bn\2."),
]


def inflate_state_dict(state2d: dict[str, Tensor], target: nn.Module, *,
                       rename: list[tuple[str, str]] = R3D_FROM_RESNET) -> dict[str, Tensor]:
    """The 2D weights ``state2d`` renamed and inflated to fit the 3D network ``target``.

    Each entry of ``target``'s state dict is looked up in ``state2d`` under its 2D name (``rename``:
    regex substitutions; by default torchvision's R3D-18 names -> ResNet-18 names); a 4-D filter bank
    is inflated to the target's temporal extent with :func:`inflate_weight`; other tensors are taken as
    they are. Entries that have no 2D counterpart are left out (the caller reports them).

    Returns:
        A state dict with ``target``'s names, to load with ``load_state_dict(strict=False)`` or
        :func:`.resnet.load_state` (which also adapts the first layer to flow channels).
    """
    out: dict[str, Tensor] = {}
    for key, value in target.state_dict().items():
        name = key
        for pattern, repl in rename:
            name = re.sub(pattern, repl, name)
        if name not in state2d:
            continue
        w = state2d[name]
        if w.ndim == 4 and value.ndim == 5:
            w = inflate_weight(w, value.shape[2])
        out[key] = w
    return out
