"""Datasets that feed the streams from a flowprep store.

A *clip* is T frames (spatial stream) or T flow frames (temporal stream) taken ``stride`` apart. How it
reaches the network depends on the model's input layout:

* ``frame`` (2D CNNs, the two streams of Simonyan & Zisserman 2014):
  spatial, T = 1 -> ``(3, H, W)``; temporal, T = L -> ``(2L, H, W)`` with x and y *interleaved*
  (channels x_0, y_0, x_1, y_1, ..., as TSN stacks flow images);
* ``clip`` (video models, see ``twostream.models``): ``(C, T, H, W)`` with C = 3 (RGB) or 2 (flow).

Training draws ``samples_per_video`` random clips per video and epoch; the random choices (position, crop,
flip) come from a generator seeded by (seed, epoch, sample index), so they do not depend on the number of
DataLoader workers and a resumed run sees exactly what an uninterrupted one would.
Testing takes K evenly spaced clips per video, each in 1, 5 or 10 crops (TSN's test protocol).

Horizontal flips assume that a mirrored clip shows the same class. Where classes are defined by a direction
(pan left / pan right, Something-Something's "from left to right"), ``ClipSpec.flip=False`` turns them off in
training and drops the mirrored test views, and ``ClipSpec.flip_pairs`` (mmaction2's ``flip_label_map``)
keeps them but swaps the labels of each pair under a flip, in training and in the mirrored test views' scores.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from flowprep.unit import ExtractConfig

from . import transforms
from .errors import ConfigError

STREAMS = ("spatial", "temporal")
LAYOUTS = ("frame", "clip")


@dataclass(frozen=True)
class ClipSpec:
    """What one network input is made of.

    Attributes:
        stream: ``spatial`` (RGB) or ``temporal`` (flow).
        num_frames: T, frames per clip (L for a temporal 2D stream; 1 for a spatial 2D stream).
        stride: step between the clip's frames.
        layout: ``frame`` or ``clip`` (see the module docstring).
        input_size: side of the square network input.
        subtract_mean: per-field mean flow subtraction (temporal stream only).
        flip: random horizontal flips in training and mirrored views in testing (see the module docstring).
        flip_pairs: label pairs that swap under a horizontal flip (needs ``flip``).
    """

    stream: str = "spatial"
    num_frames: int = 1
    stride: int = 1
    layout: str = "frame"
    input_size: int = 224
    subtract_mean: bool = True
    flip: bool = True
    flip_pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self):
        pairs = tuple((int(a), int(b)) for a, b in self.flip_pairs)  # lists when read back from a checkpoint
        object.__setattr__(self, "flip_pairs", pairs)
        labels = [x for p in pairs for x in p]
        if any(a == b for a, b in pairs) or len(set(labels)) != len(labels):
            raise ValueError(f"flip pairs must join two different labels and name each label once, got {pairs}")
        if pairs and not self.flip:
            raise ValueError("flip pairs swap labels under a flip: they need flip=True")
        if self.stream not in STREAMS:
            raise ConfigError(f"stream must be one of {', '.join(STREAMS)}, got {self.stream!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.num_frames < 1 or self.stride < 1 or self.input_size < 8:
            raise ConfigError(f"bad clip spec: num_frames={self.num_frames}, stride={self.stride}, "
                             f"input_size={self.input_size}")
        if self.stream == "spatial" and self.layout == "frame" and self.num_frames != 1:
            raise ConfigError("a 2D spatial stream takes one frame (num_frames=1); use layout='clip' for video models")

    @property
    def channels(self) -> int:
        c = 3 if self.stream == "spatial" else 2
        return c * self.num_frames if self.layout == "frame" else c

    def flip_label(self, label: int) -> int:
        """The label of a horizontally flipped clip of class ``label``."""
        for a, b in self.flip_pairs:
            if label in (a, b):
                return b if label == a else a
        return label

    def test_crops(self, num_crops: int) -> int:
        """The crops per clip actually used: 10 (five, and each mirrored) becomes 5 for a model trained without flips."""
        return 5 if num_crops == 10 and not self.flip else num_crops

    def num_positions(self, num_frames: int) -> int:
        """How many clip start positions a video of ``num_frames`` stored frames offers (at least 1)."""
        n = num_frames if self.stream == "spatial" else num_frames - 1
        return max(1, n - (self.num_frames - 1) * self.stride)


def clip_indices(spec: ClipSpec, start: int, num_frames: int) -> list[int]:
    """Frame (or flow-frame) indices of the clip at ``start``; clamped at the end for short videos."""
    last = num_frames - 1 if spec.stream == "spatial" else num_frames - 2
    return [min(start + k * spec.stride, last) for k in range(spec.num_frames)]


def evenly_spaced(num_positions: int, k: int) -> list[int]:
    """K starts spread evenly over the positions, at the centres of K equal segments (TSN's test sampling)."""
    tick = num_positions / k
    return [int(tick / 2 + tick * i) for i in range(k)]


def load_clip(source, vid: str, spec: ClipSpec, start: int) -> np.ndarray:
    """(T, H, W, C) float32 pixels (flow) or uint8 (RGB) from ``source`` (a Store or anything with its reads)."""
    idx = clip_indices(spec, start, source.num_frames(vid))
    return source.frames(vid, idx) if spec.stream == "spatial" else source.flow(vid, idx)


def to_input(clip: np.ndarray, spec: ClipSpec, bound: float) -> torch.Tensor:
    """(T, h, w, C) cropped clip -> the network's input tensor for one clip (see the module docstring).

    Normalisation writes straight into the input layout, channel by channel, whatever the clip's strides.
    """
    t, h, w, c = clip.shape
    if spec.layout == "frame":  # (T, C, h, w) -> (T*C, h, w), x/y interleaved for flow
        out = np.empty((t, c, h, w), np.float32)
        view = out.transpose(0, 2, 3, 1)
    else:  # (C, T, h, w)
        out = np.empty((c, t, h, w), np.float32)
        view = out.transpose(1, 2, 3, 0)
    if spec.stream == "spatial":
        transforms.normalize_rgb(clip, out=view)
    else:
        transforms.normalize_flow(clip, bound, spec.subtract_mean, out=view)
    return torch.from_numpy(out.reshape(t * c, h, w) if spec.layout == "frame" else out)


class TrainClips(Dataset):
    """Random augmented clips of the given videos. Item: (input tensor, label)."""

    def __init__(self, store, video_ids: list[str], spec: ClipSpec, *, samples_per_video: int = 1, seed: int = 0):
        if not video_ids:
            raise ConfigError(f"{store.root}: no finished videos to train on")
        self.store, self.ids, self.spec = store, list(video_ids), spec
        self.samples_per_video, self.seed, self.epoch = samples_per_video, seed, 0
        self.bound = ExtractConfig.from_json(store.config).bound

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids) * self.samples_per_video

    def __getitem__(self, i: int):
        vid = self.ids[i % len(self.ids)]
        rng = np.random.default_rng([self.seed, self.epoch, i])
        start = int(rng.integers(self.spec.num_positions(self.store.num_frames(vid))))
        clip = load_clip(self.store, vid, self.spec, start)
        clip, flipped = transforms.train_augment(clip, self.spec.input_size, self.spec.stream == "temporal", rng,
                                                 hflip=self.spec.flip)
        label = self.store.label(vid)
        return to_input(clip, self.spec, self.bound), self.spec.flip_label(label) if flipped else label


