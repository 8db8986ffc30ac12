"""2D ResNets for the spatial and the temporal stream, and cross-modality initialisation.

The backbones are ResNet-18/34/50 (He et al., "Deep Residual Learning for Image Recognition",
CVPR 2016), in the "v1.5" form where a bottleneck block strides in its 3x3 convolution. Parameter
and buffer names follow torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer2.0.downsample.0``/``.1``, ``fc``), so an ImageNet state dict saved from torchvision loads
with ``strict=True`` at ``in_channels=3, num_classes=1000``.

The two streams of Simonyan & Zisserman ("Two-Stream Convolutional Networks for Action Recognition
in Videos", NeurIPS 2014) differ only in the input: the spatial stream sees one RGB frame
``(N, 3, H, W)``, the temporal stream a stack of L flow fields ``(N, 2L, H, W)``. For the temporal
stream, ImageNet weights are transferred by cross-modality initialisation (Wang et al., "Temporal
Segment Networks", ECCV 2016): see :func:`adapt_input_conv` and :func:`load_pretrained`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "adapt_input_conv",
    "load_pretrained",
    "read_state_dict",
    "load_state",
]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut; ResNet-18/34."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4; ResNet-50."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # Striding in the 3x3 rather than the first 1x1 ("v1.5") is what torchvision's ImageNet
        # weights were trained with; striding a 1x1 would skip three quarters of the pixels.
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A 2D ResNet on ``(N, in_channels, H, W)`` input.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages.
        num_classes: size of the classifier ``fc``; 0 replaces it by the identity, so that
            ``forward`` returns the pooled ``(N, num_features)`` features (used by models that put
            their own head on top).
        in_channels: 3 for RGB frames, 2L for a stack of L flow fields.
        dropout: dropout probability before ``fc`` (the two-stream paper uses heavy dropout on the
            temporal stream); it has no parameters, so state-dict names are unchanged.
        base_width: channels of the stem and the first stage (64 in the paper); later stages use
            2x, 4x, 8x. A small value (e.g. 8 or 16) gives a net that trains on a CPU; only 64 can
            load ImageNet weights.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        dropout: float = 0.0,
        base_width: int = 64,
    ):
        super().__init__()
        _check_config(num_classes=num_classes, in_channels=in_channels, dropout=dropout, base_width=base_width)
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        self._planes_in = base_width
        self.layer1 = self._make_stage(block, base_width, layers[0], stride=1)
        self.layer2 = self._make_stage(block, base_width * 2, layers[1], stride=2)
        self.layer3 = self._make_stage(block, base_width * 4, layers[2], stride=2)
        self.layer4 = self._make_stage(block, base_width * 8, layers[3], stride=2)
        del self._planes_in

        self.num_features = base_width * 8 * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def _make_stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if stride != 1 or self._planes_in != out_planes:
            # Projection shortcut: the identity no longer matches in channels or resolution.
            downsample = nn.Sequential(
                nn.Conv2d(self._planes_in, out_planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        stage = [block(self._planes_in, planes, stride, downsample)]
        self._planes_in = out_planes
        stage += [block(out_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def features(self, x: Tensor) -> Tensor:
        """Feature maps of the last stage, ``(N, num_features, H/32, W/32)`` (rounded up)."""
        _check_shape(x, ndim=4, channels=self.in_channels, layout="(N, C, H, W)", who=type(self).__name__)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        """Globally average-pooled features ``(N, num_features)``: the input to ``fc``."""
        return self.avgpool(self.features(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_channels, H, W)`` -> class scores ``(N, num_classes)`` (logits)."""
        return self.fc(self.dropout(self.forward_features(x)))


def resnet18(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0, base_width: int = 64) -> ResNet:
    """ResNet-18 (He et al. 2016): 11,689,512 parameters at 1000 classes, 3 channels."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels,
                  dropout=dropout, base_width=base_width)


def resnet34(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0, base_width: int = 64) -> ResNet:
    """ResNet-34 (He et al. 2016): 21,797,672 parameters at 1000 classes, 3 channels."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels,
                  dropout=dropout, base_width=base_width)


