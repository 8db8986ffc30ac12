"""Augmentation and input layout of the streams."""
import cv2
import numpy as np
import pytest
import torch

from twostream import transforms as T
from twostream.data import ClipSpec, clip_indices, evenly_spaced, to_input


def _flow(t=3, h=8, w=10, seed=0):
    return np.random.default_rng(seed).normal(size=(t, h, w, 2)).astype(np.float32)


def test_flip_mirrors_and_negates_flow_x_only():
    f = _flow()
    out = T.flip(f, is_flow=True)
    np.testing.assert_array_equal(out[..., 0], -f[:, :, ::-1, 0])
    np.testing.assert_array_equal(out[..., 1], f[:, :, ::-1, 1])
    rgb = (np.arange(3 * 4 * 5 * 3) % 256).astype(np.uint8).reshape(3, 4, 5, 3)
    np.testing.assert_array_equal(T.flip(rgb, is_flow=False), rgb[:, :, ::-1])


def test_flipped_rightward_motion_becomes_leftward():
    right = np.zeros((1, 6, 6, 2), np.float32)
    right[..., 0] = 2.0
    assert (T.flip(right, is_flow=True)[..., 0] == -2.0).all()


def test_resize_scales_flow_vectors_with_the_image():
    f = np.zeros((2, 20, 40, 2), np.float32)
    f[..., 0], f[..., 1] = 4.0, -2.0
    out = T.resize(f, (20, 10), is_flow=True)  # half size in both directions
    assert out.shape == (2, 10, 20, 2)
    np.testing.assert_allclose(out[..., 0], 2.0, atol=1e-5)
    np.testing.assert_allclose(out[..., 1], -1.0, atol=1e-5)


def test_mean_subtraction_removes_each_fields_mean():
    f = _flow(4) + np.array([3.0, -1.0], np.float32)  # camera pan
    out = T.normalize_flow(f, bound=20.0, subtract_mean=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-6)
    kept = T.normalize_flow(f, bound=20.0, subtract_mean=False)
    np.testing.assert_allclose(kept * 20.0, f, atol=1e-6)
    # the residual motion is untouched
    np.testing.assert_allclose(out * 20.0, f - f.mean(axis=(1, 2), keepdims=True), atol=1e-5)


def test_temporal_frame_layout_interleaves_x_and_y():
    spec = ClipSpec("temporal", num_frames=3, layout="frame", input_size=8, subtract_mean=False)
    f = np.zeros((3, 8, 8, 2), np.float32)
    for t in range(3):
        f[t, ..., 0], f[t, ..., 1] = t + 1, -(t + 1)
    x = to_input(f, spec, bound=1.0)
    assert x.shape == (6, 8, 8) and spec.channels == 6
    assert [float(x[c, 0, 0]) for c in range(6)] == [1, -1, 2, -2, 3, -3]


def test_clip_layout_is_channels_then_time():
    spec = ClipSpec("spatial", num_frames=4, layout="clip", input_size=8)
    x = to_input(np.zeros((4, 8, 8, 3), np.uint8), spec, bound=20.0)
    assert x.shape == (3, 4, 8, 8) and x.dtype == torch.float32


def test_eval_crops_ten_views_of_the_right_size():
    clip = _flow(2, 12, 16)
    views = T.eval_crops(clip, 8, is_flow=True, num_crops=10)
    assert len(views) == 10 and all(v.shape == (2, 8, 8, 2) for v in views)
    np.testing.assert_array_equal(views[0], clip[:, :8, :8])  # top-left corner
    np.testing.assert_array_equal(views[5], T.flip(views[0], True))
    with pytest.raises(ValueError, match="num_crops"):
        T.eval_crops(clip, 8, is_flow=True, num_crops=3)


def test_train_augment_is_reproducible_and_sized():
    clip = _flow(2, 30, 40)
    a, fa = T.train_augment(clip, 16, True, np.random.default_rng(5))
    b, fb = T.train_augment(clip, 16, True, np.random.default_rng(5))
    assert a.shape == (2, 16, 16, 2) and fa == fb
    np.testing.assert_array_equal(a, b)


def test_sampling_positions():
    assert evenly_spaced(100, 4) == [12, 37, 62, 87]
    spec = ClipSpec("temporal", num_frames=10, layout="frame")
    assert spec.num_positions(32) == 22  # 31 flow frames, stacks of 10
    assert spec.num_positions(5) == 1  # shorter than a stack: one clamped position
    assert clip_indices(spec, 0, 5) == [0, 1, 2, 3, 3, 3, 3, 3, 3, 3]


def test_bad_spec_is_refused():
    with pytest.raises(ValueError, match="stream"):
        ClipSpec("depth")
    with pytest.raises(ValueError, match="one frame"):
        ClipSpec("spatial", num_frames=5, layout="frame")


def _reference_input(clip, spec, bound, rng):
    """The plain composition the loader's faster code must equal: crop, resize, flip (copies), normalise, layout."""
    x, y, w, h = T.multiscale_crop_box(clip.shape[1], clip.shape[2], rng)
    out = clip[:, y:y + h, x:x + w]
    s = spec.input_size
    if (h, w) != (s, s):
        interp = cv2.INTER_AREA if s < w else cv2.INTER_LINEAR
        out = np.stack([cv2.resize(np.ascontiguousarray(f), (s, s), interpolation=interp) for f in out])
        if spec.stream == "temporal":
            out = out * np.array([s / w, s / h], np.float32)
    if rng.random() < 0.5:
        out = out[:, :, ::-1].copy()
        if spec.stream == "temporal":
            out[..., 0] *= -1
    if spec.stream == "spatial":
        out = (out.astype(np.float32) - T.IMAGENET_MEAN) / T.IMAGENET_STD
    else:
        out = out.astype(np.float32)
        if spec.subtract_mean:
            out = out - out.mean(axis=(1, 2), keepdims=True)
        out = out / np.float32(bound)
    t, hh, ww, c = out.shape
    out = out.transpose(0, 3, 1, 2).reshape(t * c, hh, ww) if spec.layout == "frame" else out.transpose(3, 0, 1, 2)
    return out


@pytest.mark.parametrize("stream,layout,frames", [("spatial", "frame", 1), ("temporal", "frame", 5),
                                                  ("temporal", "clip", 3), ("spatial", "clip", 3)])
def test_training_input_equals_the_plain_composition(stream, layout, frames):
    spec = ClipSpec(stream, num_frames=frames, layout=layout, input_size=27)
    rng = np.random.default_rng(3)
    for seed in range(12):  # crop sides 36, 31, 27 (the input size: no resize), 23, flipped and not
        clip = (rng.integers(0, 256, (frames, 36, 44, 3), dtype=np.uint8) if stream == "spatial"
                else rng.normal(2, 3, (frames, 36, 44, 2)).astype(np.float32))
        got = to_input(T.train_augment(clip, 27, stream == "temporal", np.random.default_rng(seed))[0], spec, 20.0)
        want = _reference_input(clip, spec, 20.0, np.random.default_rng(seed))
        np.testing.assert_allclose(got.numpy(), want, atol=2e-5, rtol=0)