def eval_views(source, vid: str, spec: ClipSpec, *, num_clips: int, num_crops: int, bound: float) -> torch.Tensor:
    """All test views of one video: (num_clips * crops, ...) input tensors, clip-major (crops: ``spec.test_crops``)."""
    num_crops = spec.test_crops(num_crops)
    starts = evenly_spaced(spec.num_positions(source.num_frames(vid)), num_clips)
    views = []
    for s in starts:
        clip = load_clip(source, vid, spec, s)
        crops = transforms.eval_crops(clip, spec.input_size, spec.stream == "temporal", num_crops)
        views += [to_input(v, spec, bound) for v in crops]
    return torch.stack(views)


def unmirror_scores(scores: torch.Tensor, spec: ClipSpec, num_crops: int) -> torch.Tensor:
    """Scores (V, C) of :func:`eval_views`'s views with the mirrored views' flip pairs swapped back.

    A mirrored view of a "left" clip is a "right" clip: its score for "right" is evidence for "left".
    """
    num_crops = spec.test_crops(num_crops)
    if not spec.flip_pairs or num_crops != 10:
        return scores
    perm = list(range(scores.shape[1]))
    for a, b in spec.flip_pairs:
        perm[a], perm[b] = b, a
    out = scores.clone()
    mirrored = (torch.arange(len(scores)) % 10) >= 5  # each clip: five crops, then the same five mirrored
    out[mirrored] = scores[mirrored][:, perm]
    return out


