"""Reading video files the way the store does it: items straight from the HDF5 global heap (checked against
h5py), one read for neighbouring items, attributes read once per open, damaged files named."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from conftest import textured_frames
from flowprep.quantize import dequantize, quantize
from flowprep.store import Store, StoreError, VideoFile, file_layout, write_json_atomic, write_video

ATTRS = {"id": "A/v.avi", "label": 0, "class_name": "A", "source_fps": 25.0, "fps": 25.0, "source_frames": 6,
         "method": "dis", "mapping": "symmetric", "bound": 20.0}


def _video_file(path, num_frames=6, size=(40, 32), **kw) -> np.ndarray:
    """Write a real video file (as extraction does) and return its frames."""
    frames = textured_frames(num_frames, size)
    codes = quantize(np.random.default_rng(0).normal(0, 3, (num_frames - 1, size[1], size[0], 2)))
    write_video(path, frames=frames, frame_index=np.arange(num_frames), codes_or_flow=codes,
                attrs={**ATTRS, "num_frames": num_frames, "height": size[1], "width": size[0]}, **kw)
    return frames, codes


def _store(tmp_path, index=True, **kw):
    """A store of one video; with ``index``, its index.json and store.json describe it as extraction writes them."""
    root = tmp_path / "st"
    frames, codes = _video_file(root / "videos" / "A" / "v.avi.h5", **kw)
    settings = {"rgb_format": kw.get("rgb_format", "jpeg"), "flow_format": kw.get("flow_format", "jpeg"),
                "mapping": "symmetric"}
    write_json_atomic(root / "store.json", {"schema": 1, "bound": 20.0, **(settings if index else {})})
    if index:
        write_json_atomic(root / "index.json", {"A/v.avi": {"num_frames": len(frames), "height": 32, "width": 40}})
    write_json_atomic(root / "manifest.json", {"classes": ["A"], "videos": [{"id": "A/v.avi", "label": 0}],
                                               "splits": {}})
    return Store(root), frames, codes


def _scattered_file(path, chunks=None) -> dict:
    """Items of random sizes (some empty) written in shuffled order into three datasets in turn, so that
    their heap objects share collections, fill freed space and lie out of index order."""
    rng = np.random.default_rng(1)
    n = 40
    data = {name: [rng.integers(0, 256, int(rng.choice([0, 7, 300, 2500, 9000])), dtype=np.uint8) for _ in range(n)]
            for name in ("rgb", "flow_x", "flow_y")}
    data["flow_x"], data["flow_y"] = data["flow_x"][:n - 1], data["flow_y"][:n - 1]
    with h5py.File(path, "w") as f:
        f.attrs.update({**ATTRS, "num_frames": n, "height": 8, "width": 8, "rgb_format": "jpeg",
                        "flow_format": "jpeg"})
        ds = {k: f.create_dataset(k, (len(v),), dtype=h5py.vlen_dtype(np.uint8), chunks=chunks) for k, v in data.items()}
        for i in rng.permutation(n):
            for k, v in data.items():
                if i < len(v):
                    ds[k][i] = v[i]
        ds["rgb"][3] = rng.integers(0, 256, 50, dtype=np.uint8)  # rewritten: its old object is freed
    with h5py.File(path, "r") as f:
        return {k: list(f[k][:]) for k in data}


def test_items_are_what_h5py_reads(tmp_path):
    path = tmp_path / "v.h5"
    expected = _scattered_file(path)
    v = VideoFile(path)
    assert all(v._dataset(n)[1] is not None for n in expected)  # the direct reader
    for name, items in expected.items():
        n = len(items)
        for idx in [list(range(n)), [5, 1, 3, 3], list(range(n - 10, n)), [0], list(range(10, 20))[::-1]]:
            got = v.items(name, idx)
            assert len(got) == len(idx)
            for g, i in zip(got, idx):
                np.testing.assert_array_equal(g, items[i])
    v.close()


def test_chunked_items_are_refused(tmp_path):
    # flowprep never writes them, and the HDF5 library would allocate whatever lengths their entries declare
    path = tmp_path / "v.h5"
    _scattered_file(path, chunks=(4,))
    v = VideoFile(path)
    with pytest.raises(StoreError, match=r"v\.h5: dataset 'rgb' is not stored contiguously"):
        v.items("rgb", [0])
    v.close()


def test_wrong_offset_predictions_are_caught_by_the_object_headers(tmp_path):
    path = tmp_path / "v.h5"
    _video_file(path, num_frames=12)
    with h5py.File(path, "r") as f:
        expected = {n: list(f[n][:]) for n in ("rgb", "flow_x")}
    v = VideoFile(path)
    for name, items in expected.items():
        heap = v._dataset(name)[1]
        heap.read(list(range(len(items))))  # predicts where it can, walks the rest
        if name == "rgb":  # the first dataset of a fresh file starts its collections: predictable
            assert all(heap._predicted) and not heap._collections
        for i, o in enumerate(heap._predicted):
            if o:
                heap._predicted[i] = o + 8 * (i % 3)  # two in three now wrong
        for g, want in zip(heap.read(list(range(len(items)))), items):
            np.testing.assert_array_equal(g, want)
    v.close()


def test_neighbouring_items_come_from_one_read(tmp_path, monkeypatch):
    st, _, _ = _store(tmp_path, num_frames=12)
    st.flow("A/v.avi", range(0, 10)), st.frames("A/v.avi", range(12))  # the first reads walk the heap collections
    calls = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda *a: calls.append(a) or pread(*a))
    st.flow("A/v.avi", range(0, 10))
    assert 2 <= len(calls) <= 4, calls  # x and y, each one range (or two: a run split by free space reuse)
    calls.clear()
    st.frames("A/v.avi", [4])
    assert len(calls) == 1


def test_reads_touch_no_attribute_after_the_open(tmp_path, monkeypatch):
    st, frames, codes = _store(tmp_path, index=False)
    st.frames("A/v.avi", [0])
    reads = []
    get = h5py.AttributeManager.__getitem__
    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", lambda self, k: reads.append(k) or get(self, k))
    rgb, flow = st.frames("A/v.avi", [1, 2]), st.flow("A/v.avi", [0, 4])
    assert reads == []
    luma = np.array([0.299, 0.587, 0.114])  # JPEG halves chroma; compare luma, in RGB order
    assert rgb.shape == (2, 32, 40, 3) and np.abs((rgb.astype(int) - frames[1:3]) @ luma).mean() < 1.5
    assert np.abs(flow - dequantize(codes[[0, 4]])).mean() < 0.3  # JPEG of noise: within a few codes


@pytest.mark.parametrize("rgb_format,flow_format", [("raw", "raw"), ("jpeg", "png"), ("raw", "float16")])
def test_other_formats_read_the_same_through_one_open(tmp_path, rgb_format, flow_format):
    st, frames, codes = _store(tmp_path, rgb_format=rgb_format, flow_format=flow_format)
    flow = st.flow("A/v.avi", [3, 1, 2])
    if flow_format == "float16":
        np.testing.assert_array_equal(flow, codes[[3, 1, 2]].astype(np.float16).astype(np.float32))
    else:
        np.testing.assert_array_equal(flow, dequantize(codes[[3, 1, 2]]))
    if rgb_format == "raw":
        np.testing.assert_array_equal(st.frames("A/v.avi", [5, 0]), frames[[5, 0]])


def _damage(path, name, entry: bytes):
    with h5py.File(path, "r") as f:
        at = f[name].id.get_offset()
    with open(path, "r+b") as fh:
        fh.seek(at)
        fh.write(entry)


# Item 0's entry (length, heap collection address, object index) overwritten from its start.
@pytest.mark.parametrize("name,entry,message", [
    ("rgb", (2 ** 31).to_bytes(4, "little"), "rgb points past the end of the file"),  # a 2 GB length
    ("flow_x", b"\x10\0\0\0" + (10 ** 12).to_bytes(8, "little"), "flow_x points past the end of the file"),
    ("rgb", b"\x10\0\0\0" + (96).to_bytes(8, "little"), "rgb item 0: no heap collection at byte 96"),
    ("flow_y", b"\0\0\0\0", "a stored image holds undecodable bytes"),  # an empty item
])
def test_damaged_entries_are_named_errors_in_bounded_memory(tmp_path, name, entry, message):
    st, _, _ = _store(tmp_path)
    _damage(st.root / "videos" / "A" / "v.avi.h5", name, entry)
    with pytest.raises(StoreError, match=message) as e:
        st.frames("A/v.avi", [0]) if name == "rgb" else st.flow("A/v.avi", [0])
    assert "v.avi.h5" in str(e.value)


def test_the_store_index_spares_every_attribute_read_and_is_checked(tmp_path, monkeypatch):
    st, frames, _ = _store(tmp_path)
    index = {"A/v.avi": {"num_frames": 6, "height": 32, "width": 40}}
    reads = []
    get = h5py.AttributeManager.__getitem__
    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", lambda self, k: reads.append(k) or get(self, k))
    assert Store(st.root).frames("A/v.avi", [5]).shape == (1, 32, 40, 3) and reads == []
    index["A/v.avi"]["num_frames"] = 5  # a stale or damaged index is caught by the dataset lengths
    write_json_atomic(st.root / "index.json", index)
    with pytest.raises(StoreError, match=r"v.avi.h5: rgb holds 6 items but num_frames 5 \(from the store's index.json\)"):
        Store(st.root).frames("A/v.avi", [0])


def test_dataset_lengths_are_checked_once_at_open(tmp_path):
    st, _, _ = _store(tmp_path, index=False)
    with h5py.File(st.root / "videos" / "A" / "v.avi.h5", "r+") as f:
        f.attrs["num_frames"] = 10 ** 9
    # refused by the file's own checks (check_file: sizes within bounds, then dataset shapes) before any read
    with pytest.raises(StoreError, match=r"v.avi.h5: attribute num_frames=1000000000 is not an integer in 2..1000000"):
        st.frames("A/v.avi", [0])


def test_stored_image_of_another_size_is_named(tmp_path):
    st, _, _ = _store(tmp_path, index=False)
    with h5py.File(st.root / "videos" / "A" / "v.avi.h5", "r+") as f:
        f.attrs["width"] = 41
    with pytest.raises(StoreError, match=r"v.avi.h5: rgb\[0\]: a stored image holds a 40x32 jpeg image with 3 channels, "
                                         r"not a jpeg image of 41x32"):
        st.frames("A/v.avi", [0])


def test_a_reopened_file_needs_no_hdf5_open(tmp_path, monkeypatch):
    st, _, _ = _store(tmp_path)
    first = st.flow("A/v.avi", [2, 3])
    st.close()  # as the open-file cache does on a dataset larger than it
    opened = []
    real = h5py.File
    monkeypatch.setattr(h5py, "File", lambda *a, **k: opened.append(a) or real(*a, **k))
    np.testing.assert_array_equal(st.flow("A/v.avi", [2, 3]), first)
    assert opened == []  # facts and dataset locations from the first open, the items by pread


def test_a_file_with_a_user_block_is_read_directly(tmp_path):
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=512) as f:
        f.attrs.update({**ATTRS, "num_frames": 2, "height": 8, "width": 8, "rgb_format": "jpeg", "flow_format": "jpeg"})
        d = f.create_dataset("rgb", (2,), dtype=h5py.vlen_dtype(np.uint8))
        d[0], d[1] = np.arange(5, dtype=np.uint8), np.arange(9, dtype=np.uint8)
    v = VideoFile(path)
    assert v.mapping == "symmetric"  # its string attributes read, after their heap was checked
    assert v._dataset("rgb")[1] is not None  # heap addresses are relative to the superblock at byte 512
    assert [b.tolist() for b in v.items("rgb", [1, 0])] == [list(range(9)), list(range(5))]
    v.close()


def test_a_crafted_frame_size_is_refused_after_good_headers_were_seen(tmp_path):
    st, _, _ = _store(tmp_path)
    st.frames("A/v.avi", [0, 2])  # headers checked and remembered
    v = st.video("A/v.avi")
    at = v._dataset("rgb")[1]._locate(1)
    item = v.items("rgb", [1])[0].tobytes()
    sof = item.index(b"\xff\xc0")
    with open(v.path, "r+b") as f:  # item 1 now declares 30000 x 30000 pixels
        f.seek(at + sof + 5)
        f.write((30000).to_bytes(2, "big") * 2)
    with pytest.raises(StoreError, match=r"rgb\[1\]: a stored image holds a 30000x30000 jpeg image"):
        st.frames("A/v.avi", [1])
    np.testing.assert_array_equal(st.frames("A/v.avi", [2]), st.frames("A/v.avi", [2]))


def _indexed_store(tmp_path):
    """A one-video store whose index.json records the file's size and layout, as extraction writes it."""
    st, frames, codes = _store(tmp_path)
    path = st.root / "videos" / "A" / "v.avi.h5"
    with h5py.File(path, "r") as f:
        layout = file_layout(f)
    entry = {"num_frames": len(frames), "height": 32, "width": 40, "bytes": path.stat().st_size, "layout": layout}
    write_json_atomic(st.root / "index.json", {"A/v.avi": entry})
    return st.root, path, entry, frames, codes


