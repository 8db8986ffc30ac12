"""The per-video unit of work of an extraction: its settings, its result, and its steps.

One video: decode (:func:`decode_for_flow`) -> flow -> quantise, encode and write its store file
(:func:`write_extracted`) -> a :class:`VideoResult`, or a failed one (:func:`failure_result`) that carries the
reason. :func:`extract_video` runs the whole unit in one process. Every extraction backend (joblib workers in
:mod:`flowprep.extract`, the batched device pipeline in :mod:`flowprep.batched`, a Dask cluster in
:mod:`flowprep.cluster`) is built from these pieces, so that they all make the same bytes; this module imports
none of them.
"""
from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .dataset import VideoEntry
from .decode import DecodeConfig, VideoError, read_video
from .errors import ConfigError
from .flow import get_method, resolve_params, video_flow
from .quantize import MAPPINGS, quantize
from .store import FLOW_FORMATS, RGB_FORMATS, comparable_settings, video_path, write_video


@dataclass
class ExtractConfig:
    """Everything that decides what the store holds (recorded in ``store.json``).

    Attributes:
        method: flow method name (see ``flowprep.flow.method_names()``).
        params: overrides of the method's default parameters.
        decode: frame size and rate.
        bound: flow is clipped to [-bound, bound] pixels before quantisation (TSN uses 20).
        mapping: ``symmetric`` (zero exact) or ``tsn`` (see :mod:`flowprep.quantize`).
        rgb_format: ``jpeg`` or ``raw``.
        flow_format: ``jpeg``, ``png`` (lossless codes), ``raw`` (uncompressed codes) or ``float16`` (no quantisation).
        jpeg_quality: JPEG quality for RGB and flow.
    """

    method: str = "tvl1"
    params: dict = field(default_factory=dict)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    bound: float = 20.0
    mapping: str = "symmetric"
    rgb_format: str = "jpeg"
    flow_format: str = "jpeg"
    jpeg_quality: int = 95

    def __post_init__(self):
        get_method(self.method)
        self.params = resolve_params(self.method, self.params)
        if self.mapping not in MAPPINGS:
            raise ConfigError(f"unknown mapping {self.mapping!r}; choose one of {', '.join(MAPPINGS)}")
        if not self.bound > 0:
            raise ConfigError(f"bound must be positive, got {self.bound}")
        if self.rgb_format not in RGB_FORMATS:
            raise ConfigError(f"unknown rgb format {self.rgb_format!r}; choose one of {', '.join(RGB_FORMATS)}")
        if self.flow_format not in FLOW_FORMATS:
            raise ConfigError(f"unknown flow format {self.flow_format!r}; choose one of {', '.join(FLOW_FORMATS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg quality must be in 1..100, got {self.jpeg_quality}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["decode"]["size"] = list(self.decode.size) if self.decode.size else None
        return d


@dataclass
class VideoResult:
    id: str
    ok: bool
    pairs: int = 0
    seconds: float = 0.0
    bytes: int = 0
    num_frames: int = 0
    height: int = 0
    width: int = 0
    error: str = ""


def decode_for_flow(src: Path, cfg: ExtractConfig):
    """Decode ``src`` as ``cfg`` says; raises :class:`VideoError` when it has fewer than the 2 frames flow needs."""
    video = read_video(src, cfg.decode)
    if len(video.frames) < 2:
        raise VideoError(src, f"only {len(video.frames)} frame after subsampling; flow needs at least 2")
    return video


def write_extracted(store_dir: Path, entry: VideoEntry, video, flow: np.ndarray, cfg: ExtractConfig) -> int:
    """Quantise ``flow`` (T-1, H, W, 2) float32 as ``cfg`` says and write the video's store file; returns its bytes.

    The one writer of video files for every extraction path, so that they all make the same bytes.
    """
    data = flow if cfg.flow_format == "float16" else quantize(flow, cfg.bound, cfg.mapping)
    h, w = video.frames.shape[1:3]
    attrs = dict(
        id=entry.id, label=entry.label, class_name=entry.class_name, num_frames=len(video.frames), height=h,
        width=w, source_fps=video.source_fps, fps=video.fps, source_frames=video.source_frames,
        method=cfg.method, mapping=cfg.mapping, bound=cfg.bound,
        # All the settings, so that the files say what they were made with if store.json is lost or edited.
        settings=json.dumps(comparable_settings(cfg.to_json()), sort_keys=True),
    )
    return write_video(video_path(store_dir, entry.id), frames=video.frames, frame_index=video.frame_index,
                       codes_or_flow=data, attrs=attrs, rgb_format=cfg.rgb_format, flow_format=cfg.flow_format,
                       jpeg_quality=cfg.jpeg_quality)


def failure_result(vid: str, error: BaseException, seconds: float) -> VideoResult:
    """The failed :class:`VideoResult` of ``vid``: a :class:`VideoError`'s problem, or any other error as internal."""
    if isinstance(error, VideoError):
        return VideoResult(vid, False, seconds=seconds, error=error.problem)
    tb = traceback.format_exception_only(type(error), error)[-1].strip()
    return VideoResult(vid, False, seconds=seconds, error=f"internal error: {tb}")


def extract_video(src: Path, entry: VideoEntry, store_dir: Path, cfg: ExtractConfig, threads: int = 1) -> VideoResult:
    """Decode one video, compute its flow and write its store file. Never raises: failures come back as a result."""
    import sys

    import cv2

    cv2.setNumThreads(threads)
    get_method(cfg.method)  # imports the method's module (torch for tvl1-torch) before its threads are set
    if "torch" in sys.modules:
        # tvl1-torch on the CPU: torch's own threads too, or every process runs one per core. Measured on the loaded
        # 2-core machine: 2 torch threads took 7-10x the CPU time of 1 (threads spin while their partner waits).
        sys.modules["torch"].set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        video = decode_for_flow(src, cfg)
        flow = video_flow(video.frames, cfg.method, cfg.params)  # (T-1, H, W, 2)
        size = write_extracted(store_dir, entry, video, flow, cfg)
        h, w = video.frames.shape[1:3]
        return VideoResult(entry.id, True, len(flow), time.perf_counter() - t0, size, len(video.frames), h, w)
    except Exception as e:  # any failure of one video must not stop the batch
        return failure_result(entry.id, e, time.perf_counter() - t0)