def read_flip_pairs(path, classes: list[str]) -> tuple[tuple[int, int], ...]:
    """Label pairs from a flip map file: one pair of classes per line, names (or 0-based labels) separated by
    whitespace, or by a tab when names hold spaces; ``#`` starts a comment.

    Raises:
        ValueError: a line that is not two known classes, or a class named twice (the message names the line).
    """
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the flip map ({e})") from None
    index = {c: i for i, c in enumerate(classes)}
    pairs, seen = [], {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
        if len(parts) != 2:
            raise ValueError(f"{path} line {lineno}: expected two classes, got {line!r}")
        pair = []
        for p in parts:
            label = index.get(p, int(p) if p.isdigit() and int(p) < len(classes) else None)
            if label is None:
                raise ValueError(f"{path} line {lineno}: unknown class {p!r} (the store's: {', '.join(classes)})")
            if label in seen or label in pair:
                raise ValueError(f"{path} line {lineno}: class {classes[label]!r} is already paired "
                                 f"(line {seen.get(label, lineno)})")
            pair.append(label)
        seen.update({x: lineno for x in pair})
        pairs.append(tuple(pair))
    return tuple(pairs)


class EvalVideos(Dataset):
    """One item per video: (views tensor (K * crops, ...), label, index into ``ids``)."""

    def __init__(self, store, video_ids: list[str], spec: ClipSpec, *, num_clips: int = 25, num_crops: int = 10):
        self.store, self.ids, self.spec = store, list(video_ids), spec
        self.num_clips, self.num_crops = num_clips, spec.test_crops(num_crops)
        self.bound = ExtractConfig.from_json(store.config).bound

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        vid = self.ids[i]
        x = eval_views(self.store, vid, self.spec, num_clips=self.num_clips, num_crops=self.num_crops, bound=self.bound)
        return x, self.store.label(vid), i


class ArraySource:
    """Frames and flow of one video held in memory, read like a Store (used by ``twostream predict``)."""

    def __init__(self, frames: np.ndarray, flow: np.ndarray | None):
        self._frames, self._flow = frames, flow

    def num_frames(self, vid=None) -> int:
        return len(self._frames)

    def frames(self, vid, idx) -> np.ndarray:
        return self._frames[list(idx)]

    def flow(self, vid, idx) -> np.ndarray:
        return self._flow[list(idx)]


@contextmanager
def opencv_threads(n: int | None):
    """OpenCV on ``n`` threads in this process and the DataLoader workers it forks meanwhile (None: unchanged).

    Each worker is one process on its share of the cores, as torch's own threads there are (torch sets them to 1):
    OpenCV's threads in each worker only add CPU (a temporal clip costs the loader 20-28 % more CPU with 2 than
    with 1). Enter it in the parent process before the workers fork: calling ``cv2.setNumThreads`` inside a forked
    worker can hang once the parent has used OpenCV's thread pool.
    """
    if n is None:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)
