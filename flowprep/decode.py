"""Decode a video file into resized RGB frames, with optional temporal subsampling.

Everything goes through OpenCV's ``cv2.VideoCapture`` (FFmpeg backend), so any container and codec
that OpenCV decodes works (avi, mp4, mkv, webm, ...).
"""
from __future__ import annotations

import math
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import ConfigError, FlowprepError
from .options import opt

# Containers that state no usable rate give 0, NaN or absurd values (90000, the MPEG time base, is common): a rate
# above this is treated as unknown, so that --fps refuses the file rather than subsampling by a wrong factor.
MAX_SOURCE_FPS = 1000


@contextmanager
def _quiet_decoding():
    """Silence FFmpeg's and OpenCV's own messages about a broken file while we decode it: the VideoError we raise
    names the file and the problem. Set here rather than at import, so that importing flowprep leaves a
    program's OpenCV settings alone; an OPENCV_FFMPEG_LOGLEVEL the user set is kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when OpenCV first opens a file with FFmpeg
    level = cv2.getLogLevel()
    cv2.setLogLevel(2)  # errors only: its "can't capture by name" warnings duplicate our VideoError
    try:
        yield
    finally:
        cv2.setLogLevel(level)


class VideoError(FlowprepError):
    """A video that cannot be used; the message names the file and the problem."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass(frozen=True)
class DecodeConfig:
    """How frames are taken from a video.

    Attributes:
        size: exact output (width, height), e.g. (340, 256) as in TSN; overrides ``short_side``.
        short_side: resize so the shorter side has this many pixels, keeping the aspect ratio (default 256).
            ``None`` together with ``size=None`` keeps the original resolution.
        fps: keep frames at this rate (nearest source frames); ``None`` keeps the source rate.
        stride: then keep every ``stride``-th frame.
        max_truncation: a video whose decodable frames fall short of the frame count in its header by more
            than this fraction (and at least 2 frames) is reported as truncated.
    """

    size: tuple[int, int] | None = None
    short_side: int | None = 256
    fps: float | None = opt(None, "keep frames at this rate (default: the source rate)", type=float)
    stride: int = opt(1, "then keep every N-th frame", metavar="N")
    max_truncation: float = 0.05

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeConfig":
        """The config as recorded in a store's ``store.json`` (``size`` comes back from JSON as a list)."""
        return cls(**{**d, "size": tuple(d["size"]) if d.get("size") else None})

    def __post_init__(self):
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 8):
            raise ConfigError(f"size must be (width, height) of at least 8 pixels each, got {self.size}")
        if self.short_side is not None and self.short_side < 8:
            raise ConfigError(f"short_side must be at least 8 pixels, got {self.short_side}")
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"fps must be positive, got {self.fps}")
        if self.stride < 1:
            raise ConfigError(f"stride must be at least 1, got {self.stride}")


@dataclass
class Video:
    """Decoded frames and where they came from.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB.
        frame_index: (T,) int32 index of each kept frame in the source video.
        source_fps: the container's frame rate (0.0 when it does not say).
        fps: the rate of the kept frames.
        source_frames: frames decoded from the source before subsampling.
        source_size: (width, height) of the source.
    """

    frames: np.ndarray
    frame_index: np.ndarray
    source_fps: float
    fps: float
    source_frames: int
    source_size: tuple[int, int]


def resize_frame(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One frame (H, W, C) resized to ``size`` (width, height) as decoding resizes: area when shrinking, else linear."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    shrink = size[0] < image.shape[1]
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def output_size(width: int, height: int, cfg: DecodeConfig) -> tuple[int, int]:
    """(width, height) of the frames that ``cfg`` makes from a ``width`` x ``height`` source."""
    if cfg.size is not None:
        return tuple(cfg.size)
    if cfg.short_side is None:
        return width, height
    scale = cfg.short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def read_video(path, cfg: DecodeConfig = DecodeConfig()) -> Video:
    """Decode ``path`` into RGB frames resized and subsampled as ``cfg`` says.

    Raises:
        VideoError: the file is missing, unreadable, not a video, has no decodable frame, or is truncated.
    """
    with _quiet_decoding():
        return _decode_file(os.fspath(path), cfg)


def _decode_file(path: str, cfg: DecodeConfig) -> Video:
    if not os.path.exists(path):
        raise VideoError(path, "no such file")
    if os.path.isdir(path):
        raise VideoError(path, "is a directory, not a video file")
    if not os.access(path, os.R_OK):
        raise VideoError(path, "permission denied")
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the decoder; a device has no size
        raise VideoError(path, "not a regular file (a FIFO, socket or device); give a video file")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "empty file (0 bytes)")
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise VideoError(path, "OpenCV cannot open it as a video (not a video file, unsupported codec or corrupt header)")
        source_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not math.isfinite(source_fps) or source_fps > MAX_SOURCE_FPS:
            source_fps = 0.0
        header_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if cfg.fps is not None and source_fps <= 0:
            raise VideoError(path, "the container states no frame rate, so --fps cannot be applied; use --stride")
        keep_every = source_fps / cfg.fps if cfg.fps is not None and cfg.fps < source_fps else 1.0

        frames, index = [], []
        n = 0
        next_keep = 0.0  # source-frame position of the next frame to keep at the target rate
        size = None
        source_size = (0, 0)
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if n + 1e-6 >= next_keep:
                next_keep += keep_every
                if size is None:
                    source_size = (bgr.shape[1], bgr.shape[0])
                    size = output_size(*source_size, cfg)
                frames.append(cv2.cvtColor(resize_frame(bgr, size), cv2.COLOR_BGR2RGB))
                index.append(n)
            n += 1
    finally:
        cap.release()

    if n == 0:
        raise VideoError(path, "no frame could be decoded (empty, corrupt or not a video)")
    missing = header_frames - n
    if header_frames > 0 and missing >= 2 and missing > cfg.max_truncation * header_frames:
        raise VideoError(path, f"truncated: the header says {header_frames} frames but only {n} decode")
    frames, index = frames[:: cfg.stride], index[:: cfg.stride]
    fps = (source_fps / keep_every / cfg.stride) if source_fps > 0 else 0.0
    return Video(np.stack(frames), np.asarray(index, np.int32), source_fps, fps, n, source_size)