def _count_hdf5_opens(monkeypatch) -> list:
    opened = []
    real = h5py.h5f.open
    monkeypatch.setattr(h5py.h5f, "open", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    return opened


def test_the_index_layout_spares_every_hdf5_open(tmp_path, monkeypatch):
    root, path, entry, frames, codes = _indexed_store(tmp_path)
    assert set(entry["layout"]) == {"rgb", "flow_x", "flow_y"}
    with h5py.File(path, "r") as f:
        assert entry["layout"]["rgb"] == [f["rgb"].id.get_offset(), 6]
    opened = _count_hdf5_opens(monkeypatch)
    st = Store(root)
    rgb, flow = st.frames("A/v.avi", [5, 1]), st.flow("A/v.avi", range(5))
    assert opened == []
    monkeypatch.undo()
    ref = Store(root)
    ref._index = {}  # without the index: facts from the attributes, layout found through HDF5
    np.testing.assert_array_equal(rgb, ref.frames("A/v.avi", [5, 1]))
    np.testing.assert_array_equal(flow, ref.flow("A/v.avi", range(5)))


@pytest.mark.parametrize("edit, outcome", [
    ({"bytes": 1}, "hdf5"),  # another file than the one recorded: everything found again through HDF5
    ({"layout": {"rgb": [0, 6], "flow_x": [0, 5], "flow_y": [0, 5]}, "bytes": None}, "error"),  # same size, offsets wrong
    ({"layout": {"rgb": [0, 7]}}, "hdf5"),  # a length that disagrees with num_frames: not used
    ({"layout": {"rgb": ["x", 6]}}, "hdf5"),
    ({"layout": "nonsense"}, "hdf5"),
])
def test_a_stale_or_edited_index_layout_never_gives_wrong_bytes(tmp_path, monkeypatch, edit, outcome):
    root, path, entry, frames, _ = _indexed_store(tmp_path)
    reference = Store(root).frames("A/v.avi", [0, 3])
    entry = {**entry, **{k: (path.stat().st_size if v is None else v) for k, v in edit.items()}}
    write_json_atomic(root / "index.json", {"A/v.avi": entry})
    opened = _count_hdf5_opens(monkeypatch)
    st = Store(root)
    if outcome == "error":
        with pytest.raises(StoreError, match=r"v\.avi\.h5: rgb.*\(damaged file\)"):
            st.frames("A/v.avi", [0, 3])
    else:
        np.testing.assert_array_equal(st.frames("A/v.avi", [0, 3]), reference)
        assert len(opened) == 1


def test_checked_files_need_no_hdf5_open_in_forked_workers(tmp_path, monkeypatch):
    st, frames, _ = _store(tmp_path, index=False)  # no index: what check_videos finds is what workers inherit
    st.check_videos(["A/v.avi"])
    opened = _count_hdf5_opens(monkeypatch)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker forked from the training process
        ok = st.frames("A/v.avi", [2]).shape == (1, 32, 40, 3) and opened == []
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 1) == b"1"


