"""Frame folders in and out: hand-built denseflow / mmaction2 / TSN trees with a known flow, round trips."""
from __future__ import annotations

import os
import signal
import subprocess
import time

import cv2
import numpy as np
import pytest
import torch

from conftest import flowprep_cmd, make_dataset, read_store, run_flowprep
from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.quantize import step
from flowprep.rawframes import ImportConfig, export_store, import_dataset, jpeg_header
from flowprep.store import Store, open_h5, video_path
from twostream.data import ClipSpec, TrainClips

BOUND = 20.0
H, W = 24, 32


def known_flow(t: int) -> np.ndarray:
    """(H, W, 2) a smooth flow that differs per frame: x a ramp over -12..12 px, y a constant."""
    fx = np.tile(np.linspace(-12, 12, W, dtype=np.float32), (H, 1)) + t * 0.3
    fy = np.full((H, W), -3.7 + t, np.float32)
    return np.stack([fx, fy], -1)


def tsn_codes(f: np.ndarray, bound: float, truncate: bool = False) -> np.ndarray:
    """The codes the other tools write: denseflow rounds, mmaction2's CPU tool truncates (astype(uint8))."""
    v = (np.clip(f, -bound, bound) + bound) * (255 / (2 * bound))
    return (v if truncate else np.rint(v)).astype(np.uint8)


def frame(t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, t])
    return cv2.GaussianBlur((rng.random((H, W, 3)) * 255).astype(np.uint8), (0, 0), 1.0)


def write_folder(folder, *, rgb_prefix="img_", flow_prefixes=("flow_x_", "flow_y_"), start=0, num_rgb=6,
                 num_flow=5, seed=0, truncate=False):
    """One video folder as the tools write it: RGB JPEGs and grey JPEGs of TSN codes of :func:`known_flow`."""
    folder.mkdir(parents=True)
    for k in range(num_rgb):
        cv2.imwrite(str(folder / f"{rgb_prefix}{start + k:05d}.jpg"), frame(k, seed))
    for k in range(num_flow):
        codes = tsn_codes(known_flow(k), BOUND, truncate)
        for c, prefix in enumerate(flow_prefixes):
            cv2.imwrite(str(folder / f"{prefix}{start + k:05d}.jpg"), codes[..., c])


def check_folder_imported(store: Store, vid: str, folder, *, flows, first_flow=0, rgb_prefix="img_",
                          flow_prefixes=("flow_x_", "flow_y_"), start=0, first_rgb=0, truncated=False):
    """The store holds the folder's JPEG bytes unchanged, and the known flow within the quantisation step.

    The step is half a code for rounded codes, a whole one for truncated codes, plus the error the tool's own
    JPEG encoding added to the codes (measured here on the source files: a JPEG of a ramp is not exact).
    """
    n = store.num_frames(vid)
    with open_h5(video_path(store.root, vid)) as f:
        for k in range(n):
            assert bytes(f["rgb"][k]) == (folder / f"{rgb_prefix}{start + first_rgb + k:05d}.jpg").read_bytes()
        for j in range(n - 1):
            for name, prefix in zip(("flow_x", "flow_y"), flow_prefixes):
                src = folder / f"{prefix}{start + first_flow + j:05d}.jpg"
                assert bytes(f[name][j]) == src.read_bytes()
    got = store.flow(vid, range(n - 1))
    assert got.shape == (flows, H, W, 2)
    want = np.stack([known_flow(first_flow + j) for j in range(n - 1)])
    jpeg_codes = max(int(np.abs(cv2.imread(str(folder / f"{p}{start + first_flow + j:05d}.jpg"), cv2.IMREAD_GRAYSCALE)
                                .astype(int) - tsn_codes(want[j], BOUND, truncated)[..., c]).max())
                     for j in range(n - 1) for c, p in enumerate(flow_prefixes))
    assert jpeg_codes <= 2  # quality 95 on a smooth ramp
    assert np.abs(got - want).max() <= ((1.0 if truncated else 0.5) + jpeg_codes) * step(BOUND, "tsn") + 1e-5
    assert store.frames(vid, [0]).shape == (1, H, W, 3)


