"""The per-video unit of work of an extraction: its settings, its result, and its steps.

One video: decode (:func:`decode_for_flow`) -> flow -> quantise, encode and write its store file
(:func:`write_extracted`) -> a :class:`VideoResult`, or a failed one (:func:`failure_result`) that carries the
reason. :func:`extract_video` runs the whole unit in one process. :func:`prepare_video` prepares a new video exactly
as a store with given settings holds its videos (what ``twostream predict`` feeds the models). Every extraction backend (joblib workers in
:mod:`flowprep.extract`, the batched device pipeline in :mod:`flowprep.batched`, a Dask cluster in
:mod:`flowprep.cluster`) is built from these pieces, so that they all make the same bytes; this module imports
none of them.
"""
from __future__ import annotations

import json
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .dataset import VideoEntry
from .decode import DecodeConfig, Video, VideoError, output_size, read_video, resize_frame
from .errors import ConfigError
from .flow import get_method, method_names, resolve_params, video_flow
from .options import opt
from .quantize import MAPPINGS, quantize
from .store import FLOW_FORMATS, RGB_FORMATS, VideoFile, comparable_settings, video_path, write_video


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

    method: str = opt("tvl1", "flow method", choices=method_names)
    params: dict = field(default_factory=dict)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    bound: float = opt(20.0, "clip flow to +-BOUND pixels before quantising")
    mapping: str = opt("symmetric", "flow to uint8 mapping: symmetric keeps zero exact; tsn is the TSN/denseflow one",
                       choices=MAPPINGS)
    rgb_format: str = opt("jpeg", "how RGB frames are stored", choices=RGB_FORMATS)
    flow_format: str = opt("jpeg", "how flow is stored: jpeg, png (lossless codes), raw (uncompressed codes), float16",
                           choices=FLOW_FORMATS)
    jpeg_quality: int = opt(95, "JPEG quality for frames and flow")

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
        """The settings as ``store.json`` records them (and a checkpoint's ``meta["store"]`` carries them)."""
        d = asdict(self)
        d["decode"]["size"] = list(self.decode.size) if self.decode.size else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ExtractConfig":
        """The settings of a store from its ``store.json`` (or a checkpoint's copy of it).

        Other keys of the file (``schema``, ``flowprep_version``, an imported store's ``imported``) are not
        settings and are left out. The method's runtime-only parameters (``device``, ``batch_size``,
        ``compile``) come back as this machine's defaults: they say where the store was made, not what it holds,
        and a store made on a GPU must be usable where there is none. An imported store records no JPEG
        quality (its JPEGs are the source's); it reads as the default.
        """
        method = get_method(d["method"])
        quality = d.get("jpeg_quality")
        return cls(method=d["method"], params=method.without_runtime(d.get("params", {})),
                   decode=DecodeConfig.from_dict(d["decode"]), bound=float(d["bound"]), mapping=d["mapping"],
                   rgb_format=d.get("rgb_format", "jpeg"), flow_format=d.get("flow_format", "jpeg"),
                   jpeg_quality=cls.jpeg_quality if quality is None else int(quality))


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


@dataclass
class PreparedVideo:
    """A video prepared as a store holds it (see :func:`prepare_video`).

    Attributes:
        frames: (T, H, W, 3) uint8 RGB, as the store's reader returns them.
        flow: (T-1, H, W, 2) float32 pixels, as the store's reader returns them; None when not asked for.
        video: the decoded video (frame indices, rates), before the store's encoding.
        seconds: time spent in each step: ``decode`` (or resizing given frames), ``flow``, ``store`` (quantising,
            encoding, and reading back).
    """

    frames: np.ndarray
    flow: np.ndarray | None
    video: Video
    seconds: dict[str, float] = field(default_factory=dict)


def prepare_video(src, cfg: ExtractConfig, *, flow: bool = True) -> PreparedVideo:
    """Prepare a new video exactly as a store made with ``cfg`` holds its videos, as a model trained on it saw them.

    Decodes ``src`` as ``cfg.decode`` says, computes its flow with ``cfg.method`` and ``cfg.params``, then quantises
    and encodes frames and flow (the JPEG round trip included) and reads them back through the store's own writer
    and reader (:func:`write_extracted`, :class:`flowprep.store.VideoFile`), so the arrays equal those
    ``Store.frames`` / ``Store.flow`` would give for the same video extracted into that store.

    Args:
        src: the video file.
        cfg: the store's settings (``ExtractConfig.from_json(store.config)``, or a checkpoint's).
        flow: also compute the flow; without it a video of one frame is fine.

    Raises:
        VideoError: the file cannot be decoded, or (with ``flow``) has fewer than 2 frames.
    """
    t0 = time.perf_counter()
    video = decode_for_flow(src, cfg) if flow else read_video(src, cfg.decode)
    return _as_stored(video, cfg, flow, time.perf_counter() - t0)


def prepare_frames(frames: np.ndarray, cfg: ExtractConfig, *, flow: bool = True, name: str = "frames") -> PreparedVideo:
    """:func:`prepare_video` for a video given as frames: (T, H, W, 3) uint8 RGB at the store's frame rate.

    The frames are resized as ``cfg.decode`` says (its ``fps`` and ``stride`` are taken as already applied: the
    frames are the ones the store would keep), then flow, quantisation and the JPEG round trip as for a file.

    Raises:
        ConfigError: not a (T, H, W, 3) uint8 array.
        VideoError: (with ``flow``) fewer than 2 frames; ``name`` names the video in the message.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ConfigError(f"{name}: expected (T, H, W, 3) uint8 RGB frames, got {frames.dtype} {frames.shape}")
    if flow and len(frames) < 2:
        raise VideoError(name, f"only {len(frames)} frame; flow needs at least 2")
    t0 = time.perf_counter()
    source_size = (frames.shape[2], frames.shape[1])
    size = output_size(*source_size, cfg.decode)
    resized = np.stack([resize_frame(f, size) for f in frames])
    video = Video(resized, np.arange(len(frames), dtype=np.int32), 0.0, 0.0, len(frames), source_size)
    return _as_stored(video, cfg, flow, time.perf_counter() - t0)


def _as_stored(video: Video, cfg: ExtractConfig, flow: bool, decode_seconds: float) -> PreparedVideo:
    """Flow of ``video``, then its store file written and read back (see :func:`prepare_video`)."""
    t, h, w = video.frames.shape[:3]
    t0 = time.perf_counter()
    # Without flow, zeros stand in for it: the file must hold T-1 flow frames to be read back.
    pixels = video_flow(video.frames, cfg.method, cfg.params) if flow else np.zeros((t - 1, h, w, 2), np.float32)
    t1 = time.perf_counter()
    entry = VideoEntry("video", 0, "")
    with tempfile.TemporaryDirectory(prefix="flowprep-prepare-") as tmp:
        write_extracted(Path(tmp), entry, video, pixels, cfg)
        stored = VideoFile(video_path(tmp, entry.id))
        try:
            frames = stored.frames(list(range(t)))
            read_flow = stored.flow(list(range(t - 1))) if flow else None
        finally:
            stored.close()
    seconds = {"decode": decode_seconds, "flow": t1 - t0 if flow else 0.0, "store": time.perf_counter() - t1}
    return PreparedVideo(frames, read_flow, video, seconds)


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
