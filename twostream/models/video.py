"""Video classifiers of the lineage: single frame, late / early / slow fusion, C3D, 3D ResNets.

Every model here takes a clip tensor ``(N, C, T, H, W)``: batch, channels (3 for RGB, 2 for a
flow field's x and y), frames, height, width; this is the layout of ``nn.Conv3d`` and of
torchvision's video models. Each returns class scores (logits) ``(N, num_classes)``.

* :class:`SingleFrame`, :class:`LateFusion`, :class:`EarlyFusion`, :class:`SlowFusion`: the four
  ways of fusing time studied by Karpathy et al., "Large-scale Video Classification with
  Convolutional Neural Networks", CVPR 2014. The 2D ones are built on a :mod:`.resnet` backbone
  instead of the paper's AlexNet-like net.
* :class:`C3D`: Tran et al., "Learning Spatiotemporal Features with 3D Convolutional Networks",
  ICCV 2015.
* :class:`VideoResNet` (``r3d_18``, ``r2plus1d_18``): Tran et al., "A Closer Look at
  Spatiotemporal Convolutions for Action Recognition", CVPR 2018 (see also Hara et al., CVPR 2018),
  with torchvision's parameter names, so Kinetics-400 weights saved from torchvision load with
  ``strict=True`` (and with :func:`.resnet.load_pretrained`, also into a flow model).

A 3D convolution is equivariant to shifts in time: moving the clip by k frames moves its feature
maps by k frames (by k/s after a temporal stride s), away from the clip's ends. Early fusion has no
such property: its first layer has a separate filter slice per frame slot, so the same motion gives
a different response at a different time. The tests check both.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..errors import ConfigError

from .resnet import ResNet, _check_config, _check_shape, _init_weights, resnet18, resnet34, resnet50

__all__ = [
    "SingleFrame",
    "LateFusion",
    "EarlyFusion",
    "SlowFusion",
    "C3D",
    "VideoResNet",
    "single_frame",
    "late_fusion",
    "early_fusion",
    "slow_fusion",
    "c3d",
    "r3d_18",
    "r2plus1d_18",
]

_BACKBONES: dict[str, Callable[..., ResNet]] = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}


def _clip_check(x: Tensor, channels: int, who: str, *, min_frames: int = 1) -> None:
    _check_shape(x, ndim=5, channels=channels, layout="(N, C, T, H, W)", who=who)
    if x.shape[2] < min_frames:
        raise ValueError(f"{who} needs clips of at least {min_frames} frames, got shape {tuple(x.shape)}")


def _frames_to_batch(x: Tensor) -> Tensor:
    """``(N, C, T, H, W)`` -> ``(N*T, C, H, W)``, frame index fastest, for a per-frame 2D net."""
    n, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(n * t, c, h, w)


class SingleFrame(nn.Module):
    """A 2D classifier applied to every frame; class scores averaged over the T frames.

    The single-frame baseline of Karpathy et al. 2014. The mean is taken over logits so that
    training sees the same quantity as evaluation; softmax averaging over clips is the evaluator's.

    Args:
        backbone: a 2D :class:`.resnet.ResNet` with ``num_classes`` outputs; its weights can be
            loaded with ``load_pretrained(model.backbone, path)``.
    """

    def __init__(self, backbone: ResNet):
        super().__init__()
        self.backbone = backbone
        self.in_channels = backbone.in_channels

    def forward(self, x: Tensor) -> Tensor:
        _clip_check(x, self.in_channels, type(self).__name__)
        n, t = x.shape[0], x.shape[2]
        scores = self.backbone(_frames_to_batch(x))  # (N*T, K)
        return scores.view(n, t, -1).mean(dim=1)


class LateFusion(nn.Module):
    """A shared 2D net per frame whose features are merged only by fully connected layers.

    Karpathy et al. 2014 merge two single-frame towers placed 15 frames apart in the first fully
    connected layer, so that only that layer can compare them (global motion). Two merges:

    * ``"pool"``: the feature maps of all T frames are average-pooled over T, H and W, then go
      through the fusion MLP. Order-free, works for any T.
    * ``"ends"``: the first and the last frame of the clip (the paper's "frames far apart"); their
      spatially pooled features are concatenated, so the MLP sees which came first.

    The head is ``fuse`` (Linear + ReLU + dropout) followed by ``fc``.

    Args:
        backbone: a 2D :class:`.resnet.ResNet` built with ``num_classes=0``.
        num_classes: number of classes.
        merge: ``"pool"`` or ``"ends"``.
        hidden: width of the fusion layer; default: the backbone's feature size.
        dropout: dropout before ``fc``.
    """

    def __init__(self, backbone: ResNet, *, num_classes: int, merge: str = "pool", hidden: int | None = None,
                 dropout: float = 0.0):
        super().__init__()
        if merge not in ("pool", "ends"):
            raise ValueError(f"merge must be 'pool' or 'ends', got {merge!r}")
        if not isinstance(backbone.fc, nn.Identity):
            raise ValueError("LateFusion needs a backbone built with num_classes=0")
        self.backbone = backbone
        self.in_channels = backbone.in_channels
        self.merge = merge
        d = backbone.num_features
        hidden = d if hidden is None else hidden
        self.fuse = nn.Sequential(nn.Linear(d if merge == "pool" else 2 * d, hidden), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout))
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        _clip_check(x, self.in_channels, type(self).__name__, min_frames=2 if self.merge == "ends" else 1)
        if self.merge == "ends":
            x = x[:, :, [0, x.shape[2] - 1]]  # (N, C, 2, H, W)
        n, t = x.shape[0], x.shape[2]
        maps = self.backbone.features(_frames_to_batch(x))  # (N*t, D, h, w)
        maps = maps.view(n, t, *maps.shape[1:])  # (N, t, D, h, w)
        if self.merge == "pool":
            z = maps.mean(dim=(1, 3, 4))  # (N, D)
        else:
            z = maps.mean(dim=(3, 4)).flatten(1)  # (N, 2D): first frame's features, then last's
        return self.fc(self.fuse(z))


class EarlyFusion(nn.Module):
    """The clip folded into the channels of a 2D net: pixel-level fusion at the first layer.

    Karpathy et al. 2014 extend the first layer's filters over T frames. Here
    ``(N, C, T, H, W)`` becomes ``(N, T*C, H, W)``, frame-major (channels ``f0c0, f0c1, ..., f1c0,
    ...``), the same layout as a temporal-stream flow stack with x and y interleaved, and a 2D ResNet
    with ``T*C`` input channels runs on it. T is fixed at construction.

    Args:
        backbone: a 2D :class:`.resnet.ResNet` with ``in_channels = num_frames * in_channels`` and
            ``num_classes`` outputs; ImageNet weights load with ``load_pretrained(model.backbone,
            path)`` (its first layer is adapted by cross-modality init).
        in_channels: C of one frame.
        num_frames: T.
    """

    def __init__(self, backbone: ResNet, *, in_channels: int, num_frames: int):
        super().__init__()
        if backbone.in_channels != in_channels * num_frames:
            raise ValueError(f"EarlyFusion with {num_frames} frames of {in_channels} channels needs a backbone "
                             f"with {in_channels * num_frames} input channels, got {backbone.in_channels}")
        self.backbone = backbone
        self.in_channels = in_channels
        self.num_frames = num_frames

    def fold(self, x: Tensor) -> Tensor:
        """``(N, C, T, H, W)`` -> ``(N, T*C, H, W)``, frame-major."""
        _clip_check(x, self.in_channels, type(self).__name__)
        if x.shape[2] != self.num_frames:
            raise ValueError(f"EarlyFusion was built for T={self.num_frames} frames, got shape {tuple(x.shape)}")
        n, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(n, t * c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(self.fold(x))


def _conv3d_block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                  padding: tuple[int, int, int], pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False),
                               nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    if pool:
        # Spatial only: time is reduced by the temporal strides of the convolutions alone.
        layers.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
    return nn.Sequential(*layers)


class SlowFusion(nn.Module):
    """3D convolutions whose temporal extent grows layer by layer (Karpathy et al. 2014).

    As in the paper, the first layer sees 4 frames at temporal stride 2, the next two layers
    combine 2 neighbouring responses at stride 2, so that with T=10 frames the third layer has one
    temporal position that has seen the whole clip; two more layers are purely spatial. Temporal
    convolutions are unpadded ("valid"): no response mixes in zeros from beyond the clip. Longer clips
    leave several temporal positions, which the global average pool merges. Deviations from the
    paper: BatchNorm instead of local response normalisation, a ResNet-like 7x7 stem, and global
    pooling + one linear layer instead of two 4096-wide ones.

    Channels: ``base_width`` x (1, 2, 4, 8, 8). Needs at least :attr:`MIN_FRAMES` = 10 frames.

    Args:
        num_classes: number of classes.
        in_channels: 3 for RGB clips, 2 for flow clips.
        base_width: channels of the first layer (64 in the default net).
        dropout: dropout before ``fc``.
    """

    MIN_FRAMES = 10

    def __init__(self, *, num_classes: int, in_channels: int = 3, base_width: int = 64, dropout: float = 0.0):
        super().__init__()
        _check_config(num_classes=num_classes, in_channels=in_channels, dropout=dropout, base_width=base_width)
        w = base_width
        self.in_channels = in_channels
        self.stages = nn.Sequential(
            _conv3d_block(in_channels, w, (4, 7, 7), (2, 2, 2), (0, 3, 3), pool=True),  # T -> (T-4)//2+1
            _conv3d_block(w, 2 * w, (2, 3, 3), (2, 1, 1), (0, 1, 1), pool=True),  # -> (T1-2)//2+1
            _conv3d_block(2 * w, 4 * w, (2, 3, 3), (2, 1, 1), (0, 1, 1), pool=False),  # -> (T2-2)//2+1
            _conv3d_block(4 * w, 8 * w, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=False),
            _conv3d_block(8 * w, 8 * w, (1, 3, 3), (1, 1, 1), (0, 1, 1), pool=False),
        )
        self.num_features = 8 * w
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """The feature maps ``(N, C_i, T_i, H_i, W_i)`` after each of the five stages."""
        _clip_check(x, self.in_channels, type(self).__name__, min_frames=self.MIN_FRAMES)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        maps = self.stage_outputs(x)[-1]  # (N, 8w, T3, H/16, W/16)
        return self.fc(self.dropout(self.avgpool(maps).flatten(1)))


class C3D(nn.Module):
    """C3D (Tran et al. 2015): 3x3x3 convolutions with stride 1 throughout, eight of them.

    Layer names follow the widely used PyTorch port of the Caffe model (``conv1``, ``conv2``,
    ``conv3a``/``conv3b``, ..., ``conv5b``, ``fc6``, ``fc7``, ``fc8``). ``pool1`` is 1x2x2 so that
    time is not merged too early (the paper's choice), the other pools are 2x2x2, hence at least
    :attr:`MIN_FRAMES` = 16 frames. After ``pool5`` an adaptive average pool brings the maps to
    1 x 4 x 4; at the paper's input of 16 x 112 x 112 it is the identity, so with
    ``batch_norm=False`` converted Sports-1M weights (``num_classes=487``) load and behave as
    published, and other sizes still work.

    By default each convolution is followed by BatchNorm (``bn1``, ``bn2``, ``bn3a``, ...), which
    the paper did not have: without it this 8-layer net trained from scratch barely moves in the
    few hundred steps of a CPU run, while the other models here all have BN. ``batch_norm=False``
    gives the paper's network (convolutions with biases, no BN).

    Args:
        num_classes: number of classes.
        in_channels: 3 for RGB clips, 2 for flow clips.
        base_width: channels of ``conv1`` (64 in the paper); the others are 2x, 4x, 8x, 8x.
        fc_dim: width of ``fc6``/``fc7``; default ``64 * base_width`` (4096 in the paper).
        dropout: dropout after ``fc6`` and ``fc7`` (0.5 in the paper).
        batch_norm: BatchNorm after every convolution (see above).
    """

    MIN_FRAMES = 16

    def __init__(self, *, num_classes: int, in_channels: int = 3, base_width: int = 64, fc_dim: int | None = None,
                 dropout: float = 0.5, batch_norm: bool = True):
        super().__init__()
        _check_config(num_classes=num_classes, in_channels=in_channels, dropout=dropout, base_width=base_width)
        w = base_width
        fc_dim = 64 * w if fc_dim is None else fc_dim
        if fc_dim < 1:
            raise ConfigError(f"fc_dim must be >= 1, got {fc_dim}")
        self.in_channels = in_channels

        def conv(cin: int, cout: int) -> nn.Conv3d:
            return nn.Conv3d(cin, cout, 3, padding=1, bias=not batch_norm)  # BN's shift replaces the bias

        def norm(c: int) -> nn.Module:
            return nn.BatchNorm3d(c) if batch_norm else nn.Identity()  # Identity: no state-dict entries

        self.conv1, self.bn1 = conv(in_channels, w), norm(w)
        self.pool1 = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2))
        self.conv2, self.bn2 = conv(w, 2 * w), norm(2 * w)
        self.pool2 = nn.MaxPool3d(2, stride=2)
        self.conv3a, self.bn3a = conv(2 * w, 4 * w), norm(4 * w)
        self.conv3b, self.bn3b = conv(4 * w, 4 * w), norm(4 * w)
        self.pool3 = nn.MaxPool3d(2, stride=2)
        self.conv4a, self.bn4a = conv(4 * w, 8 * w), norm(8 * w)
        self.conv4b, self.bn4b = conv(8 * w, 8 * w), norm(8 * w)
        self.pool4 = nn.MaxPool3d(2, stride=2)
        self.conv5a, self.bn5a = conv(8 * w, 8 * w), norm(8 * w)
        self.conv5b, self.bn5b = conv(8 * w, 8 * w), norm(8 * w)
        self.pool5 = nn.MaxPool3d(2, stride=2, padding=(0, 1, 1))
        self.num_features = 8 * w * 16
        self.to_grid = nn.AdaptiveAvgPool3d((1, 4, 4))
        self.fc6 = nn.Linear(self.num_features, fc_dim)
        self.fc7 = nn.Linear(fc_dim, fc_dim)
        self.fc8 = nn.Linear(fc_dim, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        _init_weights(self)

    def stage_outputs(self, x: Tensor) -> list[Tensor]:
        """The feature maps after ``pool1`` ... ``pool5``; temporal strides 1, 2, 4, 8, 16."""
        _clip_check(x, self.in_channels, type(self).__name__, min_frames=self.MIN_FRAMES)
        def unit(conv: nn.Module, bn: nn.Module, h: Tensor) -> Tensor:
            return self.relu(bn(conv(h)))

        x1 = self.pool1(unit(self.conv1, self.bn1, x))
        x2 = self.pool2(unit(self.conv2, self.bn2, x1))
        x3 = self.pool3(unit(self.conv3b, self.bn3b, unit(self.conv3a, self.bn3a, x2)))
        x4 = self.pool4(unit(self.conv4b, self.bn4b, unit(self.conv4a, self.bn4a, x3)))
        x5 = self.pool5(unit(self.conv5b, self.bn5b, unit(self.conv5a, self.bn5a, x4)))
        return [x1, x2, x3, x4, x5]

    def forward(self, x: Tensor) -> Tensor:
        z = self.to_grid(self.stage_outputs(x)[-1]).flatten(1)  # (N, 8w * 16)
        z = self.dropout(self.relu(self.fc6(z)))
        z = self.dropout(self.relu(self.fc7(z)))
        return self.fc8(z)


# --- 3D ResNets (torchvision-compatible names) ----------------------------------------------


class _Conv3x3x3(nn.Conv3d):
    """Full 3x3x3 convolution (R3D)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1):
        super().__init__(cin, cout, 3, stride=stride, padding=1, bias=False)


class _Conv2Plus1D(nn.Sequential):
    """A 1x3x3 spatial convolution, BN, ReLU, then a 3x1x1 temporal one (R(2+1)D).

    Indices 0, 1, 3 are the parameterised modules, as torchvision names them.
    """

    def __init__(self, cin: int, cout: int, mid: int, stride: int = 1):
        super().__init__(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )


class _VideoBasicBlock(nn.Module):
    def __init__(self, cin: int, planes: int, conv: type[nn.Module], stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        # R(2+1)D's intermediate width: the number that gives the factorised pair as many
        # parameters as one 3x3x3 convolution cin -> planes (Tran et al. 2018, Sec. 3.5). Computed
        # once per block from its input width and used for both convolutions, as torchvision does.
        mid = (cin * planes * 27) // (cin * 9 + 3 * planes)
        self.conv1 = nn.Sequential(conv(cin, planes, mid, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, mid), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + shortcut)


class VideoResNet(nn.Module):
    """An 18-layer 3D ResNet: a stem, four stages of two basic blocks, global pool, ``fc``.

    Stages 2-4 halve T, H and W (stride 2 in all three). The stem keeps T (stride 1, 2, 2).

    Args:
        factorised: False for R3D (3x3x3 convolutions), True for R(2+1)D (1x3x3 then 3x1x1).
        num_classes: number of classes (400 for Kinetics-400 weights).
        in_channels: 3 for RGB clips, 2 for flow clips.
        base_width: stem and first-stage channels (64 for torchvision's weights).
        dropout: dropout before ``fc``.
    """

    def __init__(self, *, factorised: bool, num_classes: int = 400, in_channels: int = 3, base_width: int = 64,
                 dropout: float = 0.0):
        super().__init__()
        _check_config(num_classes=num_classes, in_channels=in_channels, dropout=dropout, base_width=base_width)
        w = base_width
        self.in_channels = in_channels
        if factorised:
            # torchvision's R(2+1)D stem has 45 intermediate channels at width 64.
            mid = max(1, 45 * w // 64)
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
                nn.Conv3d(mid, w, (3, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(w), nn.ReLU(inplace=True),
            )
        else:
            self.stem = nn.Sequential(
                nn.Conv3d(in_channels, w, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
                nn.BatchNorm3d(w), nn.ReLU(inplace=True),
            )
        conv = _Conv2Plus1D if factorised else _Conv3x3x3
        self._planes_in = w
        self.layer1 = self._make_stage(conv, w, stride=1)
        self.layer2 = self._make_stage(conv, 2 * w, stride=2)
        self.layer3 = self._make_stage(conv, 4 * w, stride=2)
        self.layer4 = self._make_stage(conv, 8 * w, stride=2)
        del self._planes_in
        self.num_features = 8 * w
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        _init_weights(self)

    def _make_stage(self, conv: type[nn.Module], planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._planes_in != planes:
            downsample = nn.Sequential(nn.Conv3d(self._planes_in, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm3d(planes))
        blocks = [_VideoBasicBlock(self._planes_in, planes, conv, stride, downsample),
                  _VideoBasicBlock(planes, planes, conv)]
        self._planes_in = planes
        return nn.Sequential(*blocks)

    def features(self, x: Tensor) -> Tensor:
        """Last-stage maps ``(N, 8w, ceil(T/8), H/16, W/16)`` (sizes rounded up)."""
        _clip_check(x, self.in_channels, type(self).__name__)
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.avgpool(self.features(x)).flatten(1)))


# --- builders -----------------------------------------------------------------------------------


def _backbone(name: str, **kw) -> ResNet:
    if name not in _BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {sorted(_BACKBONES)}")
    return _BACKBONES[name](**kw)


def _check_frames(num_frames: int | None, minimum: int, who: str) -> None:
    if num_frames is not None and num_frames < minimum:
        raise ConfigError(f"{who} needs num_frames >= {minimum}, got {num_frames}")


def single_frame(*, num_classes: int, in_channels: int = 3, num_frames: int | None = None,
                 backbone: str = "resnet18", base_width: int = 64, dropout: float = 0.0) -> SingleFrame:
    """Single-frame baseline (Karpathy et al. 2014): per-frame 2D ResNet, scores averaged over T.

    ``num_frames`` is only checked (any T >= 1 works); ``base_width`` < 64 gives a CPU-sized net.
    """
    _check_frames(num_frames, 1, "single_frame")
    return SingleFrame(_backbone(backbone, num_classes=num_classes, in_channels=in_channels, dropout=dropout,
                                 base_width=base_width))


def late_fusion(*, num_classes: int, in_channels: int = 3, num_frames: int | None = None,
                backbone: str = "resnet18", base_width: int = 64, dropout: float = 0.0, merge: str = "pool",
                hidden: int | None = None) -> LateFusion:
    """Late fusion (Karpathy et al. 2014): shared per-frame 2D ResNet, features merged by an MLP.

    ``merge="pool"`` pools all frames, ``merge="ends"`` concatenates the first and last frame.
    """
    _check_frames(num_frames, 2 if merge == "ends" else 1, "late_fusion")
    net = _backbone(backbone, num_classes=0, in_channels=in_channels, base_width=base_width)
    return LateFusion(net, num_classes=num_classes, merge=merge, hidden=hidden, dropout=dropout)


def early_fusion(*, num_classes: int, in_channels: int = 3, num_frames: int | None = None,
                 backbone: str = "resnet18", base_width: int = 64, dropout: float = 0.0) -> EarlyFusion:
    """Early fusion (Karpathy et al. 2014): T frames folded into ``T * in_channels`` channels of a 2D ResNet.

    The first layer's filters depend on T, so the model takes clips of exactly ``num_frames``
    frames (default 10, the paper's) and refuses others with a ValueError.
    """
    num_frames = 10 if num_frames is None else num_frames
    _check_frames(num_frames, 1, "early_fusion")
    net = _backbone(backbone, num_classes=num_classes, in_channels=in_channels * num_frames, dropout=dropout,
                    base_width=base_width)
    return EarlyFusion(net, in_channels=in_channels, num_frames=num_frames)


def slow_fusion(*, num_classes: int, in_channels: int = 3, num_frames: int | None = None, base_width: int = 64,
                dropout: float = 0.0) -> SlowFusion:
    """Slow fusion (Karpathy et al. 2014): 3D convolutions with growing temporal extent; T >= 10."""
    _check_frames(num_frames, SlowFusion.MIN_FRAMES, "slow_fusion")
    return SlowFusion(num_classes=num_classes, in_channels=in_channels, base_width=base_width, dropout=dropout)


def c3d(*, num_classes: int, in_channels: int = 3, num_frames: int | None = None, base_width: int = 64,
        fc_dim: int | None = None, dropout: float = 0.5, batch_norm: bool = True) -> C3D:
    """C3D (Tran et al. 2015); T >= 16. ``base_width=8`` gives a CPU-sized net; ``batch_norm=False``
    the paper's net (79,991,015 parameters at 487 classes)."""
    _check_frames(num_frames, C3D.MIN_FRAMES, "c3d")
    return C3D(num_classes=num_classes, in_channels=in_channels, base_width=base_width, fc_dim=fc_dim,
               dropout=dropout, batch_norm=batch_norm)


def r3d_18(*, num_classes: int = 400, in_channels: int = 3, num_frames: int | None = None, base_width: int = 64,
           dropout: float = 0.0) -> VideoResNet:
    """R3D-18 (Tran et al. 2018; Hara et al. 2018): 33,371,472 parameters at 400 classes, 3 channels."""
    _check_frames(num_frames, 1, "r3d_18")
    return VideoResNet(factorised=False, num_classes=num_classes, in_channels=in_channels, base_width=base_width,
                       dropout=dropout)


def r2plus1d_18(*, num_classes: int = 400, in_channels: int = 3, num_frames: int | None = None,
                base_width: int = 64, dropout: float = 0.0) -> VideoResNet:
    """R(2+1)D-18 (Tran et al. 2018): 31,505,325 parameters at 400 classes, 3 channels."""
    _check_frames(num_frames, 1, "r2plus1d_18")
    return VideoResNet(factorised=True, num_classes=num_classes, in_channels=in_channels, base_width=base_width,
                       dropout=dropout)