def test_denseflow_tree_by_hand(tmp_path):
    root = tmp_path / "rawframes"
    for c, cls in enumerate(("Left", "Right")):
        for v in range(2):
            write_folder(root / cls / f"v_{cls}_g0{v}", seed=10 * c + v)
    s = import_dataset(root, tmp_path / "store", ImportConfig(bound=BOUND), jobs=1, progress=False)
    assert s.ok and s.done == 4 and s.pairs == 20
    st = Store(tmp_path / "store")
    assert st.classes == ["Left", "Right"] and st.label("Right/v_Right_g01") == 1
    assert st.config["mapping"] == "tsn" and st.config["bound"] == BOUND and st.config["imported"]["layout"] == "auto"
    assert st.attrs("Left/v_Left_g00")["source_start_index"] == 0
    check_folder_imported(st, "Left/v_Left_g00", root / "Left" / "v_Left_g00", flows=5)
    # Resumable: a second run finds everything done.
    again = import_dataset(root, tmp_path / "store", ImportConfig(bound=BOUND), jobs=1, progress=False)
    assert again.skipped == 4 and again.done == 0


def test_mmaction2_cpu_tool_names_and_truncation(tmp_path):
    root = tmp_path / "rawframes"
    write_folder(root / "Pan" / "clip one", flow_prefixes=("x_", "y_"), start=1, truncate=True)
    write_folder(root / "Pan" / "clip two", flow_prefixes=("x_", "y_"), start=1, seed=3, truncate=True)
    s = import_dataset(root, tmp_path / "store", ImportConfig(bound=BOUND, layout="mmaction2"), jobs=1,
                       progress=False)
    assert s.ok and s.done == 2
    st = Store(tmp_path / "store")
    # Truncated codes read back up to one step low.
    check_folder_imported(st, "Pan/clip one", root / "Pan" / "clip one", flows=5, flow_prefixes=("x_", "y_"),
                          start=1, truncated=True)


def test_tsn_flat_one_based_layout(tmp_path):
    root = tmp_path / "rawframes"
    for name, seed in (("v_Jump_g01_c01", 1), ("v_Jump_g02_c01", 2), ("v_Run_g01_c01", 3)):
        write_folder(root / name, start=1, num_rgb=5, num_flow=5, seed=seed)  # T-1 images and T-1 flows
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 Jump\n2 Run\n")
    (lists / "trainlist01.txt").write_text("Jump/v_Jump_g01_c01.avi 1\nRun/v_Run_g01_c01.avi 2\n")
    (lists / "testlist01.txt").write_text("Jump/v_Jump_g02_c01.avi\n")
    s = import_dataset(root, tmp_path / "store", ImportConfig(bound=BOUND), jobs=1, progress=False)
    assert s.ok and s.done == 3
    st = Store(tmp_path / "store")
    assert st.splits[1] == {"train": ["v_Jump_g01_c01", "v_Run_g01_c01"], "test": ["v_Jump_g02_c01"]}
    assert st.label("v_Run_g01_c01") == 1
    # Images 1..4 are frames 0..3; flow 1 starts at a frame dense_flow did not keep, so flows 2..5 stay.
    with open_h5(video_path(st.root, "v_Run_g01_c01")) as f:
        assert f["frame_index"][:].tolist() == [1, 2, 3, 4, 5]
    check_folder_imported(st, "v_Run_g01_c01", root / "v_Run_g01_c01", flows=4, first_flow=1, start=1)


def test_counts_that_do_not_fit_are_refused_by_name(tmp_path):
    root = tmp_path / "rawframes"
    write_folder(root / "A" / "good")
    write_folder(root / "A" / "short", num_rgb=6, num_flow=3)
    write_folder(root / "A" / "gap")
    (root / "A" / "gap" / "flow_y_00002.jpg").unlink()
    write_folder(root / "A" / "cut")
    p = root / "A" / "cut" / "img_00003.jpg"
    p.write_bytes(p.read_bytes()[:100])
    r = run_flowprep("import-frames", root, "-o", tmp_path / "store", "--bound", 20, "--jobs", 1, "--quiet")
    assert r.returncode == 1, r.stderr
    assert "1 imported" in r.stdout
    assert "A/short: 6 img_, 3 flow_x_ and 3 flow_y_ images: counts do not fit T frames and T-1 flows" in r.stderr
    assert "A/gap: 6 img_, 5 flow_x_ and 4 flow_y_ images, not numbered 0, 1, ... without gaps" in r.stderr
    assert "img_00003.jpg: truncated JPEG" in r.stderr
    st = Store(tmp_path / "store")
    assert set(st.failures()) == {"A/short", "A/gap", "A/cut"} and st.video_ids() == ["A/good"]
    # A stated layout that the files do not follow is refused too.
    r = run_flowprep("import-frames", root, "-o", tmp_path / "s2", "--bound", 20, "--layout", "mmaction2", "--quiet")
    assert r.returncode == 1 and "A/good: no flow images" in r.stderr


