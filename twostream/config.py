"""The settings of one training run, :class:`TrainConfig`: checked when made, stored in every checkpoint.

``to_dict`` / ``from_dict`` give and take the plain form a checkpoint's ``config`` and a run's ``config.json``
hold, so a run can be repeated or varied (``twostream train --config RUN/config.json``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .data import ClipSpec, read_flip_pairs
from .errors import ConfigError
from .models import ARCH_INPUT


@dataclass
class TrainConfig:
    """Settings of one training run (stored in every checkpoint).

    Attributes:
        store: flowprep store directory.
        out_dir: run directory for checkpoints and logs.
        stream: ``spatial`` (RGB) or ``temporal`` (flow).
        split: split number of the store to train on (its test part is used for validation).
        arch: a name from ``twostream.models.ARCHS``.
        base_width: channels of the first stage (64 is the published width; less trains faster on a CPU).
        num_frames: L flow frames per temporal stack (2D), or T frames per clip (video models);
            default 10 for a temporal 2D stream, 1 for a spatial 2D stream, 16 for video models.
        stride: frame step inside a clip.
        input_size: square network input side.
        pretrained: weights to start from: ``imagenet`` or ``kinetics400`` (torchvision's files, downloaded
            once into the torch hub cache; see :mod:`twostream.pretrained`) or the path of a state dict.
        epochs, batch_size, lr, momentum, weight_decay: the optimisation.
        optimizer: ``sgd`` (with momentum) or ``adamw``.
        schedule: ``cosine``, ``step`` (x0.1 at 1/2 and 3/4 of the epochs) or ``constant``.
        dropout: before the classifier (TSN: 0.8 for flow, 0.5 for RGB with few samples).
        bn: BatchNorm statistics: ``train`` (updated), ``partial`` (all frozen but the first layer's: TSN's
            partial BN, for fine-tuning from pretrained weights) or ``frozen``. Under torchrun on CUDA the
            updated ones are synchronised across GPUs (SyncBatchNorm); on the CPU each process keeps its own.
        samples_per_video: random clips drawn from each video per epoch.
        workers: DataLoader worker processes.
        device: ``auto``, ``cpu`` or ``cuda``.
        amp: autocast on CUDA: bfloat16 on compute capability >= 8.0, else float16 with loss scaling
            (:func:`twostream.distributed.amp_policy`; the log says which).
        channels_last: channels-last memory format on CUDA.
        seed: seed of every random choice.
        val_clips: clips per video in the per-epoch validation (centre crop).
        subtract_mean: mean flow subtraction per displacement field (temporal stream). It removes a global
            pan: right where camera motion is noise (UCF101), wrong where it is the class.
        flip: random horizontal flips in training, mirrored views in testing. Turn off for classes defined by
            a direction (left / right); recorded in the checkpoint, so evaluate and predict drop the mirrored views.
        flip_map: a file of class pairs that swap under a flip (mmaction2's ``flip_label_map``; see
            :func:`twostream.data.read_flip_pairs`): flips stay, and swap the labels of those classes.
        tensorboard: also log to TensorBoard in ``out_dir/tb`` (needs the ``tensorboard`` package).
        resume: continue from ``out_dir/last.pt``.
    """

    store: str
    out_dir: str
    stream: str = "spatial"
    split: int = 1
    arch: str = "resnet18"
    base_width: int = 64
    num_frames: int | None = None
    stride: int = 1
    input_size: int = 224
    pretrained: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "cosine"
    dropout: float = 0.5
    bn: str = "train"
    samples_per_video: int = 1
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    val_clips: int = 3
    subtract_mean: bool = True
    flip: bool = True
    flip_map: str | None = None
    tensorboard: bool = False
    resume: bool = False

    def __post_init__(self):
        if self.arch not in ARCH_INPUT:
            raise ConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(sorted(ARCH_INPUT))}")
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise ConfigError(f"schedule must be cosine, step or constant, got {self.schedule!r}")
        if self.bn not in ("train", "partial", "frozen"):
            raise ConfigError(f"bn must be train, partial or frozen, got {self.bn!r}")
        if self.flip_map is not None and not self.flip:
            raise ConfigError("a flip map says which labels swap under a flip; with flips off (no_flip) it has no use")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ConfigError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}")

    def clip_spec(self, classes: list[str] | None = None) -> ClipSpec:
        """The clips of this run; ``classes`` (the store's) resolve the names in ``flip_map``."""
        layout = ARCH_INPUT[self.arch]
        t = self.num_frames
        if t is None:
            t = 16 if layout == "clip" else (10 if self.stream == "temporal" else 1)
        pairs = read_flip_pairs(self.flip_map, classes or []) if self.flip_map else ()
        return ClipSpec(self.stream, t, self.stride, layout, self.input_size, self.subtract_mean, self.flip, pairs)

    # Fields that may differ between the run that wrote a checkpoint and the one resuming it.
    RESUMABLE_CHANGES = ("workers", "device", "resume", "tensorboard")

    def to_dict(self) -> dict:
        """The settings as plain data (a checkpoint's ``config``, a run's ``config.json``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The settings from :meth:`to_dict`'s form (a checkpoint's ``config``, a run's ``config.json``).

        Raises:
            ConfigError: a key that is not a setting, or a bad value.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; the settings are {', '.join(names)}")
        return cls(**d)
