"""Classify new videos: prepare each as the training store holds its videos, run the streams, fuse.

A checkpoint carries the settings of the store its model was trained on (frame size and rate, flow method and
parameters, bound, mapping, storage formats); :func:`flowprep.unit.prepare_video` prepares the new video with
them, the quantisation and the JPEG round trip of frames and flow included, so each stream sees its input as it
saw its training data. The views are those of ``evaluate`` (K clips x crops, softmax scores averaged), so a video
that is in the store scores here as it does in ``evaluate``.

:class:`Predictor` loads the checkpoints once and classifies any number of videos (files or frame arrays);
``twostream predict`` runs it over files and folders and writes CSV or JSON; :func:`predict` is the one-call form.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from flowprep.decode import VideoError
from flowprep.store import atomic_path
from flowprep.unit import ExtractConfig, PreparedVideo, prepare_frames, prepare_video

from .checkpoint import Checkpoint
from .data import ArraySource, eval_views, unmirror_scores
from .distributed import resolve_device
from .errors import ConfigError
from .inference import load_model, predict_views

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv", ".3gp", ".ogv")


@dataclass
class Prediction:
    """Class scores of one video.

    Attributes:
        video: the video's path (or the name given to an array of frames).
        classes: class names, in label order.
        scores: (C,) fused scores: each stream's softmax scores averaged over the views, then the streams'
            weighted mean; empty when the video failed.
        streams: (C,) scores of each stream, by stream name.
        error: why the video could not be classified ("" when it was).
    """

    video: str
    classes: list[str]
    scores: np.ndarray
    streams: dict[str, np.ndarray] = field(default_factory=dict)
    error: str = ""

    def top(self, k: int = 5, scores: np.ndarray | None = None) -> list[dict]:
        """The ``k`` best classes as ``[{"class", "score"}]``, best first."""
        s = self.scores if scores is None else scores
        return [{"class": self.classes[i], "score": float(s[i])} for i in np.argsort(-s)[:k]]

    def to_dict(self, top: int = 5) -> dict:
        """``{"video", "top", "streams": {name: top list}}``, or ``{"video", "error"}`` for a failure."""
        if self.error:
            return {"video": self.video, "error": self.error}
        return {"video": self.video, "top": self.top(top),
                "streams": {n: self.top(top, s) for n, s in self.streams.items()}}


class Predictor:
    """Classify new videos with trained streams: the checkpoints are loaded once, then any number of videos.

    Each video is prepared as the store of each checkpoint held its training videos
    (:func:`flowprep.unit.prepare_video`: frame size and rate, flow method and parameters, quantisation, the JPEG
    round trip), scored on ``num_clips`` x ``num_crops`` views as ``evaluate`` scores a stored video (softmax
    scores averaged), and the streams are fused by weighted averaging. A video that is in the store gets the
    scores ``twostream evaluate`` gives it (``tests/test_predict.py``). Each stream takes the crops its checkpoint
    allows: no mirrored views for a model trained without flips, the flip map's pairs swapped back in the mirrored
    views of one trained with a map (see :mod:`twostream.data`).

    Args:
        spatial: checkpoint of the spatial stream, or None.
        temporal: checkpoint of the temporal stream, or None.
        weights: fusion weights (spatial, temporal).
        device: ``auto``, ``cpu`` or ``cuda``.
        num_clips: evenly spaced clips per video (25 in the papers).
        num_crops: crops per clip: 1, 5 or 10 (10 in the papers).
        batch_size: views per forward pass.

    Attributes:
        classes: the class names, in label order.
        seconds: time spent so far per stage: ``decode``, ``flow``, ``store`` (quantising, encoding and reading
            back), ``views`` (cropping, normalising) and ``networks`` (the forward passes).
    """

    def __init__(self, spatial=None, temporal=None, weights=(1.0, 1.0), *, device: str = "auto", num_clips: int = 25,
                 num_crops: int = 10, batch_size: int = 64):
        if spatial is None and temporal is None:
            raise ConfigError("give at least one checkpoint (spatial and/or temporal)")
        if num_crops not in (1, 5, 10) or num_clips < 1:
            raise ConfigError(f"need num_clips >= 1 and num_crops in 1, 5, 10; got {num_clips}, {num_crops}")
        self.device = resolve_device(device)
        self.num_clips, self.num_crops, self.batch_size = num_clips, num_crops, batch_size
        self.streams: list[tuple[str, torch.nn.Module, Checkpoint, float]] = []
        for name, path, w in (("spatial", spatial, weights[0]), ("temporal", temporal, weights[1])):
            if path is not None:
                self.streams.append((name, *load_model(path, self.device), float(w)))
        self.classes = self.streams[0][2].classes
        for name, _, ck, _ in self.streams[1:]:
            if ck.classes != self.classes:
                raise ConfigError(f"the {name} checkpoint was trained on other classes than the {self.streams[0][0]} one")
        self.seconds: dict[str, float] = {k: 0.0 for k in ("decode", "flow", "store", "views", "networks")}

    def _prepare(self, prepare) -> list[PreparedVideo]:
        """One preparation per distinct store of the checkpoints (``prepare(cfg, flow)``), with flow if any needs it."""
        groups: dict[str, tuple[ExtractConfig, bool]] = {}
        for _, _, ck, _ in self.streams:
            key = json.dumps(ck.store.to_json(), sort_keys=True)
            cfg, flow = groups.get(key, (ck.store, False))
            groups[key] = (cfg, flow or ck.spec.stream == "temporal")
        done = {}
        for key, (cfg, flow) in groups.items():
            done[key] = prepare(cfg, flow)
            for stage, s in done[key].seconds.items():
                self.seconds[stage] += s
        return [done[json.dumps(ck.store.to_json(), sort_keys=True)] for _, _, ck, _ in self.streams]

    def _score(self, name: str, prepared: list[PreparedVideo]) -> Prediction:
        per_stream = {}
        for (stream, model, ck, _), p in zip(self.streams, prepared):
            t0 = time.perf_counter()
            views = eval_views(ArraySource(p.frames, p.flow), "video", ck.spec, num_clips=self.num_clips,
                               num_crops=self.num_crops, bound=ck.store.bound)
            t1 = time.perf_counter()
            s = predict_views(model, views, self.device, batch_size=self.batch_size, amp=ck.config.amp,
                              channels_last=ck.config.channels_last and self.device.type == "cuda")
            per_stream[stream] = unmirror_scores(s, ck.spec, self.num_crops).mean(0).numpy()
            self.seconds["views"] += t1 - t0
            self.seconds["networks"] += time.perf_counter() - t1
        fused = sum(w * per_stream[n] for n, _, _, w in self.streams) / sum(w for *_, w in self.streams)
        if not np.isfinite(fused).all():
            raise ConfigError(f"{name}: the streams gave non-finite scores; no prediction")
        return Prediction(name, self.classes, fused, per_stream)

    def predict(self, video) -> Prediction:
        """Scores of one video file.

        Raises:
            VideoError: the file cannot be decoded, or has too few frames for the temporal stream.
        """
        return self._score(str(video), self._prepare(lambda cfg, flow: prepare_video(video, cfg, flow=flow)))

    def predict_frames(self, frames: np.ndarray, name: str = "frames") -> Prediction:
        """Scores of a video given as (T, H, W, 3) uint8 RGB frames at the store's frame rate.

        The frames are resized as the store's decode settings say (its ``fps`` and ``stride`` are taken as
        already applied), then prepared as :meth:`predict` prepares a file.
        """
        return self._score(name, self._prepare(lambda cfg, flow: prepare_frames(frames, cfg, flow=flow, name=name)))

    def predict_many(self, videos, *, progress: bool = True) -> list[Prediction]:
        """Scores of each video, in order. A video that fails is returned with its ``error`` and the rest go on."""
        videos = list(videos)
        out = []
        for v in tqdm(videos, desc="predict", unit="video", disable=not progress, dynamic_ncols=True):
            try:
                out.append(self.predict(v))
            except VideoError as e:
                out.append(Prediction(str(v), self.classes, np.zeros(0, np.float32), error=str(e)))
        return out


def find_videos(inputs) -> list[Path]:
    """Video files named by ``inputs``: files as given, folders searched recursively for video suffixes (sorted).

    Raises:
        ConfigError: an input that does not exist, or a folder without videos.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            vids = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
            if not vids:
                raise ConfigError(f"{item}: a folder without video files ({', '.join(VIDEO_SUFFIXES)})")
            found += vids
        elif item.exists():
            found.append(item)
        else:
            raise ConfigError(f"{item}: no such file or folder")
    return found


