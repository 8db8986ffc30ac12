"""Generate the small rendered demo dataset: six classes that only a two-stream model tells apart.

The two-stream idea (Simonyan & Zisserman 2014, "Two-stream convolutional networks for action
recognition in videos") is that appearance, seen by a spatial network in one RGB frame, and motion,
seen by a temporal network in a stack of optical-flow frames, are complementary. This dataset is built
so that each cue alone is provably insufficient:

* classes = {Red, Blue} x {Up, Down, Sideways}, e.g. ``RedUp``, ``BlueSideways``;
* the two colours have the same luma (BT.601, ``0.299 R + 0.587 G + 0.114 B``, which is what
  ``cv2.COLOR_RGB2GRAY`` computes) and differ only in chroma. Optical flow is computed on grey frames,
  so the temporal stream receives the same input distribution for ``RedX`` and ``BlueX``;
* the object's position is uniform on a torus (it wraps around the frame edges) and no rendering
  detail depends on the direction, so one frame of ``RedUp`` is distributed exactly like one
  frame of ``RedDown``: the spatial stream cannot tell motions apart;
* averaging the two streams' class scores (late fusion) separates all six;
* every default class is closed under a horizontal flip (``Sideways`` moves left or right at random), because
  two-stream training flips frames and flow stacks horizontally (negating flow-x) as augmentation:
  with separate ``Left`` and ``Right`` classes a flip would turn a sample into the other class. Those two
  motions exist (``--motions Left,Right,Up,Down``) to show exactly that, and what ``twostream train --no-flip``
  or ``--flip-map`` do about it (``data/run_flip_demo.sh``).

Every video is a textured disc moving at a constant random speed over a static textured grey
background, with a little per-frame noise. The disc's texture moves with it and the background is
textured, so flow has something to track both on and off the object.

Run ``python data/make_demo.py OUT`` (``--help`` lists the options). The layout under ``OUT`` follows
UCF101 (see ``data/README.md``)::

    OUT/<Class>/v_<Class>_g<GG>_c<CC>.avi
    OUT/ucfTrainTestlist/{classInd.txt, trainlist01.txt, testlist01.txt}
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import cv2
import numpy as np

# Nominal colours, RGB. Their lumas are 107.73 and 108.19 (equal within 1 level); rendering uses only their
# chroma, i.e. the colour minus its luma on every channel, added to a grey (luma) image that both colours
# share. So the rendered grey frames do not depend on the colour at all, before uint8 rounding.
COLOURS: dict[str, tuple[int, int, int]] = {"Red": (200, 70, 60), "Blue": (50, 120, 200)}
# Each motion's possible unit displacements per frame in image coordinates (x right, y down); a video
# takes one at random. Every set is closed under a horizontal flip (x -> -x), see the module docstring.
MOTIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "Up": ((0, -1),),
    "Down": ((0, 1),),
    "Sideways": ((1, 0), (-1, 0)),
    "Left": ((-1, 0),),  # not flip-closed: a mirrored Left video is a Right one
    "Right": ((1, 0),),
}
DEFAULT_MOTIONS = ("Up", "Down", "Sideways")
FPS = 25.0
FOURCC = "MJPG"

_LUMA = np.array([0.299, 0.587, 0.114])  # BT.601, the weights of cv2.COLOR_RGB2GRAY
_OBJECT_LUMA = 108.0  # mean luma of the disc; with +-35 % texture it spans 70..146
_TEXTURE_CONTRAST = 0.35
# Chroma (<= 92 per channel) plus the disc's luma stays within [12, 238]: no channel clips in rendering,
# and a JPEG decoder's YCbCr -> RGB is unlikely to clip, which would break the equal-luma property.
_BACKGROUND_RANGE = (75.0, 175.0)
_SPEED_RANGE = (1.0, 3.0)  # pixels per frame
_RADIUS_RANGE = (0.14, 0.22)  # fraction of the shorter side
_TEXTURE_FREQ = (0.07, 0.2)  # cycles per pixel
_NOISE_SIGMA = 2.0  # grey levels, the same on the three channels (a luma noise)
_CLIPS_PER_GROUP = 4


def class_names(motions=DEFAULT_MOTIONS, colours=tuple(COLOURS)) -> list[str]:
    """The class names in sorted order (the order of ``classInd.txt``, labels 1..N); by default the six of
    {Red, Blue} x {Up, Down, Sideways}."""
    for m in motions:
        if m not in MOTIONS:
            raise ValueError(f"unknown motion {m!r}; known: {', '.join(MOTIONS)}")
    for c in colours:
        if c not in COLOURS:
            raise ValueError(f"unknown colour {c!r}; known: {', '.join(COLOURS)}")
    return sorted(c + m for c in colours for m in motions)


def _split_class(name: str) -> tuple[str, str]:
    for c in COLOURS:
        if name.startswith(c) and name[len(c):] in MOTIONS:
            return c, name[len(c):]
    raise ValueError(f"unknown demo class {name!r}; known: {', '.join(class_names(tuple(MOTIONS)))}")


def _chroma(colour: str) -> np.ndarray:
    rgb = np.asarray(COLOURS[colour], np.float64)
    return rgb - rgb @ _LUMA  # (3,), zero luma by construction


def _texture(rng: np.random.Generator, shape: tuple[int, ...], ux: np.ndarray, uy: np.ndarray,
             n: int = 4) -> np.ndarray:
    """A random isotropic texture in [-1, 1]: a sum of ``n`` plane waves with random orientation and phase,
    evaluated at continuous coordinates (ux, uy), so that it can be sampled at sub-pixel positions."""
    theta = rng.uniform(0.0, 2 * np.pi, n)
    freq = rng.uniform(*_TEXTURE_FREQ, n)
    phase = rng.uniform(0.0, 2 * np.pi, n)
    amp = rng.uniform(0.5, 1.0, n)
    out = np.zeros(shape)
    for k in range(n):
        kx, ky = 2 * np.pi * freq[k] * np.cos(theta[k]), 2 * np.pi * freq[k] * np.sin(theta[k])
        out += amp[k] * np.cos(kx * ux + ky * uy + phase[k])
    return out / amp.sum()


def render_video(rng: np.random.Generator, colour: str, motion: str, *, num_frames: int = 32,
                 size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """Render one demo video.

    Everything random (background, disc size, texture, speed, direction, start position, noise) is drawn
    from ``rng`` in an order that does not depend on ``colour``, so the same generator state with the two
    colours gives the same grey video.

    Args:
        rng: the video's random generator.
        colour: a key of :data:`COLOURS`.
        motion: a key of :data:`MOTIONS`.
        num_frames: T.
        size: (width, height).

    Returns:
        (T, H, W, 3) uint8 RGB frames.
    """
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; known: {', '.join(COLOURS)}")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; known: {', '.join(MOTIONS)}")
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each

    # Static background: smooth blobs plus a finer texture, rescaled to a mid-grey range.
    coarse = rng.uniform(0.0, 1.0, (max(2, height // 8), max(2, width // 8)))
    blobs = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    background = 0.6 * (blobs - blobs.mean()) / (blobs.std() + 1e-9) + 0.4 * _texture(rng, (height, width), xx, yy)
    lo, hi = _BACKGROUND_RANGE
    background = np.clip((lo + hi) / 2 + background * (hi - lo) / 4, lo, hi)  # (H, W)

    radius = rng.uniform(*_RADIUS_RANGE) * min(width, height)
    speed = rng.uniform(*_SPEED_RANGE)
    start = rng.uniform((0.0, 0.0), (width, height))
    t = np.arange(num_frames, dtype=np.float64)[:, None, None]  # (T, 1, 1)
    dx, dy = MOTIONS[motion][rng.integers(len(MOTIONS[motion]))]
    cx = start[0] + speed * dx * t
    cy = start[1] + speed * dy * t
    # Offsets from the disc centre on the torus, each in [-W/2, W/2) x [-H/2, H/2): the disc wraps around
    # the frame edges, so its position in any one frame is uniform whatever the direction.
    ux = np.mod(xx - cx + width / 2, width) - width / 2  # (T, H, W)
    uy = np.mod(yy - cy + height / 2, height) - height / 2
    alpha = np.clip(radius + 0.5 - np.hypot(ux, uy), 0.0, 1.0)  # anti-aliased disc edge
    # The texture lives in the disc's own coordinates, so it moves with the disc; its mean is ~0, so it
    # modulates brightness symmetrically around _OBJECT_LUMA.
    disc_luma = _OBJECT_LUMA * (1 + _TEXTURE_CONTRAST * _texture(rng, ux.shape, ux, uy))
    luma = (1 - alpha) * background + alpha * disc_luma  # (T, H, W)
    luma = luma + rng.normal(0.0, _NOISE_SIGMA, luma.shape)
    rgb = luma[..., None] + alpha[..., None] * _chroma(colour)  # (T, H, W, 3)
    return np.clip(_round_keeping_luma(rgb), 0, 255).astype(np.uint8)


def _round_keeping_luma(rgb: np.ndarray) -> np.ndarray:
    """Round (..., 3) float RGB to integers whose luma is within 0.06 of the integer nearest the float luma.

    Plain rounding leaves each pixel's luma up to 0.5 off, differently for the two colours; a JPEG encoder
    then rounds luma to an integer, so the Y planes of the two colour versions would differ by 1 in many
    pixels, and the difference grows through DCT quantisation (measured: 1.0 grey level on the disc after
    MJPEG, against 0.2 with this rounding). Moving G then B by a few levels changes the hue imperceptibly.
    """
    target = np.rint(rgb @ _LUMA)
    out = np.rint(rgb + (target - rgb @ _LUMA)[..., None])  # a shift of all channels moves luma by the same
    err = out @ _LUMA - target  # in [-0.5, 0.5]
    d_green = -np.rint(err / _LUMA[1])
    err = err + d_green * _LUMA[1]  # in [-0.29, 0.29]
    d_blue = -np.rint(err / _LUMA[2])  # leaves |err| <= 0.057
    out[..., 1] += d_green
    out[..., 2] += d_blue
    return out


def write_video(path, frames: np.ndarray, fps: float = FPS) -> None:
    """Write (T, H, W, 3) uint8 RGB ``frames`` as MJPG in an AVI with ``cv2.VideoWriter``, then read the
    file back with ``cv2.VideoCapture`` and check its frame count and size.

    Raises:
        RuntimeError: OpenCV cannot write MJPG, or the file does not read back as written.
    """
    path = os.fspath(path)
    num_frames, height, width = frames.shape[:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*FOURCC), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot open a {FOURCC} video writer "
                           "(is the folder writable? does this OpenCV build have an MJPG encoder?)")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))  # OpenCV wants BGR
    finally:
        writer.release()
    cap = cv2.VideoCapture(path)
    n = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if bgr.shape != (height, width, 3):
                raise RuntimeError(f"{path}: frame {n} reads back as {bgr.shape}, expected {(height, width, 3)}")
            n += 1
    finally:
        cap.release()
    if n != num_frames:
        raise RuntimeError(f"{path}: {n} frames read back, {num_frames} written")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 64x64; got {text!r}") from None
    return w, h


def _groups(videos_per_class: int) -> tuple[int, int]:
    """(clips per group, number of test groups). Four clips per group as in UCF101 when there are at least
    two groups of four, fewer otherwise; about a quarter of the groups, at least one, are for testing."""
    clips = _CLIPS_PER_GROUP if videos_per_class >= 2 * _CLIPS_PER_GROUP else max(1, videos_per_class // 2)
    groups = math.ceil(videos_per_class / clips)
    return clips, min(groups - 1, max(1, round(groups / 4)))


def make_demo(out_dir, *, videos_per_class: int = 16, num_frames: int = 32, size: tuple[int, int] = (64, 64),
              seed: int = 0, motions=DEFAULT_MOTIONS, colours=tuple(COLOURS)) -> Path:
    """Render the demo dataset under ``out_dir`` in the UCF101 layout.

    Video ``i`` of class ``c`` (index in :func:`class_names`) is rendered from
    ``np.random.default_rng([seed, c, i])``, so the same arguments give byte-identical files. Existing
    files of the same names are overwritten; nothing else under ``out_dir`` is touched.

    Args:
        out_dir: dataset root to create.
        videos_per_class: clips per class (at least 2: groups of up to 4 clips, the last ~1/4 of groups test).
        num_frames: frames per video (at least 2; the two-stream temporal input of L flow frames needs L + 1).
        size: (width, height) of the frames, each at least 16.
        seed: non-negative base seed.
        motions, colours: the classes are colours x motions (default: the six of the module docstring).

    Returns:
        ``out_dir`` as a :class:`pathlib.Path`.
    """
    if videos_per_class < 2:
        raise ValueError(f"videos_per_class must be at least 2 (one train and one test group), got {videos_per_class}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 to have any optical flow, got {num_frames}")
    if len(size) != 2 or min(size) < 16:
        raise ValueError(f"size must be (width, height) of at least 16 pixels each, got {size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out = Path(out_dir)
    size = (int(size[0]), int(size[1]))
    clips, test_groups = _groups(videos_per_class)
    first_test_group = math.ceil(videos_per_class / clips) - test_groups + 1
    classes = class_names(motions, colours)
    train, test = [], []
    for label, name in enumerate(classes, start=1):
        colour, motion = _split_class(name)
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(videos_per_class):
            group, clip = i // clips + 1, i % clips + 1
            rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
            rng = np.random.default_rng([seed, label - 1, i])
            write_video(out / rel, render_video(rng, colour, motion, num_frames=num_frames, size=size))
            if group >= first_test_group:
                test.append(rel)
            else:
                train.append(f"{rel} {label}")
    lists = out / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    (lists / "classInd.txt").write_text("".join(f"{k} {c}\n" for k, c in enumerate(classes, start=1)))
    (lists / "trainlist01.txt").write_text("".join(line + "\n" for line in train))
    (lists / "testlist01.txt").write_text("".join(line + "\n" for line in test))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_demo.py",
        description="Render the two-stream demo dataset (UCF101 layout): 2 equal-luma colours x 3 motions.")
    parser.add_argument("out", type=Path, help="dataset root to write")
    parser.add_argument("--videos-per-class", type=int, default=16, metavar="N", help="default: 16")
    parser.add_argument("--frames", type=int, default=32, metavar="T", help="frames per video (default: 32)")
    parser.add_argument("--size", type=_parse_size, default=(64, 64), metavar="WxH", help="default: 64x64")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="default: 0")
    parser.add_argument("--motions", default=",".join(DEFAULT_MOTIONS), metavar="M,M,...",
                        help=f"motions among {', '.join(MOTIONS)} (default: {','.join(DEFAULT_MOTIONS)}); Left and "
                        "Right are not closed under a horizontal flip")
    parser.add_argument("--colours", default=",".join(COLOURS), metavar="C,C,...",
                        help=f"colours among {', '.join(COLOURS)} (default: both)")
    args = parser.parse_args(argv)
    try:
        out = make_demo(args.out, videos_per_class=args.videos_per_class, num_frames=args.frames,
                        size=args.size, seed=args.seed, motions=tuple(args.motions.split(",")),
                        colours=tuple(args.colours.split(",")))
    except ValueError as e:
        parser.error(str(e))
    lists = out / "ucfTrainTestlist"
    n_train = len((lists / "trainlist01.txt").read_text().splitlines())
    n_test = len((lists / "testlist01.txt").read_text().splitlines())
    w, h = args.size
    n_classes = len(class_names(tuple(args.motions.split(",")), tuple(args.colours.split(","))))
    print(f"wrote {n_train + n_test} videos ({n_classes} classes x {args.videos_per_class}, "
          f"{args.frames} frames {w}x{h} MJPG @ {FPS:g} fps) to {out}: split 01 = {n_train} train / {n_test} test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
