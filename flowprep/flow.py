"""Dense optical flow methods: the lookup of the registry, the OpenCV methods, and flow of a pair or a video.

Every method maps a batch of grayscale frame pairs to flow, ``fn(prev, nxt, **params)``: (B, H, W) uint8 pairs ->
(B, H, W, 2) float32, channel 0 = x (right), 1 = y (down) (the contract is in :mod:`flowprep.registry`).
CPU methods loop over the batch; a method that solves batches on a device (``tvl1-torch``) says so in its
registry entry, and the batched pipeline (:mod:`flowprep.batched`) drives it. A new method plugs in with
:func:`register_method` and nothing else changes: the CLI's ``--method`` choices, ``flowprep methods``, the
store's settings and the batched pipeline all read the registry.

Methods:
  * ``tvl1``: Zach, Pock & Bischof 2007, "A duality based approach for realtime TV-L1 optical flow",
    as implemented by OpenCV contrib (``cv2.optflow.DualTVL1OpticalFlow``), with OpenCV's defaults.
  * ``farneback``: Farneback 2003, "Two-frame motion estimation based on polynomial expansion".
  * ``dis``: Kroeger et al. 2016, "Fast optical flow using dense inverse search" (preset medium).
"""
from __future__ import annotations

import importlib

import cv2
import numpy as np

from .errors import ConfigError
from .registry import METHODS, DeviceSolver, FlowMethod, check_pairs, register_method  # noqa: F401 (the API)
from .tvl1 import TVL1_DEFAULTS


# Methods defined in other modules, imported on first use so that e.g. torch is only loaded when needed;
# each registers itself with :func:`flowprep.registry.register_method` when imported.
_LAZY_METHODS = {"tvl1-torch": "flowprep.tvl1_torch"}


def method_names() -> list[str]:
    return sorted(set(METHODS) | set(_LAZY_METHODS))


def get_method(name: str) -> FlowMethod:
    """Look up a flow method by name; raises ``ValueError`` listing the known names."""
    if name not in METHODS and name in _LAZY_METHODS:
        importlib.import_module(_LAZY_METHODS[name])
    if name not in METHODS:
        raise ConfigError(f"unknown flow method {name!r}; choose one of {', '.join(method_names())}")
    return METHODS[name]


def resolve_params(name: str, overrides: dict | None = None) -> dict:
    """The method's defaults updated by ``overrides``; unknown keys raise ``ValueError``."""
    method = get_method(name)
    params = dict(method.defaults)
    for key, value in (overrides or {}).items():
        if key not in params:
            raise ConfigError(
                f"flow method {name!r} has no parameter {key!r}; it takes {', '.join(sorted(params))}"
            )
        params[key] = _convert(value, params[key], name, key)
    if method.validate is not None:
        method.validate(params)
    return params


def _convert(value, default, method: str, key: str):
    """A parameter value (often a string from the command line) in the type of its default."""
    if default is None or not isinstance(value, str):
        return value
    if isinstance(default, bool):
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"flow method {method!r}: parameter {key!r} takes true or false, got {value!r}")
    try:
        return type(default)(value)
    except ValueError:
        raise ConfigError(f"flow method {method!r}: parameter {key!r} takes a {type(default).__name__} value, got {value!r}") from None


def _loop(solver_factory, prev, nxt) -> np.ndarray:
    check_pairs(prev, nxt)
    solver = solver_factory()
    out = np.empty(prev.shape + (2,), np.float32)
    for i in range(prev.shape[0]):
        out[i] = solver.calc(prev[i], nxt[i], None)
    return out


@register_method("tvl1", TVL1_DEFAULTS, "OpenCV contrib DualTVL1 (Zach et al. 2007), OpenCV defaults")
def tvl1_pairs(prev: np.ndarray, nxt: np.ndarray, **p) -> np.ndarray:
    if not hasattr(cv2, "optflow"):
        raise RuntimeError(
            "cv2.optflow is missing: TV-L1 needs opencv-contrib-python-headless. Another OpenCV wheel "
            "(opencv-python, opencv-python-headless) probably overwrote it; uninstall every opencv* "
            "package and reinstall this project."
        )

    def make():
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p["tau"], lambda_=p["lambda_"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
            epsilon=p["epsilon"], innnerIterations=p["inner_iterations"],
            outerIterations=p["outer_iterations"], scaleStep=p["scale_step"], gamma=p["gamma"],
            medianFiltering=p["median_filtering"],
        )

    return _loop(make, prev, nxt)


FARNEBACK_DEFAULTS = dict(
    num_levels=5, pyr_scale=0.5, fast_pyramids=False, win_size=13, num_iters=10, poly_n=5, poly_sigma=1.1,
)


@register_method("farneback", FARNEBACK_DEFAULTS, "OpenCV Farneback (2003), OpenCV defaults")
def farneback_pairs(prev: np.ndarray, nxt: np.ndarray, **p) -> np.ndarray:
    def make():
        return cv2.FarnebackOpticalFlow_create(
            numLevels=p["num_levels"], pyrScale=p["pyr_scale"], fastPyramids=p["fast_pyramids"],
            winSize=p["win_size"], numIters=p["num_iters"], polyN=p["poly_n"], polySigma=p["poly_sigma"],
        )

    return _loop(make, prev, nxt)


_DIS_PRESETS = {"ultrafast": 0, "fast": 1, "medium": 2}
DIS_DEFAULTS = dict(preset="medium")


def _check_dis(p: dict) -> None:
    if p["preset"] not in _DIS_PRESETS:
        raise ConfigError(f"dis preset must be one of {', '.join(_DIS_PRESETS)}, got {p['preset']!r}")


@register_method("dis", DIS_DEFAULTS, "OpenCV DIS (Kroeger et al. 2016), preset medium", validate=_check_dis)
def dis_pairs(prev: np.ndarray, nxt: np.ndarray, **p) -> np.ndarray:
    _check_dis(p)
    return _loop(lambda: cv2.DISOpticalFlow_create(_DIS_PRESETS[p["preset"]]), prev, nxt)


def to_gray(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB uint8 -> (T, H, W) uint8 luma (ITU-R BT.601, as OpenCV's RGB2GRAY)."""
    if frames.ndim == 3:
        return frames
    return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]) if len(frames) else frames[..., 0]


def compute_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "tvl1", params: dict | None = None) -> np.ndarray:
    """Flow of one pair. ``prev``/``nxt``: (H, W) gray or (H, W, 3) RGB uint8 -> (H, W, 2) float32."""
    p, n = to_gray(prev[None]), to_gray(nxt[None])
    return get_method(method).fn(p, n, **resolve_params(method, params))[0]


def video_flow(frames: np.ndarray, method: str = "tvl1", params: dict | None = None) -> np.ndarray:
    """Flow between consecutive frames. (T, H, W[, 3]) uint8 -> (T-1, H, W, 2) float32."""
    if len(frames) < 2:
        raise ConfigError(f"flow needs at least 2 frames, got {len(frames)}")
    gray = to_gray(frames)
    return get_method(method).fn(gray[:-1], gray[1:], **resolve_params(method, params))
