"""Extraction through the Python API and reading the store back: layout, metadata, flow direction, the
round trip of every RGB/flow format, subsampling, and readers in forked workers."""
from __future__ import annotations

import json
import multiprocessing
import pickle

import numpy as np
import pytest

from conftest import make_dataset, read_store
from flowprep.decode import DecodeConfig, read_video
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.flow import video_flow
from flowprep.quantize import dequantize, quantize, step
from flowprep.store import Store, StoreError


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 2 classes x 3 videos of 8 frames, 48x40; Right moves +2 px/frame in x, Down +2 px/frame in y.
    return make_dataset(tmp_path_factory.mktemp("ds") / "ds")


def _extract(dataset, store, **cfg):
    decode = cfg.pop("decode", DecodeConfig(short_side=None))
    summary = extract_dataset(dataset, store, ExtractConfig(decode=decode, **{"method": "farneback", **cfg}),
                              jobs=1, progress=False)
    assert summary.ok, summary.failed
    return summary


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "st"
    s = _extract(dataset, path)
    assert (s.total, s.done, s.skipped, s.pairs) == (6, 6, 0, 6 * 7)
    return path


def test_layout_and_metadata(store, dataset):
    st = Store(store)
    assert st.classes == ["Down", "Right"]
    assert sorted(st.video_ids()) == sorted(f"{c}/v_{c}_g{g:02d}_c01.avi" for c in st.classes for g in (1, 2, 3))
    assert st.video_ids(1, "test") == ["Down/v_Down_g03_c01.avi", "Right/v_Right_g03_c01.avi"]
    assert len(st.video_ids(1, "train")) == 4
    cfg = json.loads((store / "store.json").read_text())
    assert (cfg["method"], cfg["mapping"], cfg["bound"], cfg["flow_format"], cfg["rgb_format"]) == \
        ("farneback", "symmetric", 20.0, "jpeg", "jpeg")
    assert cfg["params"]["win_size"] == 13  # every parameter recorded, defaults included
    vid = "Right/v_Right_g02_c01.avi"
    a = st.attrs(vid)
    assert (a["label"], a["class_name"], a["num_frames"], a["height"], a["width"]) == (1, "Right", 8, 40, 48)
    assert a["source_fps"] == pytest.approx(25.0) and a["fps"] == pytest.approx(25.0) and a["source_frames"] == 8
    assert (a["method"], a["mapping"], a["bound"]) == ("farneback", "symmetric", 20.0)
    index = json.loads((store / "index.json").read_text())
    assert index[vid]["num_frames"] == 8 and index[vid]["bytes"] == (store / "videos" / (vid + ".h5")).stat().st_size
    assert st.label(vid) == 1 and st.num_frames(vid) == 8
    assert not list(store.rglob("*.tmp-*")) and st.failures() == {}


def test_stored_flow_has_the_motion_of_each_class(store):
    st = Store(store)
    for vid in st.video_ids():
        flow = st.flow(vid, range(7))  # (7, 40, 48, 2)
        assert flow.shape == (7, 40, 48, 2) and flow.dtype == np.float32
        med = np.median(flow[:, 10:-10, 10:-10].reshape(-1, 2), axis=0)
        expected = [2, 0] if vid.startswith("Right") else [0, 2]
        np.testing.assert_allclose(med, expected, atol=0.2, err_msg=vid)
    frames = st.frames("Down/v_Down_g01_c01.avi", [0, 7, 3])
    assert frames.shape == (3, 40, 48, 3) and frames.dtype == np.uint8
    with pytest.raises(IndexError, match="flow frame index 7 out of range"):
        st.flow("Down/v_Down_g01_c01.avi", [7])
    with pytest.raises(StoreError, match="not in the store"):
        st.frames("Down/nope.avi", [0])


