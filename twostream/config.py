"""The settings of one training run, :class:`TrainConfig`: checked when made, stored in every checkpoint.

``to_dict`` / ``from_dict`` give and take the plain form a checkpoint's ``config`` and a run's ``config.json``
hold, so a run can be repeated or varied (``twostream train --config RUN/config.json``).
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields

from flowprep.options import opt

from .data import STREAMS, ClipSpec, read_flip_pairs
from .errors import ConfigError
from .models import ARCH_INPUT

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "constant")
BN_MODES = ("train", "partial", "frozen")


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

    store: str = opt(help="flowprep store directory", metavar="STORE")
    out_dir: str = opt(help="run directory", flags=("-o", "--out"), metavar="RUN_DIR")
    stream: str = opt("spatial", "spatial: RGB frames; temporal: stacked optical flow", choices=STREAMS)
    split: int = opt(1, "split number")
    arch: str = opt("resnet18", "model", choices=lambda: sorted(ARCH_INPUT))
    base_width: int = opt(64, "channels of the first stage (64 is the published width; smaller trains faster)",
                          flags=("--width",))
    num_frames: int | None = opt(None, "L flow frames per stack (default 10), or frames per clip for video models "
                                 "(default 16); 1 for a spatial 2D stream", type=int)
    stride: int = opt(1, "frame step inside a clip")
    input_size: int = opt(224, "network input side")
    pretrained: str | None = opt(None, "weights to start from: 'imagenet' (resnet18/34/50, the 2D-backbone video "
                                 "models, r3d_18 by inflation) or 'kinetics400' (r3d_18, r2plus1d_18), downloaded "
                                 "once into the torch hub cache; or the path of a state dict. For the temporal stream "
                                 "the first conv is adapted by cross-modality init", metavar="NAME|PATH")
    epochs: int = opt(20, "epochs")
    batch_size: int = opt(32, "global batch (split over the processes under torchrun)")
    lr: float = opt(0.01, "learning rate")
    momentum: float = opt(0.9, "SGD momentum")
    weight_decay: float = opt(5e-4, "weight decay")
    optimizer: str = opt("sgd", "optimizer", choices=OPTIMIZERS)
    schedule: str = opt("cosine", "learning-rate schedule over the epochs", choices=SCHEDULES)
    dropout: float = opt(0.5, "dropout before the classifier")
    bn: str = opt("train", "BatchNorm statistics: train, partial (TSN: all frozen but the first), frozen",
                  choices=BN_MODES)
    samples_per_video: int = opt(1, "random clips per video and epoch")
    workers: int = opt(2, "DataLoader workers")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = opt(True, "no autocast on CUDA (default: bfloat16 on compute capability >= 8.0, float16 with loss "
                    "scaling below)")
    channels_last: bool = opt(True, "no channels-last memory format on CUDA")
    seed: int = opt(0, "seed of every random choice")
    val_clips: int = opt(3, "clips per video in per-epoch validation")
    subtract_mean: bool = opt(True, "keep the mean flow of each field (subtracting it removes a global pan: right "
                              "when camera motion is noise, as in UCF101; wrong when the camera motion is the class)",
                              flags=("--no-mean-subtraction",))
    flip: bool = opt(True, "no horizontal flips: for classes defined by a direction (pan left / pan right). Recorded "
                     "in the checkpoint: evaluate and predict then use no mirrored views (10 crops become 5)")
    flip_map: str | None = opt(None, "class pairs that swap under a horizontal flip (mmaction2's flip_label_map), one "
                               "pair per line ('Left Right'; a tab between names with spaces): flips stay and swap "
                               "those labels, in training and in the mirrored test views; not with --no-flip",
                               metavar="FILE")
    tensorboard: bool = opt(False, "also log to RUN_DIR/tb (needs tensorboard)")
    resume: bool = opt(False, "continue from RUN_DIR/last.pt")

    def __post_init__(self):
        if self.arch not in ARCH_INPUT:
            raise ConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(sorted(ARCH_INPUT))}")
        for name, allowed in (("stream", STREAMS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("bn", BN_MODES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
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
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in d]
        if missing:
            raise ConfigError(f"missing training setting(s) {', '.join(missing)}")
        return cls(**d)