def test_bound_is_required_on_the_command_line(tmp_path):
    r = run_flowprep("import-frames", tmp_path, "-o", tmp_path / "store")
    assert r.returncode == 2 and "--bound" in r.stderr


def test_jpeg_header():
    ok, buf = cv2.imencode(".jpg", np.zeros((7, 9), np.uint8))
    assert jpeg_header(buf.tobytes()) == (7, 9, 1)
    with pytest.raises(ValueError, match="not a JPEG"):
        jpeg_header(b"\x89PNG....")


# --- round trips --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A TSN + JPEG store and a symmetric one, extracted from the same tiny dataset."""
    base = tmp_path_factory.mktemp("rt")
    root = make_dataset(base / "ds", per_class=2, num_frames=7, size=(40, 32))
    out = {}
    for mapping in ("tsn", "symmetric"):
        cfg = ExtractConfig(method="dis", decode=DecodeConfig(short_side=None), mapping=mapping)
        assert extract_dataset(root, base / mapping, cfg, jobs=1, progress=False).ok
        out[mapping] = base / mapping
    return out


def batches(store_dir, stream: str) -> list[tuple]:
    st = Store(store_dir)
    spec = ClipSpec(stream, 3 if stream == "temporal" else 1, input_size=16)
    ds = TrainClips(st, st.video_ids(1, "train"), spec, samples_per_video=2, seed=5)
    return [ds[i] for i in range(len(ds))]


def store_items(store_dir, vid: str) -> dict:
    with open_h5(video_path(store_dir, vid)) as f:
        return {name: [bytes(x) for x in f[name][:]] for name in ("rgb", "flow_x", "flow_y")}


@pytest.mark.parametrize("layout", ["denseflow", "mmaction2", "tsn"])
def test_round_trip_tsn_jpeg_store_is_byte_exact(stores, tmp_path, layout):
    src = stores["tsn"]
    s = export_store(src, tmp_path / "out", layout, jobs=1, progress=False)
    assert s.ok and s.byte_exact and s.exported == 4
    back = tmp_path / "back"
    r = import_dataset(tmp_path / "out", back, ImportConfig(bound=BOUND, layout=layout), jobs=1, progress=False,
                       splits_dir=tmp_path / "out" / "annotations")
    assert r.ok and r.done == 4
    a, b = Store(src), Store(back)
    assert a.classes == b.classes
    rename = {v: v[: -len(".avi")] if layout != "tsn" else v.split("/")[1][: -len(".avi")] for v in a.video_ids()}
    for sub in ("train", "test"):
        assert [rename[v] for v in a.splits[1][sub]] == b.splits[1][sub]
    for v, w in rename.items():
        x, y = store_items(src, v), store_items(back, w)
        if layout == "tsn":  # dense_flow keeps no first frame: the rest, and the flows between them, are equal
            assert y["rgb"] == x["rgb"][1:] and y["flow_x"] == x["flow_x"][1:] and y["flow_y"] == x["flow_y"][1:]
        else:
            assert x == y
    if layout != "tsn":
        for stream in ("spatial", "temporal"):
            for (xa, la), (xb, lb) in zip(batches(src, stream), batches(back, stream), strict=True):
                assert la == lb and torch.equal(xa, xb)
    # The mmaction2 lists: "<folder> <num_frames> <label>" per split, frames and flows counted apart.
    v = a.splits[1]["train"][0]
    n = a.num_frames(v) - (1 if layout == "tsn" else 0)
    first = (tmp_path / "out" / "annotations" / "train_split1_rawframes.txt").read_text().splitlines()[0]
    assert first == f"{rename[v]} {n} {a.label(v)}"
    flow_list = (tmp_path / "out" / "annotations" / "train_split1_rawframes_flow.txt").read_text().splitlines()
    assert flow_list[0].split()[1] == str(a.num_frames(v) - 1)