def _two_video_store(tmp_path, **store_kw):
    """A store of videos A/v.avi and B/w.avi, indexed as extraction indexes them."""
    root = tmp_path / "st"
    index, videos = {}, []
    for k, vid in enumerate(("A/v.avi", "B/w.avi")):
        path = root / "videos" / f"{vid}.h5"
        frames, _ = _video_file(path, num_frames=6 + k)
        with h5py.File(path, "r") as f:
            layout = file_layout(f)
        index[vid] = {"num_frames": len(frames), "height": 32, "width": 40, "bytes": path.stat().st_size,
                      "layout": layout}
        videos.append({"id": vid, "label": k})
    write_json_atomic(root / "store.json", {"schema": 1, "bound": 20.0, "rgb_format": "jpeg", "flow_format": "jpeg",
                                            "mapping": "symmetric"})
    write_json_atomic(root / "index.json", index)
    write_json_atomic(root / "manifest.json", {"classes": ["A", "B"], "videos": videos, "splits": {}})
    return Store(root, **store_kw)


def _count_preads(monkeypatch) -> list:
    calls = []
    pread = os.pread
    monkeypatch.setattr(os, "pread", lambda *a: calls.append(a[1:]) or pread(*a))
    return calls


@pytest.mark.parametrize("cache, preads", [(64 << 20, 1), (0, 2), (1100, 2)])  # 1100 bytes: one video's readers
def test_a_file_opened_again_reads_no_entry_table(tmp_path, monkeypatch, cache, preads):
    # max_open=1: every read opens its file, as on a dataset larger than the open-file cache
    st = _two_video_store(tmp_path, max_open=1, heap_cache_bytes=cache)
    want = {vid: (st.frames(vid, [3]), st.flow(vid, range(2, 5))) for vid in ("A/v.avi", "B/w.avi")}
    calls = _count_preads(monkeypatch)
    for vid in ("A/v.avi", "B/w.avi", "A/v.avi"):
        calls.clear()
        np.testing.assert_array_equal(st.frames(vid, [3]), want[vid][0])
        assert len(calls) == preads  # the item (and, with no cache, its dataset's entries again)
        np.testing.assert_array_equal(st.flow(vid, range(2, 5)), want[vid][1])


