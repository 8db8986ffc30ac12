"""Colour-coded flow images and the ``flowprep show`` contact sheet.

The colour coding is the standard flow colour wheel of Baker et al. 2011 ("A database and evaluation
methodology for optical flow", Middlebury): hue gives the direction, saturation the magnitude.
"""
from __future__ import annotations

import cv2
import numpy as np


def color_wheel() -> np.ndarray:
    """(55, 3) uint8 RGB colours around the wheel: red, yellow, green, cyan, blue, magenta and back."""
    # Segment lengths chosen in the Middlebury code so perceptually similar hues get fewer steps.
    segments = [(15, (255, 0, 0), (255, 255, 0)), (6, (255, 255, 0), (0, 255, 0)), (4, (0, 255, 0), (0, 255, 255)),
                (11, (0, 255, 255), (0, 0, 255)), (13, (0, 0, 255), (255, 0, 255)), (6, (255, 0, 255), (255, 0, 0))]
    rows = []
    for n, a, b in segments:
        t = np.arange(n)[:, None] / n
        rows.append(np.asarray(a) * (1 - t) + np.asarray(b) * t)
    return np.floor(np.concatenate(rows)).astype(np.uint8)


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(H, W, 2) flow -> (H, W, 3) uint8 RGB. ``max_magnitude`` maps to full saturation (default: the max here)."""
    u, v = flow[..., 0].astype(np.float64), flow[..., 1].astype(np.float64)
    mag = np.hypot(u, v)
    scale = max_magnitude if max_magnitude else max(float(mag.max()), 1e-9)
    rad = np.clip(mag / scale, 0, 1)
    wheel = color_wheel().astype(np.float64) / 255.0
    n = len(wheel)
    angle = np.arctan2(-v, -u) / np.pi  # in [-1, 1]
    pos = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(pos).astype(int)
    k1 = (k0 + 1) % n
    f = (pos - k0)[..., None]
    col = (1 - f) * wheel[k0] + f * wheel[k1]
    col = 1 - rad[..., None] * (1 - col)  # white at zero flow, full colour at max_magnitude
    return np.floor(255 * col).astype(np.uint8)


def contact_sheet(frames: np.ndarray, flows: np.ndarray, max_magnitude: float | None = None,
                  labels: list[str] | None = None) -> np.ndarray:
    """K RGB frames (K, H, W, 3) above their K colour-coded flows (K, H, W, 2) -> one RGB image."""
    mm = max_magnitude or max(float(np.hypot(flows[..., 0], flows[..., 1]).max()), 1e-9)
    top = np.concatenate(list(frames), axis=1)
    bottom = np.concatenate([flow_to_color(f, mm) for f in flows], axis=1)
    sheet = np.concatenate([top, bottom], axis=0)
    if labels:
        w = frames.shape[2]
        for i, text in enumerate(labels):
            cv2.putText(sheet, text, (i * w + 3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return sheet
