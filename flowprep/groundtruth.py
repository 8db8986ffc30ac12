"""Optical flow with exact ground truth on real textures: short videos of photographs moved by known motions.

Real ground truth for video flow is rare (one real pair, the Middlebury motorcycle, ships with scikit-image).
This module renders short sequences in which every pixel's motion is known, as Baker et al. 2011 ("A database
and evaluation methodology for optical flow", IJCV 92) and Butler et al. 2012 (MPI-Sintel) do with synthetic
scenes, but on real photographs (scikit-image's sample images), so the texture statistics are those of real
images:

* ``translation``: a pan that speeds up;
* ``zoom``: a zoom in about a point off the centre, speeding up;
* ``rotation``: a rotation about a point off the centre, speeding up;
* ``nonrigid``: a smooth, spatially varying deformation (two sine waves) over a slow pan;
* ``object``: a textured disc (another photograph) that moves and turns over a panning background.

Rendering. Each layer (the background, the object) is a photograph ``P`` and a forward map ``F_t`` from the
photograph's coordinates to those of frame ``t``. Frame ``t`` samples ``P`` at ``B_t(x) = F_t^-1(x)`` with
bicubic interpolation (the photograph is area-resized and blurred by a Gaussian of 0.8 px first, so it is
band-limited), and is rounded to uint8.
The flow from frame ``t`` to ``t + 1`` at pixel ``x`` is then exact: ``F_{t+1}(B_t(x)) - x`` (affine maps
are inverted in closed form, the non-rigid one by fixed-point iteration to 1e-6 px).

Conventions are flowprep's (:mod:`flowprep.flow`): ``flow[t, y, x]`` is the displacement of pixel (x, y) of
frame t into frame t+1, channel 0 is x (right), channel 1 is y (down).

Masks (``valid``): a pixel counts in the end-point error only where its ground truth is defined and the
rendering does not blur it:

* borders: its position in frame t+1 lies outside the frame (it leaves the view), or either sample falls
  outside its photograph;
* occlusions: a background pixel whose position in frame t+1 is covered by the object (it disappears);
* object edges: a pixel within 2 px of the disc's edge, in frame t or at its position in frame t+1, where the
  anti-aliased edge mixes the two layers and the flow jumps.

Everything else is valid, including pixels that the object uncovers in frame t+1 (their flow, the
background's, is defined in frame t; disocclusions are a frame t+1 notion).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

SEQUENCES = ("translation", "zoom", "rotation", "nonrigid", "object")
# Pixels this close to the object's edge (in frame t, or at their target in frame t+1) are masked: the
# anti-aliased edge spans one pixel and the bicubic warp reads two more on each side.
EDGE_MARGIN = 2.0
# Gaussian blur (sigma, photo pixels) of the resized photographs, so that bicubic sampling reproduces them.
PHOTO_BLUR = 0.8


@dataclass(frozen=True)
class FlowSequence:
    """A rendered video with its ground-truth flow.

    Attributes:
        name: one of :data:`SEQUENCES`.
        frames: ``(T, H, W)`` uint8 gray frames.
        flow: ``(T-1, H, W, 2)`` float32 flow from frame t to t+1 (flowprep's convention).
        valid: ``(T-1, H, W)`` bool, where the ground truth counts (see the module docstring).
    """

    name: str
    frames: np.ndarray
    flow: np.ndarray
    valid: np.ndarray


# ----------------------------------------------------------------------------------------------
# Motions: forward maps photo -> frame t, and their inverses


class Affine:
    """``F_t(p) = R(angle(t)) * zoom(t) * (p - centre) + centre + shift(t)``, parameters smooth in t."""

    def __init__(self, centre, shift: Callable, angle: Callable = lambda t: 0.0, zoom: Callable = lambda t: 1.0):
        self.centre = np.asarray(centre, np.float64)
        self.shift, self.angle, self.zoom = shift, angle, zoom

    def _matrix(self, t: float) -> np.ndarray:
        a, s = np.deg2rad(self.angle(t)), self.zoom(t)
        return s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    def forward(self, t: float, px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, (cx, cy), (sx, sy) = self._matrix(t), self.centre, self.shift(t)
        dx, dy = px - cx, py - cy
        return m[0, 0] * dx + m[0, 1] * dy + cx + sx, m[1, 0] * dx + m[1, 1] * dy + cy + sy

    def backward(self, t: float, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, (cx, cy), (sx, sy) = np.linalg.inv(self._matrix(t)), self.centre, self.shift(t)
        dx, dy = x - cx - sx, y - cy - sy
        return m[0, 0] * dx + m[0, 1] * dy + cx, m[1, 0] * dx + m[1, 1] * dy + cy


class Waves:
    """``F_t(p) = p + t * (d(p) + drift)``: each photo point moves by ``d(p) + drift`` per frame.

    ``d`` is two sine waves, x displaced along y and y along x; invertible while ``t * |grad d| < 1``.
    """

    def __init__(self, amplitude, wavelength: float, drift, phase=(0.3, 1.1)):
        self.amp, self.k, self.drift, self.phase = amplitude, 2 * np.pi / wavelength, drift, phase

    def _d(self, px, py):
        return (self.amp[0] * np.sin(self.k * py + self.phase[0]) + self.drift[0],
                self.amp[1] * np.sin(self.k * px + self.phase[1]) + self.drift[1])

    def forward(self, t, px, py):
        dx, dy = self._d(px, py)
        return px + t * dx, py + t * dy

    def backward(self, t, x, y):
        assert t * self.k * max(abs(a) for a in self.amp) < 0.9, "the deformation must stay invertible"
        px, py = x.copy(), y.copy()
        for _ in range(200):  # p = x - t d(p), a contraction
            dx, dy = self._d(px, py)
            nx, ny = x - t * dx, y - t * dy
            step = max(np.abs(nx - px).max(), np.abs(ny - py).max())
            px, py = nx, ny
            if step < 1e-6:
                break
        return px, py


# ----------------------------------------------------------------------------------------------
# Rendering


def _photo(name: str, short_side: int) -> np.ndarray:
    """A scikit-image sample photograph, gray float32, area-resized so that its short side is ``short_side``."""
    try:
        import skimage.data
    except ImportError:
        raise RuntimeError("the flow benchmark renders scikit-image's sample photographs: pip install scikit-image "
                           "(it is in this project's test extra)") from None
    img = getattr(skimage.data, name)()
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    scale = short_side / min(img.shape)
    size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
    img = cv2.resize(img.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    # A camera's optics blur too; band-limited, the photo interpolates with errors of about one gray level.
    return cv2.GaussianBlur(img, (0, 0), PHOTO_BLUR)


def _inside(img: np.ndarray, x: np.ndarray, y: np.ndarray, margin: float = 2.0) -> np.ndarray:
    h, w = img.shape
    return (x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return cv2.remap(img, x.astype(np.float32), y.astype(np.float32), cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


@dataclass
class _Layer:
    photo: np.ndarray
    motion: object
    disc: tuple[float, float, float] | None = None  # (cx, cy, radius) in photo coordinates: the object's shape

    def edge_distance(self, px, py):
        """Signed distance to the disc's edge in photo pixels, negative inside."""
        cx, cy, r = self.disc
        return np.hypot(px - cx, py - cy) - r


def _render(layers: list[_Layer], size: tuple[int, int], num_frames: int):
    """Frames, flow and valid mask of ``layers`` (background first, at most one object over it)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    frames, flows, valids = [], [], []
    bg = layers[0]
    obj = layers[1] if len(layers) > 1 else None
    for t in range(num_frames):
        px, py = bg.motion.backward(t, xs, ys)
        img = _sample(bg.photo, px, py)
        nx, ny = bg.motion.forward(t + 1, px, py)  # where each background point of frame t is in frame t+1
        ok = _inside(bg.photo, px, py)
        if obj is not None:
            qx, qy = obj.motion.backward(t, xs, ys)
            dist = obj.edge_distance(qx, qy)
            alpha = np.clip(0.5 - dist, 0.0, 1.0)  # one-pixel anti-aliased edge
            img = alpha * _sample(obj.photo, qx, qy) + (1 - alpha) * img
            ox, oy = obj.motion.forward(t + 1, qx, qy)
            on_obj = dist < 0
            nx, ny = np.where(on_obj, ox, nx), np.where(on_obj, oy, ny)
            # The target's distance to the edge in frame t+1, for background pixels; object points keep theirs.
            tx, ty = obj.motion.backward(t + 1, nx, ny)
            target_dist = obj.edge_distance(tx, ty)
            ok &= np.abs(dist) > EDGE_MARGIN
            ok &= on_obj | (target_dist > EDGE_MARGIN)  # occluded in frame t+1 (or at its edge)
            ok &= ~on_obj | _inside(obj.photo, qx, qy)
        frames.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
        if t == num_frames - 1:
            break
        fx, fy = nx - xs, ny - ys
        ok &= (nx >= 0) & (nx <= w - 1) & (ny >= 0) & (ny <= h - 1)  # leaves the view
        # The background's source in frame t+1 must lie in its photo too.
        bx, by = bg.motion.backward(t + 1, nx, ny)
        ok &= _inside(bg.photo, bx, by)
        flows.append(np.stack([fx, fy], axis=-1).astype(np.float32))
        valids.append(ok)
    return np.stack(frames), np.stack(flows), np.stack(valids)


def make_sequence(name: str, size: tuple[int, int] = (256, 192), num_frames: int = 5) -> FlowSequence:
    """Render one benchmark sequence.

    Args:
        name: one of :data:`SEQUENCES`.
        size: ``(width, height)`` of the frames; motions scale with the width (sized for 256: a few pixels per
            frame, up to ~12 px for the object).
        num_frames: frames T (T-1 pairs), at least 2 and at most 8 (the motions are sized for short clips).

    Returns:
        A :class:`FlowSequence`; the same arguments give the same arrays.
    """
    if name not in SEQUENCES:
        raise ValueError(f"unknown sequence {name!r}; choose one of {', '.join(SEQUENCES)}")
    if not 2 <= num_frames <= 8:
        raise ValueError(f"num_frames must be in 2..8, got {num_frames}")
    w, h = size
    if w < 16 or h < 16:
        raise ValueError(f"frames must be at least 16x16, got {w}x{h}")
    s = w / 256.0  # motion scale
    short = 2 * max(h, round(w * 0.75))  # the photo's short side: room for the motion around the frame

    def centred(photo, frac=(0.5, 0.5)):
        """Photo point at the frame's centre, for a photo centred under the frame (shift of the motion)."""
        ph, pw = photo.shape
        return (w / 2 - pw * frac[0], h / 2 - ph * frac[1])

    def moving(off, v, a):
        return lambda t: (off[0] + s * (v[0] * t + 0.5 * a[0] * t * t), off[1] + s * (v[1] * t + 0.5 * a[1] * t * t))

    if name == "translation":
        photo = _photo("astronaut", short)
        layers = [_Layer(photo, Affine((0, 0), moving(centred(photo), (5.0, -2.0), (0.5, 0.3))))]
    elif name == "zoom":
        photo = _photo("coffee", short)
        c = np.array(photo.shape[::-1]) * (0.46, 0.55)
        off = centred(photo)
        layers = [_Layer(photo, Affine(c, lambda t: off, zoom=lambda t: np.exp(0.025 * t + 0.002 * t * t)))]
    elif name == "rotation":
        photo = _photo("camera", short)
        c = np.array(photo.shape[::-1]) * (0.52, 0.45)
        off = centred(photo)
        layers = [_Layer(photo, Affine(c, lambda t: off, angle=lambda t: 1.2 * t + 0.1 * t * t))]
    elif name == "nonrigid":
        photo = _photo("immunohistochemistry", short)
        off = centred(photo)

        class _Shifted(Waves):  # the photo placed under the frame, then deformed in frame coordinates
            def forward(self, t, px, py):
                return super().forward(t, px + off[0], py + off[1])

            def backward(self, t, x, y):
                px, py = super().backward(t, x, y)
                return px - off[0], py - off[1]

        layers = [_Layer(photo, _Shifted((3.0 * s, 2.5 * s), 160.0 * s, (1.0 * s, 0.5 * s)))]
    else:  # object
        photo = _photo("grass", short)
        layers = [_Layer(photo, Affine((0, 0), moving(centred(photo), (1.5, 0.5), (0.0, 0.0))))]
        cat = _photo("chelsea", short)
        r = 0.22 * h
        cx, cy = cat.shape[1] * 0.45, cat.shape[0] * 0.4  # the cat's face
        start = (0.25 * w - cx, 0.45 * h - cy)
        obj_motion = Affine((cx, cy), moving(start, (8.0, 2.0), (0.6, -0.4)), angle=lambda t: 2.0 * t)
        layers.append(_Layer(cat, obj_motion, disc=(cx, cy, r)))
    frames, flow, valid = _render(layers, size, num_frames)
    return FlowSequence(name, frames, flow, valid)


def benchmark_sequences(size: tuple[int, int] = (256, 192), num_frames: int = 5,
                        names: tuple[str, ...] = SEQUENCES) -> list[FlowSequence]:
    """Every sequence of the benchmark (see :func:`make_sequence`)."""
    return [make_sequence(n, size, num_frames) for n in names]


def endpoint_error(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """Mean end-point error (px) of ``flow`` against ``gt`` (both ``(..., H, W, 2)``) over ``valid`` pixels."""
    if flow.shape != gt.shape or gt.shape[:-1] != valid.shape:
        raise ValueError(f"flow {flow.shape}, ground truth {gt.shape} and mask {valid.shape} do not match")
    return float(np.hypot(flow[..., 0] - gt[..., 0], flow[..., 1] - gt[..., 1])[valid].mean())


def middlebury_motorcycle(scale: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The Middlebury 2014 "motorcycle" stereo pair (Scharstein et al. 2014) as a flow pair with ground truth.

    A rectified stereo pair: from the left to the right image a scene point moves by ``-disparity`` in x and
    not at all in y. Frames are area-resized by ``1/scale`` (185x125 at 4) and converted to gray (BT.601);
    disparities are resized with nearest neighbours (averaging would mix foreground and background at
    occlusion edges) and divided by ``scale``.

    Returns:
        ``(left, right, gt, valid)``: ``(H, W)`` uint8 gray frames, ``(H, W, 2)`` float32 flow and ``(H, W)``
        bool where the disparity is known.
    """
    try:
        import skimage.data
    except ImportError:
        raise RuntimeError("the Middlebury pair ships with scikit-image: pip install scikit-image") from None
    left, right, disp = skimage.data.stereo_motorcycle()
    size = (round(left.shape[1] / scale), round(left.shape[0] / scale))

    def gray(im):
        return cv2.resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)

    disp = cv2.resize(disp, size, interpolation=cv2.INTER_NEAREST) / float(scale)
    valid = np.isfinite(disp)
    gt = np.stack([-np.where(valid, disp, 0), np.zeros_like(disp)], axis=-1).astype(np.float32)
    return gray(left), gray(right), gt, valid