@pytest.mark.parametrize("flow_format, rgb_format, mapping, bound", [
    ("png", "raw", "symmetric", 20.0),
    ("raw", "jpeg", "symmetric", 20.0),
    ("raw", "raw", "tsn", 5.0),
    ("jpeg", "jpeg", "symmetric", 20.0),
    ("float16", "jpeg", "symmetric", 20.0),
])
def test_format_round_trip(dataset, tmp_path, flow_format, rgb_format, mapping, bound):
    _extract(dataset, tmp_path / "st", flow_format=flow_format, rgb_format=rgb_format, mapping=mapping, bound=bound)
    st = Store(tmp_path / "st")
    vid = "Right/v_Right_g01_c01.avi"
    video = read_video(dataset / vid, DecodeConfig(short_side=None))
    flow = video_flow(video.frames, "farneback")  # what extraction computed, in float
    got = st.flow(vid, range(len(flow)))
    codes = dequantize(quantize(flow, bound, mapping), bound, mapping)
    if flow_format in ("png", "raw"):
        np.testing.assert_array_equal(got, codes)  # lossless: exactly the quantised flow
        assert np.abs(got - flow).max() <= step(bound, mapping) / 2 + 1e-5
    elif flow_format == "jpeg":
        err = np.abs(got - codes)
        print(f"\njpeg q95 flow: mean abs error {err.mean():.4f} px (max {err.max():.3f}) against the quantised flow, "
              f"{np.abs(got - flow).mean():.4f} px against float flow")
        assert err.mean() < 0.05 and err.max() < 1.0
    else:
        np.testing.assert_array_equal(got, flow.astype(np.float16).astype(np.float32))
        assert np.all(np.abs(got - flow) <= np.abs(flow) * 2.0 ** -11 + 2.0 ** -25)
    rgb = st.frames(vid, range(len(video.frames))).astype(int)
    if rgb_format == "raw":
        np.testing.assert_array_equal(rgb, video.frames)
    else:
        # JPEG keeps luma at full resolution but halves chroma (4:2:0); this texture has independent random
        # colour per pixel, so compare luma, which is also what flow sees.
        luma = np.array([0.299, 0.587, 0.114])
        assert np.abs((rgb - video.frames) @ luma).mean() < 1.5


def test_resize_and_temporal_subsampling(dataset, tmp_path):
    # 25 fps -> 12.5 fps keeps every 2nd frame, stride 2 then every 2nd of those: source frames 0 and 4.
    _extract(dataset, tmp_path / "st", decode=DecodeConfig(size=(24, 20), fps=12.5, stride=2))
    st = Store(tmp_path / "st")
    vid = "Right/v_Right_g01_c01.avi"
    a = st.attrs(vid)
    assert (a["num_frames"], a["height"], a["width"]) == (2, 20, 24)
    assert a["fps"] == pytest.approx(6.25) and a["source_fps"] == pytest.approx(25.0)
    assert read_store(tmp_path / "st")[vid]["frame_index"][2] == np.array([0, 4], np.int32).tobytes()
    # 2 px/frame at full width is 1 px/frame at half width, over 4 source frames: 4 px per stored pair.
    med = np.median(st.flow(vid, [0])[0, 5:-5, 5:-5].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [4, 0], atol=0.3)


_INHERITED: Store | None = None  # reaches fork workers by inheritance, with the parent's open HDF5 handles


def _read(store: Store, vid: str):
    return store.flow(vid, [0, 1]).sum(), store.frames(vid, [2]).sum()


def _read_pickled(args):
    return _read(*args)


def _read_inherited(vid):
    return _read(_INHERITED, vid)


def test_store_in_forked_and_pickled_workers(store):
    global _INHERITED
    st = Store(store)
    vids = st.video_ids()
    expected = [_read(st, v) for v in vids]  # opens the files in the parent
    assert len(st._files) == len(vids)
    clone = pickle.loads(pickle.dumps(st))
    assert len(clone._files) == 0 and _read(clone, vids[0]) == expected[0]
    _INHERITED = st
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            assert pool.map(_read_pickled, [(st, v) for v in vids]) == expected  # as a spawned DataLoader worker
            assert pool.map(_read_inherited, vids) == expected  # as a forked DataLoader worker
    finally:
        _INHERITED = None
    assert _read(st, vids[-1]) == expected[-1]  # the parent's handles still work
    st.close()


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a flowprep store"):
        Store(tmp_path)


def test_resume_accepts_other_runtime_params_only(tmp_path):
    """Device, batch size and compilation change where flow is computed, not what: a store resumes across them."""
    from flowprep.dataset import Dataset
    from flowprep.extract import prepare_store

    ds = Dataset(tmp_path, ["a"], [], {1: {"train": [], "test": []}})
    store = tmp_path / "store"
    prepare_store(store, ds, ExtractConfig(method="tvl1-torch", params={"device": "cpu", "batch_size": 1}))
    prepare_store(store, ds, ExtractConfig(method="tvl1-torch", params={"device": "auto", "batch_size": 8}))
    with pytest.raises(ValueError, match="other settings"):
        prepare_store(store, ds, ExtractConfig(method="tvl1-torch", params={"device": "cpu", "warps": 3}))