def test_a_file_rewritten_since_is_located_afresh(tmp_path, monkeypatch):
    st = _two_video_store(tmp_path, max_open=1)
    path = st.root / "videos" / "A" / "v.avi.h5"
    st.frames("A/v.avi", [3]), st.frames("B/w.avi", [3])  # A closed, its readers kept
    calls = _count_preads(monkeypatch)
    os.utime(path, ns=(10**18, 10**18))  # the same bytes, but another modification time: maybe another file
    st.frames("A/v.avi", [3])
    assert len(calls) == 2  # its entries read again
    monkeypatch.undo()
    # replaced by another video of the same length: its own bytes, never the old file's
    new = tmp_path / "new.h5"
    _video_file(new, num_frames=6, size=(40, 32))
    with h5py.File(new, "r+") as f:
        f["rgb"][3] = f["rgb"][0]  # frame 3 now holds frame 0's picture
    st.frames("B/w.avi", [3])
    os.replace(new, path)
    got = st.frames("A/v.avi", [3])
    np.testing.assert_array_equal(got, Store(st.root).frames("A/v.avi", [3]))
    np.testing.assert_array_equal(got, Store(st.root).frames("A/v.avi", [0]))


def test_a_forked_worker_closes_the_descriptors_it_inherits_and_keeps_what_they_found(tmp_path):
    st = _two_video_store(tmp_path)
    st.frames("A/v.avi", [1]), st.frames("B/w.avi", [1])  # both open in the parent

    def video_fds() -> list[str]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:  # the listing's own descriptor, closed by now
                continue
            if target.startswith(str(st.root)):  # (not other tests' stores)
                out.append(os.path.basename(target))
        return sorted(out)

    assert video_fds() == ["v.avi.h5", "w.avi.h5"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker: reads A, keeps no copy of B's descriptor
        calls, pread = [], os.pread
        os.pread = lambda *a: calls.append(a) or pread(*a)
        st.frames("A/v.avi", [2])  # what the parent found in A is inherited: no entries read again
        os.write(w, f"{','.join(video_fds())} {len(calls)}".encode())
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(r, 100) == b"v.avi.h5 1"
    assert video_fds() == ["v.avi.h5", "w.avi.h5"]  # the parent's stay open
    np.testing.assert_array_equal(st.frames("B/w.avi", [1]), Store(st.root).frames("B/w.avi", [1]))


def test_a_file_refused_at_open_gives_its_own_error(tmp_path):
    path = tmp_path / "v.h5"
    _video_file(path)
    with h5py.File(path, "r+") as f:
        f.attrs["num_frames"] = -3
    with pytest.raises(StoreError, match=r"v\.h5.*num_frames"):
        VideoFile(path)
