"""A damaged, edited or crafted store is repaired or refused, never trusted: the extract rerun's checks,
``verify --repair``, settings recovered from the files, named errors for bad JSON, and bounded memory for
files whose declared sizes lie."""
from __future__ import annotations

import json
import shutil
import sys

import h5py
import numpy as np
import pytest

from conftest import make_dataset, read_store, read_store_file, run_flowprep, run_limited
from flowprep.cli import main
from flowprep.store import Store, StoreError, content_digest

VID = "Right/v_Right_g01_c01.avi"
ARGS = ["--method", "dis", "--short-side", "0", "--jobs", "1", "--quiet"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """(dataset root, a clean store of it)."""
    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds")
    store = tmp_path_factory.mktemp("st") / "st"
    assert main(["extract", str(root), "-o", str(store), *ARGS]) == 0
    return root, store


@pytest.fixture
def copy(clean, tmp_path):
    root, store = clean
    shutil.copytree(store, tmp_path / "st")
    return root, tmp_path / "st"


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _edit(store, vid, fn, *, reseal=True):
    """Change a video file with ``fn(h5py.File)``; ``reseal`` recomputes its sha256 so that only the other checks
    can catch the change (what someone crafting a file would do)."""
    with h5py.File(store / "videos" / (vid + ".h5"), "r+") as f:
        fn(f)
        if reseal:
            f.attrs["sha256"] = content_digest(f)


def _jpeg_declaring(buf: np.ndarray, width: int, height: int) -> np.ndarray:
    b = bytearray(np.asarray(buf).tobytes())
    i = b.index(b"\xff\xc0")  # baseline start-of-frame: length(2) precision(1) height(2) width(2)
    b[i + 5:i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return np.frombuffer(bytes(b), np.uint8)


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_rerun_extracts_damaged_files_again(clean, copy, capsys, damage):
    root, store = copy
    path = store / "videos" / (VID + ".h5")
    data = bytearray(path.read_bytes())
    if damage == "flipped":  # 20 bytes in the middle of the data: HDF5 reads them without complaint
        rng = np.random.default_rng(1)
        for i in rng.choice(np.arange(len(data) // 3, 2 * len(data) // 3), 20, replace=False):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    rc, out, err = _run(["extract", root, "-o", store, *ARGS], capsys)
    assert rc == 0, err
    assert f"DAMAGED {VID}: " in err and "extracting it again" in err
    assert "1 extracted, 5 already done, 0 failed, of 6" in out
    assert f"1 damaged files were found and extracted again: {VID}" in out
    assert read_store(store) == read_store(clean[1])  # the repaired file is the one a clean run makes
    rc, out, err = _run(["verify", store, "--quiet"], capsys)
    assert rc == 0 and "verified 6 videos: 0 problems" in out


def test_rerun_quick_check_catches_structure_not_flipped_bytes(copy, capsys):
    root, store = copy
    _edit(store, VID, lambda f: f.attrs.__setitem__("num_frames", 7))  # datasets hold 8
    rc, out, err = _run(["extract", root, "-o", store, *ARGS, "--check", "quick"], capsys)
    assert rc == 0 and f"DAMAGED {VID}: dataset 'frame_index' has shape (8,), expected (7,)" in err


def test_verify_repair(clean, copy, capsys):
    root, store = copy
    path = store / "videos" / (VID + ".h5")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 20] = bytes(20)
    path.write_bytes(bytes(data))
    (store / "videos" / "Down" / "v_Down_g01_c01.avi.h5").unlink()
    rc, out, err = _run(["verify", store, "--quiet"], capsys)
    assert rc == 1 and "verified 6 videos: 2 problems" in out
    rc, out, err = _run(["verify", store, "--quiet", "--repair", "--jobs", "1"], capsys)
    assert rc == 0, err
    assert f"REPAIR {VID}: " in err and "REPAIR Down/v_Down_g01_c01.avi: " in err
    assert "repaired 2 of 2 damaged videos" in out and "verified 6 videos: 0 problems" in out
    assert read_store(store) == read_store(clean[1])


def test_store_json_deleted_then_other_settings_refused(clean, copy, capsys):
    root, store = copy
    (store / "store.json").unlink()
    rc, out, err = _run(["extract", root, "-o", store, "--method", "farneback", "--size", "32x32", "--jobs", "1",
                         "--quiet"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "made with other settings (method, params, decode: 'dis' in " in err
    assert "the store.json being missing, 'farneback' now" in err
    assert not (store / "store.json").exists() and read_store(store) == read_store(clean[1])  # nothing touched
    # The same settings again: store.json is recovered, the files kept.
    rc, out, err = _run(["extract", root, "-o", store, *ARGS], capsys)
    assert rc == 0 and "0 extracted, 6 already done" in out
    old, new = (json.loads((s / "store.json").read_text()) for s in (clean[1], store))
    assert old == new


def test_store_json_deleted_and_files_without_settings_refused(copy, capsys):
    root, store = copy
    (store / "store.json").unlink()
    for p in (store / "videos").rglob("*.h5"):
        with h5py.File(p, "r+") as f:
            del f.attrs["settings"]  # as an older flowprep wrote them
    rc, out, err = _run(["extract", root, "-o", store, *ARGS], capsys)
    assert rc == 2 and "store.json: missing, and no video file of the store records its settings" in err


def test_edited_store_json_bound_is_refused(copy, capsys):
    root, store = copy
    cfg = json.loads((store / "store.json").read_text())
    cfg["bound"] = 5.0
    (store / "store.json").write_text(json.dumps(cfg))
    rc, out, err = _run(["verify", store, "--quiet"], capsys)
    assert rc == 1 and "verified 6 videos: 6 problems" in out
    assert f"{VID}.h5: made with bound 20.0, but store.json says 5.0 (store.json edited" in err
    with pytest.raises(StoreError, match="made with bound 20.0, but store.json says 5.0 .*and 3 more files fail"):
        Store(store).check_videos(Store(store).video_ids(1, "train"))  # what training runs first


@pytest.mark.parametrize("name", ["store.json", "index.json", "manifest.json"])
def test_invalid_json_names_the_file(copy, capsys, name):
    root, store = copy
    (store / name).write_text('{"schema": 1, "bound": ')
    for cmd in ("info", "verify"):
        rc, out, err = _run([cmd, store], capsys)
        assert rc == 2 and err.strip().splitlines() == [f"flowprep: error: {store / name}: not valid JSON "
                                                        "(Expecting value: line 1 column 24 (char 23)); the file is damaged"]
    rc, out, err = _run(["extract", root, "-o", store, *ARGS], capsys)
    if name == "store.json":  # the settings: refused, named
        assert rc == 2 and f"{store / name}: not valid JSON" in err
    else:  # derived files: rewritten by the rerun
        assert rc == 0 and "0 extracted, 6 already done" in out
        assert _run(["verify", store, "--quiet"], capsys)[0] == 0


def test_index_with_a_wrong_frame_count(copy, capsys):
    root, store = copy
    index = json.loads((store / "index.json").read_text())
    index[VID]["num_frames"] = 50
    (store / "index.json").write_text(json.dumps(index))
    rc, out, err = _run(["verify", store, "--quiet"], capsys)
    assert rc == 1 and f"index.json: video '{VID}' has num_frames 50 there, but " in err
    with pytest.raises(StoreError, match="has num_frames 50 there"):
        Store(store).check_videos([VID])  # what training runs first
    with pytest.raises(StoreError, match=r"rgb holds 8 items but num_frames 50 \(from the store's index.json\)"):
        Store(store).frames(VID, [0])  # a plain read: the dataset lengths
    rc, out, err = _run(["extract", root, "-o", store, *ARGS], capsys)  # the rerun rebuilds the index
    assert rc == 0 and json.loads((store / "index.json").read_text())[VID]["num_frames"] == 8


def _jpeg_bomb(*names):
    def craft(f):
        for name in names:
            d = f[name]
            for i in range(len(d)):
                d[i] = _jpeg_declaring(d[i], 30000, 30000)
    return craft


def _vlen_1e8(f):
    del f["rgb"]
    f.create_dataset("rgb", (100_000_000,), dtype=h5py.vlen_dtype(np.uint8))


def _compressed(f):
    data = f["frame_index"][:]
    del f["frame_index"]
    f.create_dataset("frame_index", data=data, compression="gzip")


CRAFTED = {  # how the file is made -> the named problem
    "rgb jpeg 30000x30000": (_jpeg_bomb("rgb"), "rgb[0]: a stored image holds a 30000x30000 jpeg image with 3 "
                                                "channels, not a jpeg image of 48x40 with 3 or 1 (damaged or crafted file)"),
    "flow jpeg 30000x30000": (_jpeg_bomb("flow_x", "flow_y"), "flow_x[0]: a stored image holds a 30000x30000 jpeg "
                              "image with 1 channels, not a jpeg image of 48x40 with 1 (damaged or crafted file)"),
    "rgb 1e8 entries": (_vlen_1e8, "dataset 'rgb' has shape (100000000,), expected (8,) from the file's attributes"),
    "num_frames 1e9": (lambda f: f.attrs.__setitem__("num_frames", 10 ** 9),
                       "attribute num_frames=1000000000 is not an integer in 2..1000000"),
    "height 1e5": (lambda f: f.attrs.__setitem__("height", 100_000),
                   "attribute height=100000 is not an integer in 1..8192"),
    "flow_x missing": (lambda f: f.__delitem__("flow_x"), "dataset 'flow_x' is missing"),
    "rgb float": (lambda f: (f.__delitem__("rgb"), f.create_dataset("rgb", data=np.zeros(8, np.float32))),
                  "dataset 'rgb' has dtype float32, expected variable-length uint8"),
    "frame_index text": (lambda f: (f.__delitem__("frame_index"),
                                    f.create_dataset("frame_index", data=np.array([b"x"] * 8))),
                         "dataset 'frame_index' has dtype |S1, expected integers"),
    "gzip": (_compressed, "dataset 'frame_index' is compressed or filtered, which flowprep never writes"),
    "bound text": (lambda f: f.attrs.__setitem__("bound", "20"), "attribute bound='20' is not a positive number"),
    "other video": (lambda f: f.attrs.__setitem__("id", "x.avi"), "holds video 'x.avi', not '{vid}'"),
}

# For each crafted video: the check training runs first (Store.check_videos), then a plain read of frames and of
# flow by a fresh Store (as `show` or a user's script does); then the peak memory (KiB).
READER = """
import resource, sys
from flowprep.store import Store, StoreError
for vid in sys.argv[2:]:
    try:
        Store(sys.argv[1]).check_videos([vid])
        print("CHECKED")
    except StoreError as e:
        print("REFUSED", str(e).split("; 'flowprep verify")[0])
    st = Store(sys.argv[1])
    for read in (lambda: st.frames(vid, [0, 1]), lambda: st.flow(vid, [0, 1])):
        try:
            read()
            print("READ")
        except StoreError as e:
            print("REFUSED", e)
print("MAXRSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """(root, store, {kind: video id}): a store with one crafted file per kind of CRAFTED, and one good video."""
    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds", per_class=6)
    store = tmp_path_factory.mktemp("st") / "st"
    assert main(["extract", str(root), "-o", str(store), *ARGS]) == 0
    ids = sorted(p.relative_to(store / "videos").as_posix()[:-3] for p in (store / "videos").rglob("*.h5"))
    kinds = dict(zip(CRAFTED, ids))
    for kind, vid in kinds.items():
        # not resealed: 1e8 entries (resealing would read them), and the datasets content_digest refuses to read
        _edit(store, vid, CRAFTED[kind][0], reseal=kind not in ("rgb 1e8 entries", "rgb float", "frame_index text",
                                                                "gzip"))
    return root, store, kinds


def test_crafted_files_refused_in_bounded_memory(crafted):
    root, store, kinds = crafted
    problems = {vid: f"{store / 'videos' / (vid + '.h5')}: {CRAFTED[k][1].format(vid=vid)}" for k, vid in kinds.items()}
    # In a process limited to 1 GiB of address space (a Python with cv2 and h5py takes ~320 MiB): the files
    # declare up to 2.7 GB per frame (30000x30000x3), 1e8 entries or 1e9 frames.
    r = run_limited([sys.executable, "-c", READER, store, *kinds.values()], memory_mb=1024)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    lines = r.stdout.splitlines()
    for i, (kind, vid) in enumerate(kinds.items()):
        check, rgb, flow = lines[3 * i:3 * i + 3]
        refused = f"REFUSED {problems[vid]}"
        if kind == "rgb jpeg 30000x30000":  # images are checked when they are decoded
            assert (check, rgb, flow) == ("CHECKED", refused, "READ")
        elif kind == "flow jpeg 30000x30000":
            assert (check, rgb, flow) == ("CHECKED", "READ", refused)
        else:  # the file's checks refuse it; a plain read uses the store's own facts and the dataset shapes
            assert check == refused, (kind, r.stdout)
            for line in (rgb, flow):
                assert line == "READ" or line.startswith(f"REFUSED {store / 'videos' / (vid + '.h5')}: "), line
    # peak resident memory well under one crafted frame (2.7 GB); one run in a loaded session peaked at 611 MB
    assert int(lines[-1].split()[1]) < 800_000, lines[-1]
    r = run_limited([sys.executable, "-m", "flowprep", "verify", store, "--quiet"], memory_mb=1024)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert sorted(r.stderr.splitlines()) == sorted(f"PROBLEM {vid}: {p}" for vid, p in problems.items())
    assert f"verified 12 videos: {len(kinds)} problems" in r.stdout
    r = run_limited([sys.executable, "-m", "flowprep", "info", store], memory_mb=1024)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    r = run_flowprep("extract", root, "-o", store, *ARGS)  # and the rerun extracts them again
    assert r.returncode == 0, r.stderr
    assert sorted(line for line in r.stderr.splitlines() if line.startswith("DAMAGED")) == sorted(
        f"DAMAGED {vid}: {CRAFTED[k][1].format(vid=vid)}; extracting it again" for k, vid in kinds.items())
    assert run_flowprep("verify", store, "--quiet").returncode == 0