def test_round_trip_symmetric_store_within_measured_error(stores, tmp_path):
    src = stores["symmetric"]
    s = export_store(src, tmp_path / "out", "denseflow", jobs=1, progress=False)
    assert s.ok and not s.byte_exact
    assert 0 < s.mean_error <= step(BOUND, "tsn") and s.mean_error <= s.max_error
    r = import_dataset(tmp_path / "out", tmp_path / "back", ImportConfig(bound=BOUND), jobs=1, progress=False,
                       splits_dir=tmp_path / "out" / "annotations")
    assert r.ok
    a, b = Store(src), Store(tmp_path / "back")
    for v in a.video_ids():
        w = v[: -len(".avi")]
        fa, fb = a.flow(v, range(a.num_frames(v) - 1)), b.flow(w, range(b.num_frames(w) - 1))
        inside = np.abs(fa) <= BOUND
        assert np.abs(fa - fb)[inside].max() <= s.max_error + 1e-5
        assert np.array_equal(a.frames(v, [0, 3]), b.frames(w, [0, 3]))  # the RGB JPEG bytes travel unchanged


def test_export_cli_says_it_requantised(stores, tmp_path):
    r = run_flowprep("export", stores["symmetric"], "-o", tmp_path / "out", "--layout", "mmaction2", "--jobs", 1,
                     "--quiet")
    assert r.returncode == 0, r.stderr
    assert "RE-QUANTISED to TSN codes at bound 20" in r.stdout and "px mean" in r.stdout
    assert (tmp_path / "out" / "Down" / "v_Down_g01_c01" / "x_00001.jpg").is_file()
    r = run_flowprep("export", stores["tsn"], "-o", tmp_path / "out2", "--layout", "tsn", "--jobs", 1, "--quiet")
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert sorted(p.name for p in (tmp_path / "out2" / "v_Down_g01_c01").iterdir())[:2] == ["flow_x_00001.jpg",
                                                                                             "flow_x_00002.jpg"]


def test_exported_mmaction2_lists_import_back_with_the_same_splits(stores, tmp_path):
    out, ann = tmp_path / "out", tmp_path / "out" / "annotations"
    assert export_store(stores["tsn"], out, "mmaction2", jobs=1, progress=False).ok
    r = run_flowprep("import-frames", out, "-o", tmp_path / "back", "--bound", 20, "--layout", "mmaction2",
                     "--train-list", ann / "train_split1_rawframes.txt", "--test-list",
                     ann / "test_split1_rawframes.txt", "--classes", ann / "classInd.txt", "--jobs", 1, "--quiet")
    assert r.returncode == 0, r.stderr
    a, b = Store(stores["tsn"]), Store(tmp_path / "back")
    assert b.classes == a.classes
    for sub in ("train", "test"):
        assert b.splits[1][sub] == [v[: -len(".avi")] for v in a.splits[1][sub]]


def test_kill_during_import_then_resume_gives_the_same_store(tmp_path):
    root = tmp_path / "rawframes"
    for v in range(8):
        write_folder(root / f"C{v % 2}" / f"v{v:02d}", num_rgb=10, num_flow=9, seed=v)
    cmd = lambda store: flowprep_cmd("import-frames", root, "-o", store, "--bound", 20, "--jobs", 2, "--quiet")  # noqa: E731
    assert subprocess.run(cmd(tmp_path / "whole"), capture_output=True).returncode == 0
    for _ in range(2):  # killed (parent and workers, as a crash would) once some videos are in, then again
        p = subprocess.Popen(cmd(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline and not list((tmp_path / "killed").rglob("*.h5")):
            time.sleep(0.005)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    r = subprocess.run(cmd(tmp_path / "killed"), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not list((tmp_path / "killed").rglob("*.tmp-*"))
    assert read_store(tmp_path / "killed") == read_store(tmp_path / "whole")
