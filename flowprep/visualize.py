"""Colour-coded flow images, their colour key, and the ``flowprep show`` contact sheet and animation.

The colour coding is the standard flow colour wheel of Baker et al. 2011 ("A database and evaluation
methodology for optical flow", Middlebury): hue gives the direction, saturation the magnitude.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError

# Tiles of a contact sheet are enlarged by an integer factor until their short side reaches this many pixels:
# a 64-pixel store gives 192-pixel tiles, on which the frame numbers and the flow's structure can be read.
READABLE_SIDE = 160


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


def flow_key(size: int, background: int = 255) -> np.ndarray:
    """The colour key: a (size, size, 3) uint8 RGB disc coloured by ``flow_to_color`` itself.

    The pixel at offset (dx, dy) from the centre (image axes: x right, y down) shows the colour of the flow
    vector (dx, dy) / radius, in units of the full-colour magnitude: the rim is full colour, the centre white
    (still), the right edge the colour of rightward motion, the top edge that of upward motion.
    """
    if size < 3:
        raise ValueError(f"the colour key needs at least 3 pixels, got {size}")
    c = (size - 1) / 2
    radius = c
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([(xs - c) / radius, (ys - c) / radius], axis=-1)
    key = flow_to_color(flow, max_magnitude=1.0)
    key[np.hypot(flow[..., 0], flow[..., 1]) > 1.0] = background
    return key


def key_point(size: int, dx: float, dy: float) -> tuple[int, int]:
    """(row, col) of the pixel of a ``flow_key(size)`` that shows the flow (dx, dy), |(dx, dy)| <= 1."""
    c = (size - 1) / 2
    return int(round(c + dy * c)), int(round(c + dx * c))


def default_scale(height: int, width: int, min_side: int = READABLE_SIDE) -> int:
    """The integer enlargement that brings a tile's short side to at least ``min_side`` pixels (1 if it is already)."""
    return max(1, math.ceil(min_side / max(1, min(height, width))))


def _put_label(img: np.ndarray, text: str, origin: tuple[int, int], font_scale: float) -> None:
    """White text with a dark outline, readable on any frame or flow colour."""
    thick = max(1, round(font_scale * 2))
    cv2.putText(img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, origin, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), thick, cv2.LINE_AA)


def _enlarge(img: np.ndarray, scale: float) -> np.ndarray:
    if scale == 1:
        return img
    h, w = img.shape[:2]
    # Nearest neighbour: every stored pixel stays one visible block, nothing is invented between them.
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_NEAREST)


def key_panel(height: int, max_magnitude: float) -> np.ndarray:
    """A (2 * height, height, 3) column: the key's legend above the colour-key disc of side ``height``."""
    panel = np.full((2 * height, height, 3), 255, np.uint8)
    fs = max(0.3, height / 420)
    step = max(10, round(height / 7))
    for i, line in enumerate(["flow key", "centre: still", "rim: full colour", f"= {max_magnitude:.3g} px",
                              "right: red", "up: violet"]):
        cv2.putText(panel, line, (4, step * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 1, cv2.LINE_AA)
    panel[height:] = flow_key(height)
    return panel


def contact_sheet(frames: np.ndarray, flows: np.ndarray, max_magnitude: float | None = None,
                  labels: list[str] | None = None, *, flow_labels: list[str] | None = None, scale: float = 1,
                  key: bool = True) -> np.ndarray:
    """K RGB frames (K, H, W, 3) above their K colour-coded flows (K, H, W, 2) -> one RGB image.

    Args:
        max_magnitude: flow magnitude (pixels) shown at full colour; default the largest in ``flows``.
        labels: text written on each frame tile (e.g. its frame number); ``flow_labels`` on each flow tile.
        scale: tiles are enlarged by this factor (nearest neighbour); see ``default_scale``.
        key: add a column at the right with the colour key (``key_panel``), the disc drawn at the tile height,
            its rim at ``max_magnitude``.

    Returns:
        (2 * H', K * W' + (H' if key else 0), 3) uint8 with H', W' the enlarged tile size.
    """
    if len(frames) != len(flows) or len(frames) == 0:
        raise ValueError(f"contact_sheet needs as many flows as frames (at least one), got {len(frames)} and {len(flows)}")
    mm = max_magnitude or max(float(np.hypot(flows[..., 0], flows[..., 1]).max()), 1e-9)
    tiles = [_enlarge(f, scale) for f in frames]
    colours = [_enlarge(flow_to_color(f, mm), scale) for f in flows]
    h, w = tiles[0].shape[:2]
    fs = max(0.35, h / 320)
    for row, texts in ((tiles, labels), (colours, flow_labels)):
        for tile, text in zip(row, texts or []):
            _put_label(tile, text, (3, 3 + round(fs * 25)), fs)
    sheet = np.concatenate([np.concatenate(tiles, axis=1), np.concatenate(colours, axis=1)], axis=0)
    if key:
        sheet = np.concatenate([sheet, key_panel(h, mm)], axis=1)
    return sheet


def animation_frames(frames: np.ndarray, flows: np.ndarray, max_magnitude: float | None = None, *,
                     frame_numbers: list[int] | None = None, scale: float = 1) -> list[np.ndarray]:
    """One RGB image per flow frame i: frame i beside its colour-coded flow and the colour-key disc.

    ``frames`` (K, H, W, 3) and ``flows`` (K, H, W, 2); all images share one ``max_magnitude`` (default: the
    largest in ``flows``) so colours compare across the animation.
    """
    mm = max_magnitude or max(float(np.hypot(flows[..., 0], flows[..., 1]).max()), 1e-9)
    numbers = frame_numbers if frame_numbers is not None else list(range(len(flows)))
    out = []
    for frame, flow, t in zip(frames, flows, numbers):
        tile, colour = _enlarge(frame, scale), _enlarge(flow_to_color(flow, mm), scale)
        h = tile.shape[0]
        fs = max(0.35, h / 320)
        _put_label(tile, f"frame {t}", (3, 3 + round(fs * 25)), fs)
        _put_label(colour, f"flow {t}>{t + 1}", (3, 3 + round(fs * 25)), fs)
        disc = np.full((h, h, 3), 255, np.uint8)
        d = max(3, 3 * h // 4)
        disc[(h - d) // 2:(h - d) // 2 + d, (h - d) // 2:(h - d) // 2 + d] = flow_key(d)
        out.append(np.concatenate([tile, colour, disc], axis=1))
    return out


def write_animation(images: list[np.ndarray], path, fps: float = 5.0) -> None:
    """Write RGB images as an animated GIF (Pillow) or an MP4 / AVI video (OpenCV), by the file's suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        pics = [Image.fromarray(im) for im in images]
        try:
            pics[0].save(path, save_all=True, append_images=pics[1:], duration=round(1000 / fps), loop=0)
        except OSError as e:
            raise OSError(f"{path}: could not write the animation ({e})") from None
        return
    codecs = {".mp4": "mp4v", ".avi": "MJPG"}
    if suffix not in codecs:
        raise ConfigError(f"{path}: an animation is written as .gif, .mp4 or .avi, not {suffix or 'no suffix'}")
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codecs[suffix]), fps, (w, h))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV could not open a {suffix} writer here (is the directory there?)")
    for im in images:
        writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    writer.release()
