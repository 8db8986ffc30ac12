"""Flow methods: sign and magnitude on known motion, parameters reach OpenCV, and end-point error on a real
Middlebury pair (Scharstein et al. 2014, "motorcycle"), through our API against OpenCV called directly."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import textured_frames
from flowprep.flow import compute_flow, get_method, method_names, resolve_params, video_flow

CPU_METHODS = ["tvl1", "farneback", "dis"]


@pytest.fixture(autouse=True)
def one_opencv_thread():
    # Results compared bit for bit below must not depend on how OpenCV splits the work; it also keeps to one core.
    old = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(old)


def _interior(flow: np.ndarray, margin: int = 12) -> np.ndarray:
    # textured_frames wraps around the border, so the true flow holds only away from it.
    return flow[margin:-margin, margin:-margin].reshape(-1, 2)


@pytest.mark.parametrize("method", CPU_METHODS)
@pytest.mark.parametrize("dx, dy", [(2, 0), (0, 3), (-1, 0), (0, -2)])
def test_known_translation(method, dx, dy):
    frames = textured_frames(2, (64, 64), dx, dy, seed=1)  # (2, 64, 64, 3) RGB
    flow = compute_flow(frames[0], frames[1], method)
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    med = np.median(_interior(flow), axis=0)
    # Sign and magnitude of each component: channel 0 is x (right), channel 1 is y (down).
    np.testing.assert_allclose(med, [dx, dy], atol=0.1, err_msg=f"{method}: median flow {med} for motion ({dx}, {dy})")
    # And nearly every pixel agrees, not only the median.
    err = np.linalg.norm(_interior(flow) - [dx, dy], axis=1)
    assert np.mean(err < 0.5) > 0.95, f"{method}: only {np.mean(err < 0.5):.0%} of pixels within 0.5 px"


@pytest.mark.parametrize("method", CPU_METHODS)
def test_video_flow_and_time_reversal(method):
    frames = textured_frames(4, (64, 64), 2, 1, seed=3)
    flow = video_flow(frames, method)
    assert flow.shape == (3, 64, 64, 2)
    np.testing.assert_allclose(np.median(_interior(flow[1]), axis=0), [2, 1], atol=0.1)
    # Played backwards the motion reverses, so does the flow.
    back = video_flow(frames[::-1].copy(), method)
    np.testing.assert_allclose(np.median(_interior(back[0]), axis=0), [-2, -1], atol=0.1)
    # Grey input gives what RGB input gives: flow is computed on BT.601 luma either way.
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    np.testing.assert_array_equal(video_flow(gray, method), flow)


def _direct(method: str, prev: np.ndarray, nxt: np.ndarray, **kw) -> np.ndarray:
    """OpenCV called by hand, on grey frames; ``kw`` in OpenCV's own parameter names."""
    if method == "tvl1":
        solver = cv2.optflow.DualTVL1OpticalFlow_create(**kw)
    elif method == "farneback":
        solver = cv2.FarnebackOpticalFlow_create(**kw)
    else:
        solver = cv2.DISOpticalFlow_create(kw.get("preset", cv2.DISOPTICAL_FLOW_PRESET_MEDIUM))
    return solver.calc(prev, nxt, None)


@pytest.mark.parametrize("method, ours, theirs", [
    ("tvl1", {"warps": 2, "nscales": 2, "lambda_": 0.3, "median_filtering": 3},
     {"warps": 2, "nscales": 2, "lambda_": 0.3, "medianFiltering": 3}),
    ("tvl1", {"inner_iterations": 5, "outer_iterations": 3, "scale_step": 0.6, "theta": 0.5, "tau": 0.2},
     {"innnerIterations": 5, "outerIterations": 3, "scaleStep": 0.6, "theta": 0.5, "tau": 0.2}),
    ("farneback", {"win_size": 21, "num_levels": 2, "poly_n": 7, "poly_sigma": 1.5, "num_iters": 3},
     {"winSize": 21, "numLevels": 2, "polyN": 7, "polySigma": 1.5, "numIters": 3}),
    ("dis", {"preset": "ultrafast"}, {"preset": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST}),
])
def test_parameters_reach_opencv(method, ours, theirs):
    frames = textured_frames(2, (48, 40), 2, 1, seed=5)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    got = compute_flow(frames[0], frames[1], method, ours)
    np.testing.assert_array_equal(got, _direct(method, *gray, **theirs))
    # The non-default parameters made a difference, so the equality above is about them.
    assert not np.array_equal(got, compute_flow(frames[0], frames[1], method))


