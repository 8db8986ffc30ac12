"""Spatial augmentation shared by RGB frames and flow, in numpy on (T, H, W, C) arrays.

What TSN (Wang et al. 2016) found to matter for two-stream training:

* multi-scale corner cropping: crop width and height each drawn from {1, .875, .75, .66} of the shorter
  side (at most one scale step apart), placed at a corner, an edge centre or the centre, then resized
  to the network input size;
* horizontal flip, which for flow also negates the x component;
* for testing, 10 crops: four corners and the centre, each also flipped.

Flow vectors are rescaled with the image when a crop is resized (a displacement of d pixels in a crop
resized by s becomes s * d), so the network always sees displacements in its own input pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from .errors import ConfigError

SCALES = (1.0, 0.875, 0.75, 0.66)
# (x, y) positions as fractions of the free space: corners, edge centres, centre (TSN's "more fixed crops").
POSITIONS = [(0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0.5), (0, 0.5), (1, 0.5), (0.5, 0), (0.5, 1),
             (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def resize(clip: np.ndarray, size: int | tuple[int, int], is_flow: bool) -> np.ndarray:
    """(T, h, w, C) -> (T, size, size, C) (size may be (width, height)); flow vectors are scaled along.

    A clip already of that size is returned as it is (not copied).
    """
    w, h = (size, size) if isinstance(size, int) else size
    t, h0, w0, c = clip.shape
    if (h0, w0) == (h, w):
        return clip
    interp = cv2.INTER_AREA if w < w0 else cv2.INTER_LINEAR
    out = np.empty((t, h, w, c), clip.dtype)
    for i in range(t):  # one frame per call, straight from the (possibly cropped) input into the output
        r = cv2.resize(clip[i], (w, h), dst=out[i], interpolation=interp)
        if not np.shares_memory(r, out):  # OpenCV made its own array (e.g. one channel)
            out[i] = r.reshape(h, w, c)
    if is_flow:  # per channel: numpy broadcasting over a last axis of 2 runs ~10x slower
        out[..., 0] *= np.float32(w / w0)
        out[..., 1] *= np.float32(h / h0)
    return out


def flip(clip: np.ndarray, is_flow: bool) -> np.ndarray:
    """Mirror left-right; a mirrored flow field points the other way in x."""
    out = clip[:, :, ::-1].copy()
    if is_flow:
        out[..., 0] *= -1
    return out


def crop(clip: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    return clip[:, y:y + h, x:x + w]


def multiscale_crop_box(height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A random TSN crop box (x, y, w, h)."""
    base = min(height, width)
    sizes = [int(base * s) for s in SCALES]
    pairs = [(cw, ch) for i, cw in enumerate(sizes) for j, ch in enumerate(sizes) if abs(i - j) <= 1]
    cw, ch = pairs[rng.integers(len(pairs))]
    px, py = POSITIONS[rng.integers(len(POSITIONS))]
    return int(round((width - cw) * px)), int(round((height - ch) * py)), cw, ch


def train_augment(clip: np.ndarray, size: int, is_flow: bool, rng: np.random.Generator, *,
                  hflip: bool = True) -> tuple[np.ndarray, bool]:
    """Random multi-scale corner crop, resize to ``size`` x ``size``, and with ``hflip`` a random horizontal flip.

    The clip returned may be a view (a mirrored one when flipped); :func:`normalize_rgb` and :func:`normalize_flow`
    read it as it is, so no copy is made for the flip.

    Returns:
        ((T, size, size, C) clip, whether it was flipped).
    """
    x, y, w, h = multiscale_crop_box(clip.shape[1], clip.shape[2], rng)
    cropped = crop(clip, x, y, w, h)
    out = resize(cropped, size, is_flow)
    if not hflip or rng.random() >= 0.5:
        return out, False
    if is_flow:  # negate x in place where resize made a new array
        out = out.copy() if out is cropped else out
        out[..., 0] *= -1
    return out[:, :, ::-1], True


def eval_crops(clip: np.ndarray, size: int, is_flow: bool, num_crops: int = 10) -> list[np.ndarray]:
    """Test-time views of a clip: 1 (centre), 5 (corners + centre) or 10 (the 5, and each flipped).

    Crops of ``size`` are taken from the clip as stored; a clip smaller than ``size`` is first resized up.
    """
    if num_crops not in (1, 5, 10):
        raise ConfigError(f"num_crops must be 1, 5 or 10, got {num_crops}")
    _, hgt, wid, _ = clip.shape
    if min(hgt, wid) < size:
        scale = size / min(hgt, wid)
        clip = resize(clip, (max(size, round(wid * scale)), max(size, round(hgt * scale))), is_flow)
        _, hgt, wid, _ = clip.shape
    centre = ((wid - size) // 2, (hgt - size) // 2)
    boxes = [centre] if num_crops == 1 else [(0, 0), (wid - size, 0), (0, hgt - size), (wid - size, hgt - size), centre]
    views = [crop(clip, x, y, size, size) for x, y in boxes]
    if num_crops == 10:
        views += [flip(v, is_flow) for v in views]
    return views


def normalize_rgb(clip: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB -> float32 with ImageNet mean and std (what pretrained weights expect), into ``out`` if given
    (any view of the clip's shape whose channels are each contiguous: the caller's input layout)."""
    out = np.empty(clip.shape, np.float32) if out is None else out
    for k in range(clip.shape[3]):  # channel by channel: long inner loops whatever the layouts
        np.subtract(clip[..., k], IMAGENET_MEAN[k], out=out[..., k], dtype=np.float32)
        out[..., k] /= IMAGENET_STD[k]
    return out


def field_means(clip: np.ndarray) -> np.ndarray:
    """(T, H, W, C) -> (T, C) mean of each frame's channels (cv2.mean: numpy's mean over the middle axes of such
    an array is ~50x slower)."""
    if clip.strides[2] < 0:  # a mirrored view: the mirror changes no mean
        clip = clip[:, :, ::-1]
    c = clip.shape[3]
    if c > 4 or clip.strides[2] != c * clip.itemsize or clip.strides[3] != clip.itemsize:
        return clip.mean(axis=(1, 2))
    return np.array([cv2.mean(f)[:c] for f in clip], np.float32)


def normalize_flow(clip: np.ndarray, bound: float, subtract_mean: bool = True,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Flow in pixels -> network input, into ``out`` if given (any view of the clip's shape).

    With ``subtract_mean`` each displacement field (each frame's x and each frame's y) has its spatial mean
    removed: the camera-motion compensation of Simonyan & Zisserman 2014, sec. 3.1. Then divided by ``bound``
    so that values lie roughly in [-1, 1] as in TSN's uint8 flow images.
    """
    mean = field_means(clip) if subtract_mean else np.zeros((clip.shape[0], clip.shape[3]), np.float32)
    out = np.empty(clip.shape, np.float32) if out is None else out
    for k in range(clip.shape[3]):  # channel by channel: long inner loops whatever the layouts
        np.subtract(clip[..., k], mean[:, k, None, None], out=out[..., k], dtype=np.float32)
        out[..., k] /= np.float32(bound)
    return out
