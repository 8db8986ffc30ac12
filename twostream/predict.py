"""Classify a raw video: decode, compute flow as the training store did, run the streams, fuse.

The checkpoints carry the store's extraction settings (frame size and rate, flow method and parameters,
bound, mapping), so the video is prepared exactly as the training data was.
"""
from __future__ import annotations

import numpy as np

from flowprep.decode import DecodeConfig, read_video
from flowprep.flow import get_method, video_flow
from flowprep.quantize import dequantize, quantize

from .data import ArraySource, eval_views, unmirror_scores
from .distributed import resolve_device
from .inference import load_model, predict_views


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
        raise ValueError("give at least one checkpoint (--spatial and/or --temporal)")
    dev = resolve_device(device)
    streams = [(n, p, w) for n, p, w in (("spatial", spatial, weights[0]), ("temporal", temporal, weights[1])) if p]
    loaded = [(n, *load_model(p, dev), w) for n, p, w in streams]
    classes = loaded[0][2]["meta"]["classes"]
    for n, _, ckpt, _, _ in loaded[1:]:
        if ckpt["meta"]["classes"] != classes:
            raise ValueError(f"the {n} checkpoint was trained on other classes than the {loaded[0][0]} one")
    store_cfg = loaded[0][2]["meta"]["store"]
    for n, _, ckpt, _, _ in loaded[1:]:
        other = ckpt["meta"]["store"]
        if other["decode"] != store_cfg["decode"]:
            raise ValueError("the checkpoints were trained on stores with different frame settings")
    v = read_video(video, DecodeConfig.from_dict(store_cfg["decode"]))
    flow = None
    if any(spec.stream == "temporal" for _, _, _, spec, _ in loaded):
        if len(v.frames) < 2:
            raise ValueError(f"{video}: only {len(v.frames)} frame; the temporal stream needs at least 2")
        tcfg = next(ckpt["meta"]["store"] for _, _, ckpt, spec, _ in loaded if spec.stream == "temporal")
        # Runtime parameters (device, batch size, compile) do not change the flow: use this machine's defaults.
        params = get_method(tcfg["method"]).without_runtime(tcfg["params"])
        flow = video_flow(v.frames, tcfg["method"], params)
        if tcfg["flow_format"] != "float16":  # the stream was trained on quantised flow
            flow = dequantize(quantize(flow, tcfg["bound"], tcfg["mapping"]), tcfg["bound"], tcfg["mapping"])
    source = ArraySource(v.frames, flow)
    per_stream, total = {}, 0.0
    for name, model, ckpt, spec, w in loaded:
        views = eval_views(source, "video", spec, num_clips=num_clips, num_crops=num_crops,
                           bound=float(ckpt["meta"]["store"]["bound"]))
        scores = predict_views(model, views, dev, batch_size=batch_size, amp=ckpt["config"]["amp"])
        scores = unmirror_scores(scores, spec, num_crops).mean(0).numpy()
        per_stream[name] = scores
        total = total + w * scores
    fused = total / sum(w for *_, w in loaded)

    def ranked(s: np.ndarray) -> list[dict]:
        return [{"class": classes[i], "score": float(s[i])} for i in np.argsort(-s)[:top]]

    return {"video": str(video), "top": ranked(fused), "streams": {n: ranked(s) for n, s in per_stream.items()}}