def resnet50(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0, base_width: int = 64) -> ResNet:
    """ResNet-50 (He et al. 2016): 25,557,032 parameters at 1000 classes, 3 channels."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, in_channels=in_channels,
                  dropout=dropout, base_width=base_width)


def adapt_input_conv(weight: Tensor, in_channels: int, *, rescale: bool = True) -> Tensor:
    """Cross-modality initialisation of a first-layer filter bank (Wang et al. 2016, TSN).

    The filters are averaged over their input channels and the mean is tiled over ``in_channels``
    channels, e.g. RGB filters ``(64, 3, 7, 7)`` -> flow filters ``(64, 20, 7, 7)`` for L=10.

    Rescaling (the default) multiplies the tiled mean by ``C_src / in_channels``. TSN keeps the plain
    mean; we rescale so that an input whose channels are all equal (value g) produces exactly the
    response the source net gives to the grey image with value g, instead of ``in_channels / C_src``
    times it. The first layer's output then stays at the scale that the pretrained ``bn1`` running
    statistics and the later layers expect, which matters in eval mode and when BN statistics are
    frozen; TSN compensates the other way, by re-estimating the first BN layer ("partial BN").
    With ``rescale=False`` you get TSN's exact recipe.

    Args:
        weight: ``(C_out, C_src, *kernel)`` filters of a 2D or 3D convolution; not modified.
        in_channels: input channels of the new filter bank.
        rescale: scale by ``C_src / in_channels`` (see above).

    Returns:
        A new tensor ``(C_out, in_channels, *kernel)`` with the dtype and device of ``weight``.
    """
    if not isinstance(weight, Tensor) or weight.ndim < 3:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"adapt_input_conv expects conv filters (C_out, C_in, *kernel), got {shape}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    mean = weight.mean(dim=1, keepdim=True)  # (C_out, 1, *kernel)
    if rescale:
        mean = mean * (weight.shape[1] / in_channels)
    return mean.expand(-1, in_channels, *weight.shape[2:]).clone()


def load_pretrained(model: nn.Module, path: str | Path, *, strict_backbone: bool = True) -> list[str]:
    """Load pretrained weights (e.g. torchvision ImageNet or Kinetics weights) into ``model``.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)``, so no
    arbitrary pickle is executed. It may hold a raw state dict or a dict with the state dict under
    ``"model"`` or ``"state_dict"``; a ``"module."`` prefix (DataParallel) is removed. Then:

    * the model's input convolution (its first ``Conv2d``/``Conv3d``, ``conv1`` for a ResNet,
      ``stem.0`` for a video ResNet) is adapted with :func:`adapt_input_conv` when the file's
      filters have a different number of input channels (RGB weights -> flow stream);
    * the classifier ``fc.*`` is skipped when its shape differs from the model's (another number
      of classes) or the model has none (``num_classes=0``); it keeps its initialisation;
    * BatchNorm ``num_batches_tracked`` buffers may be absent (older torchvision files lack them);
    * a model with a ``backbone`` attribute (single_frame, late_fusion, early_fusion) given a file
      of the plain 2D network gets it loaded into the backbone (the first layer of early fusion
      is adapted to its ``T * C`` channels); the names come back prefixed ``backbone.``.

    Args:
        model: the network to fill in place.
        path: the weights file.
        strict_backbone: if True, any other missing, unexpected or mis-shaped entry raises; if
            False, those entries are skipped and reported.

    Returns:
        Sorted names of state-dict entries that were not loaded: skipped file entries and (with
        ``strict_backbone=False``) model entries the file lacks, which keep their initial values.

    Raises:
        ValueError: naming the file, when it cannot be read as a weights-only torch file, does not
            hold a state dict, or does not match the architecture of ``model``.
    """
    path = Path(path)
    return load_state(model, read_state_dict(path), path, strict_backbone=strict_backbone)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a weights file, read with ``torch.load(weights_only=True)``.

    The file may hold a raw state dict or a dict with the state dict under ``"model"`` or
    ``"state_dict"``; a ``"module."`` prefix (DataParallel) is removed.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file, when it cannot be read as a weights-only torch file or does
            not hold a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and EOF errors all mean "not a torch weights file"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"pretrained weights {path}: cannot be read as a weights-only torch file ({reason}); "
            "expected a state dict saved with torch.save(model.state_dict(), path)"
        ) from err
    return _unwrap_state_dict(obj, path)


def load_state(model: nn.Module, state: Mapping[str, Tensor], source: str | Path, *,
               strict_backbone: bool = True) -> list[str]:
    """Load the state dict ``state`` into ``model`` as :func:`load_pretrained` describes.

    ``source`` names where the weights came from, for error messages. Returns the names that were
    not loaded (see :func:`load_pretrained`).
    """
    state = dict(state)
    backbone = getattr(model, "backbone", None)
    own_keys = model.state_dict().keys()
    if isinstance(backbone, nn.Module) and not any(k in own_keys for k in state if not k.startswith("fc.")):
        # A video model built on a 2D backbone (single_frame, late/early fusion) given weights of
        # the plain 2D net: load them into the backbone; the model's own head keeps its init.
        inner = _load_state_dict(backbone, state, source, strict_backbone)
        head = [k for k in model.state_dict() if not k.startswith("backbone.")]
        return sorted([f"backbone.{k}" for k in inner] + head)
    return _load_state_dict(model, state, source, strict_backbone)


def _load_state_dict(model: nn.Module, state: dict[str, Tensor], path: str | Path, strict_backbone: bool) -> list[str]:
    own = model.state_dict()
    input_key = _input_conv_key(model)
    loaded: dict[str, Tensor] = {}
    skipped: list[str] = []
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        is_classifier = key.startswith("fc.")
        if key not in own:
            (skipped if is_classifier else unexpected).append(key)
            continue
        target = own[key]
        if (key == input_key and value.ndim == target.ndim and value.shape[1] != target.shape[1]
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            value = adapt_input_conv(value, target.shape[1])
        if value.shape != target.shape:
            if is_classifier:
                skipped.append(key)
            else:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(target.shape)}")
            continue
        loaded[key] = value
    missing = [k for k in own if k not in state and not k.startswith("fc.")
               and not k.endswith("num_batches_tracked")]

    if strict_backbone and (missing or unexpected or mismatched):
        problems = []
        for what, items in (("missing from the file", missing), ("unexpected in the file", unexpected),
                            ("with a different shape", mismatched)):
            if items:
                problems.append(f"{len(items)} entries {what} (e.g. {', '.join(items[:3])})")
        raise ConfigError(
            f"pretrained weights {path} do not match the architecture of {type(model).__name__}: "
            + "; ".join(problems)
            + ". Check --arch and the model's width, or pass strict_backbone=False to load what matches."
        )
    result = model.load_state_dict(loaded, strict=False)
    # Every entry of `loaded` was matched against the model's names and shapes above.
    assert not result.unexpected_keys, result.unexpected_keys
    skipped += unexpected + [m.split(":")[0] for m in mismatched]
    skipped += [k for k in own if k.startswith("fc.") and k not in loaded] + missing
    return sorted(set(skipped))


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        kind = "an empty dict" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise ConfigError(f"pretrained weights {path}: not a state dict (found {kind}); expected a "
                         "dict of parameter name -> tensor, possibly under the key 'model' or 'state_dict'")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ConfigError(f"pretrained weights {path}: not a state dict: entry {key!r} holds a "
                             f"{type(value).__name__}, not a tensor")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _input_conv_key(model: nn.Module) -> str | None:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return f"{name}.weight"
    return None


def _init_weights(model: nn.Module) -> None:
    """He-normal convolutions (fan_out, as torchvision) and unit BN scale; Linear layers keep the torch default."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _check_config(*, num_classes: int, in_channels: int, dropout: float, base_width: int) -> None:
    if num_classes < 0:
        raise ConfigError(f"num_classes must be >= 0 (0: no classifier), got {num_classes}")
    if in_channels < 1:
        raise ConfigError(f"in_channels must be >= 1, got {in_channels}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if base_width < 1:
        raise ConfigError(f"base_width must be >= 1, got {base_width}")


def _check_shape(x: Tensor, *, ndim: int, channels: int, layout: str, who: str) -> None:
    """Raise a ValueError naming the shape when ``x`` is not ``ndim``-D with ``channels`` channels."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{who} expects a tensor {layout}, got a {type(x).__name__}")
    if x.ndim != ndim or x.shape[1] != channels:
        raise ValueError(f"{who} expects input {layout} with C={channels}, got shape {tuple(x.shape)}")