def test_registry_errors():
    assert set(CPU_METHODS) <= set(method_names())
    with pytest.raises(ValueError, match="unknown flow method 'nope'.*farneback"):
        get_method("nope")
    with pytest.raises(ValueError, match="no parameter 'win'.*win_size"):
        resolve_params("farneback", {"win": 3})
    with pytest.raises(ValueError, match="preset must be one of"):
        resolve_params("dis", {"preset": "slow"})
    assert resolve_params("farneback", {"win_size": "21"})["win_size"] == 21  # CLI strings are converted
    with pytest.raises(ValueError, match="at least 2 frames"):
        video_flow(textured_frames(1), "dis")
    with pytest.raises(ValueError, match="uint8"):
        get_method("dis").fn(np.zeros((1, 8, 8), np.float32), np.zeros((1, 8, 8), np.float32), preset="medium")


# --- Middlebury 2014 "motorcycle" (skimage.data.stereo_motorcycle), a rectified stereo pair ---------------
# Left to right image, a scene point moves by -disparity in x and not at all in y, so that is the true flow.
# At 1/4 size (185x125) disparities reach 15 px. Reference numbers measured with OpenCV's defaults:
# TV-L1 3.2 px EPE, Farneback 5.8, DIS-medium 1.1, zero flow 8.6.


@pytest.fixture(scope="module")
def motorcycle():
    skdata = pytest.importorskip("skimage.data")
    left, right, disp = skdata.stereo_motorcycle()  # (500, 741, 3) uint8 x2, (500, 741) float32 with inf/nan
    size = (round(left.shape[1] / 4), round(left.shape[0] / 4))  # (185, 125)
    left = cv2.resize(left, size, interpolation=cv2.INTER_AREA)
    right = cv2.resize(right, size, interpolation=cv2.INTER_AREA)
    # Nearest, not area: averaging disparities would mix foreground and background at occlusion edges and
    # spread the non-finite (unknown) values of the ground truth.
    disp = cv2.resize(disp, size, interpolation=cv2.INTER_NEAREST) / 4.0
    valid = np.isfinite(disp)
    gt = np.stack([-np.where(valid, disp, 0), np.zeros_like(disp)], axis=-1)
    return left, right, gt, valid


def _epe(flow, gt, valid) -> float:
    return float(np.linalg.norm(flow - gt, axis=-1)[valid].mean())


@pytest.mark.parametrize("method", CPU_METHODS)
def test_middlebury_epe_matches_opencv(method, motorcycle):
    left, right, gt, valid = motorcycle
    assert left.shape == (125, 185, 3) and valid.mean() > 0.8
    t0 = time.perf_counter()
    ours = compute_flow(left, right, method)  # RGB in, through the registry and its default parameters
    seconds = time.perf_counter() - t0
    direct = _direct(method, cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(right, cv2.COLOR_RGB2GRAY))
    e_ours, e_direct, e_zero = _epe(ours, gt, valid), _epe(direct, gt, valid), _epe(np.zeros_like(gt), gt, valid)
    print(f"\nmotorcycle 1/4 {method}: EPE ours {e_ours:.3f} px ({seconds:.2f} s), OpenCV direct {e_direct:.3f}, "
          f"zero flow {e_zero:.3f}")
    assert abs(e_ours - e_direct) <= 0.05 * e_direct, (method, e_ours, e_direct)
    assert e_ours < e_zero, f"{method}: EPE {e_ours:.2f} px is no better than zero flow ({e_zero:.2f} px)"
