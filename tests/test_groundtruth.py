"""The flow benchmark's ground truth (flowprep.groundtruth) is right: frames warp onto each other by it, its sign
convention is flowprep's, and its masks remove exactly what cannot match."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("skimage.data")

from flowprep.flow import video_flow  # noqa: E402
from flowprep.groundtruth import (SEQUENCES, endpoint_error, make_sequence,  # noqa: E402
                                  middlebury_motorcycle)

SIZE = (128, 96)


@pytest.fixture(scope="module")
def sequences():
    return {name: make_sequence(name, SIZE, num_frames=4) for name in SEQUENCES}


def _warp_back(frame1: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Frame t+1 sampled at x + flow(x): frame t where the flow is right."""
    h, w = frame1.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    f = flow.astype(np.float32)
    return cv2.remap(frame1.astype(np.float32), xs + f[..., 0], ys + f[..., 1], cv2.INTER_CUBIC)


def _warp_error(seq, t: int, flow: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(_warp_back(seq.frames[t + 1], flow) - seq.frames[t])[mask].mean())


@pytest.mark.parametrize("name", SEQUENCES)
def test_frame_t1_warped_back_by_true_flow_gives_frame_t(sequences, name):
    seq = sequences[name]
    assert seq.frames.shape == (4, 96, 128) and seq.frames.dtype == np.uint8
    assert seq.flow.shape == (3, 96, 128, 2) and seq.flow.dtype == np.float32
    assert seq.valid.shape == (3, 96, 128) and seq.valid.mean() > 0.85
    for t in range(3):
        valid = seq.valid[t]
        exact = _warp_error(seq, t, seq.flow[t], valid)
        # Interpolation error only (a few gray levels on these textures): a flow off by 0.3 px in x or in y, or
        # no flow at all, matches clearly worse, so the ground truth is right to well under 0.3 px.
        for off in ([0.3, 0.0], [0.0, 0.3], [-0.3, 0.0], [0.0, -0.3]):
            assert exact < 0.6 * _warp_error(seq, t, seq.flow[t] + off, valid), (name, t, off)
        assert exact < 0.3 * _warp_error(seq, t, np.zeros_like(seq.flow[t]), valid), (name, t)
        assert exact < 4.0, (name, t, exact)


def test_occluded_pixels_are_masked_and_do_not_match(sequences):
    seq = sequences["object"]
    t = 1
    # The disc moves right over the background: background pixels just right of it vanish under it.
    masked = ~seq.valid[t]
    h, w = masked.shape
    inner = np.zeros_like(masked)
    inner[4:-4, 4:-4] = True  # away from the frame's border, where pixels leave the view
    occluded = masked & inner
    assert occluded.mean() > 0.01
    err_occluded = _warp_error(seq, t, seq.flow[t], occluded)
    err_valid = _warp_error(seq, t, seq.flow[t], seq.valid[t])
    assert err_occluded > 2.5 * err_valid, (err_occluded, err_valid)


def test_translation_sign_matches_flowprep_methods(sequences):
    seq = sequences["translation"]
    # The pan moves the picture right and up (5, -2) px per frame at width 256, speeding up: at width 128 the
    # first pair moves about (2.6, -0.9) px.
    med = np.median(seq.flow[0][seq.valid[0]], axis=0)
    assert med[0] > 2 and med[1] < -0.5
    assert np.abs(seq.flow[0][seq.valid[0]] - med).max() < 1e-4  # a translation: one vector
    est = video_flow(seq.frames, "dis")
    np.testing.assert_allclose(np.median(est[0][seq.valid[0]], axis=0), med, atol=0.2)
    assert endpoint_error(est, seq.flow, seq.valid) < 0.5 * endpoint_error(np.zeros_like(est), seq.flow, seq.valid)


def test_motions_are_of_their_kind(sequences):
    # Zoom in: flow points away from the zoom centre, so its divergence is positive; rotation: curl, no divergence.
    def div_curl(f):
        dudx, dvdy = np.gradient(f[..., 0], axis=1), np.gradient(f[..., 1], axis=0)
        dudy, dvdx = np.gradient(f[..., 0], axis=0), np.gradient(f[..., 1], axis=1)
        return float(np.median(dudx + dvdy)), float(np.median(dvdx - dudy))

    d, c = div_curl(sequences["zoom"].flow[0])
    assert d > 0.02 and abs(c) < 1e-3
    d, c = div_curl(sequences["rotation"].flow[0])
    assert abs(d) < 1e-3 and c > 0.01  # clockwise on screen (y down) is positive curl
    # Non-rigid: the flow varies across the frame and is not affine.
    f = sequences["nonrigid"].flow[0]
    ys, xs = np.mgrid[0:96, 0:128]
    a = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1)
    resid = f.reshape(-1, 2) - a @ np.linalg.lstsq(a, f.reshape(-1, 2), rcond=None)[0]
    assert np.abs(resid).mean() > 0.2
    # The object sequence has two motions: the disc's flow differs from the background's.
    o = sequences["object"].flow[0][sequences["object"].valid[0]]
    assert np.ptp(o[:, 0]) > 1.5


def test_same_arguments_same_arrays_and_bad_arguments():
    a, b = make_sequence("nonrigid", (32, 24), 3), make_sequence("nonrigid", (32, 24), 3)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.flow, b.flow)
    with pytest.raises(ValueError, match="unknown sequence 'pan'"):
        make_sequence("pan")
    with pytest.raises(ValueError, match="num_frames"):
        make_sequence("zoom", num_frames=1)
    with pytest.raises(ValueError, match="do not match"):
        endpoint_error(a.flow[0], a.flow, a.valid)


def test_middlebury_pair():
    left, right, gt, valid = middlebury_motorcycle()
    assert left.shape == right.shape == (125, 185) and left.dtype == np.uint8
    assert gt.shape == (125, 185, 2) and valid.mean() > 0.8
    assert (gt[..., 0][valid] <= 0).all() and (gt[..., 1] == 0).all()  # left to right: points move left
    assert 8.0 < endpoint_error(np.zeros_like(gt), gt, valid) < 9.0  # 8.6 px: the zero-flow baseline