def write_predictions(predictions: list[Prediction], path, *, top: int = 5) -> None:
    """Write predictions to ``path``: ``.json`` (a list of :meth:`Prediction.to_dict`) or ``.csv`` (one row per
    video: video, error, the top classes and scores, then the fused score of every class)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps([p.to_dict(top) for p in predictions], indent=1)
    elif path.suffix.lower() == ".csv":
        classes = predictions[0].classes if predictions else []
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["video", "error"] + [f"top{i}{s}" for i in range(1, top + 1) for s in ("", "_score")]
                   + [f"score:{c}" for c in classes])
        for p in predictions:
            best = [] if p.error else [x for t in p.top(top) for x in (t["class"], f"{t['score']:.6f}")]
            best += [""] * (2 * top - len(best))
            w.writerow([p.video, p.error] + best + ([f"{s:.6f}" for s in p.scores] if not p.error else [""] * len(classes)))
        text = buf.getvalue()
    else:
        raise ConfigError(f"{path}: write predictions to a .csv or .json file")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def predict(video, *, spatial=None, temporal=None, weights=(1.0, 1.0), top: int = 5, num_clips: int = 25,
            num_crops: int = 10, device: str = "auto", batch_size: int = 64) -> dict:
    """Top classes of one video from one or both stream checkpoints: :class:`Predictor` for a single call.

    Returns:
        ``{"video", "top": [{"class", "score"}...], "streams": {name: top list}}``.
    """
    p = Predictor(spatial, temporal, weights, device=device, num_clips=num_clips, num_crops=num_crops,
                  batch_size=batch_size)
    return p.predict(video).to_dict(top)
