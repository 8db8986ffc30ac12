"""Classify a raw video: prepare it as the training store holds its videos, run the streams, fuse.

A checkpoint carries the settings of the store its model was trained on (frame size and rate, flow method and
parameters, bound, mapping, storage formats); :func:`flowprep.unit.prepare_video` prepares the new video with
them, the quantisation and the JPEG round trip of frames and flow included, so each stream sees its input as it
saw its training data. The views are those of ``evaluate`` (K clips x crops, softmax scores averaged), so a video
that is in the store scores here as it does in ``evaluate``.
"""
from __future__ import annotations

import json

import numpy as np
import torch

from flowprep.unit import PreparedVideo, prepare_video

from .checkpoint import Checkpoint
from .data import ArraySource, eval_views, unmirror_scores
from .distributed import resolve_device
from .errors import ConfigError
from .inference import load_model, predict_views


def video_scores(model: torch.nn.Module, ck: Checkpoint, prepared: PreparedVideo, device: torch.device, *,
                 num_clips: int = 25, num_crops: int = 10, batch_size: int = 64) -> np.ndarray:
    """(C,) class scores of one prepared video: softmax over ``num_clips`` x ``num_crops`` views, averaged.

    The crops are those the checkpoint allows: without mirrored views for a model trained without flips, with
    the flip map's pairs swapped back in the mirrored views of one trained with a map (see :mod:`twostream.data`).
    """
    views = eval_views(ArraySource(prepared.frames, prepared.flow), "video", ck.spec, num_clips=num_clips,
                       num_crops=num_crops, bound=ck.store.bound)
    p = predict_views(model, views, device, batch_size=batch_size, amp=ck.config.amp,
                      channels_last=ck.config.channels_last and device.type == "cuda")
    return unmirror_scores(p, ck.spec, num_crops).mean(0).numpy()


def prepare_for(video, checkpoints: list[Checkpoint]) -> list[PreparedVideo]:
    """``video`` prepared for each checkpoint as its store says; checkpoints of one store share one preparation."""
    def key(ck: Checkpoint) -> str:
        return json.dumps(ck.store.to_json(), sort_keys=True)

    needs_flow = {}
    for ck in checkpoints:
        needs_flow[key(ck)] = needs_flow.get(key(ck), False) or ck.spec.stream == "temporal"
    prepared = {k: None for k in needs_flow}
    for ck in checkpoints:
        if prepared[key(ck)] is None:
            prepared[key(ck)] = prepare_video(video, ck.store, flow=needs_flow[key(ck)])
    return [prepared[key(ck)] for ck in checkpoints]


def predict(video, *, spatial=None, temporal=None, weights=(1.0, 1.0), top: int = 5, num_clips: int = 25,
            num_crops: int = 10, device: str = "auto", batch_size: int = 64) -> dict:
    """Top classes of ``video`` from one or both stream checkpoints.

    Each stream takes ``num_crops`` crops per clip as its checkpoint allows: without mirrored views for a
    model trained without flips, with the flip map's pairs swapped back in the mirrored views of one trained
    with a map (see :mod:`twostream.data`).

    Returns:
        ``{"video", "top": [{"class", "score"}...], "streams": {name: top list}}``.
    """
    if spatial is None and temporal is None:
        raise ConfigError("give at least one checkpoint (--spatial and/or --temporal)")
    dev = resolve_device(device)
    streams = [(n, p, w) for n, p, w in (("spatial", spatial, weights[0]), ("temporal", temporal, weights[1])) if p]
    loaded = [(n, *load_model(p, dev), w) for n, p, w in streams]  # (name, model, checkpoint, weight)
    classes = loaded[0][2].classes
    for n, _, ck, _ in loaded[1:]:
        if ck.classes != classes:
            raise ConfigError(f"the {n} checkpoint was trained on other classes than the {loaded[0][0]} one")
    prepared = prepare_for(video, [ck for _, _, ck, _ in loaded])
    per_stream = {n: video_scores(model, ck, p, dev, num_clips=num_clips, num_crops=num_crops, batch_size=batch_size)
                  for (n, model, ck, _), p in zip(loaded, prepared)}
    fused = sum(w * per_stream[n] for n, _, _, w in loaded) / sum(w for *_, w in loaded)

    def ranked(s: np.ndarray) -> list[dict]:
        return [{"class": classes[i], "score": float(s[i])} for i in np.argsort(-s)[:top]]

    return {"video": str(video), "top": ranked(fused), "streams": {n: ranked(s) for n, s in per_stream.items()}}
