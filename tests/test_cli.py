"""The ``flowprep`` commands other than extract's failure handling: info, verify (and what it catches), show,
methods; and the colour coding ``show`` uses."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from conftest import make_dataset, run_flowprep, textured_frames, write_video
from flowprep.cli import main
from flowprep.store import open_h5
from flowprep.visualize import flow_to_color

VID = "Right/v_Right_g01_c01.avi"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds")
    path = tmp_path_factory.mktemp("st") / "st"
    assert main(["extract", str(root), "-o", str(path), "--method", "dis", "--short-side", "0", "--jobs", "1",
                 "--quiet"]) == 0
    return path


def test_info(store, capsys):
    capsys.readouterr()
    assert main(["info", str(store)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "videos     6 done, 0 failed, 0 pending, of 6 found" in lines
    assert "frames     48 RGB, 42 flow" in lines
    assert "classes    2: Down, Right" in lines
    assert "split 1    4 train, 2 test (ucf101)" in lines
    assert "method     dis (preset=medium)" in lines
    assert "flow       jpeg, mapping symmetric, bound 20.0 px; rgb jpeg" in lines
    # Bytes per frame: the stored JPEG bytes, counted here independently.
    rgb = flow = 0
    for p in (store / "videos").rglob("*.h5"):
        with open_h5(p) as f:
            rgb += sum(len(b) for b in f["rgb"][:])
            flow += sum(len(b) for name in ("flow_x", "flow_y") for b in f[name][:])
    assert f"bytes      {rgb / 48:.0f} per RGB frame, {flow / 42:.0f} per flow frame (x and y)" in lines


def test_verify_good_store(store, capsys):
    assert main(["verify", str(store), "--quiet"]) == 0
    assert "verified 6 videos: 0 problems" in capsys.readouterr().out


@pytest.mark.parametrize("where", [0.2, 0.35, 0.5, 0.65, 0.8, 0.95])
def test_verify_finds_junk_in_a_video_file(store, tmp_path, capsys, where):
    # Junk in the middle of a file mostly lands in JPEG bytes, which decoders accept with damage; only the
    # stored sha256 catches that.
    damaged = tmp_path / "st"
    shutil.copytree(store, damaged)
    path = damaged / "videos" / (VID + ".h5")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(int(size * where) - 32)
        f.write(np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes())
    assert main(["verify", str(damaged), "--quiet"]) == 1
    cap = capsys.readouterr()
    problems = [line for line in cap.err.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and problems[0].startswith(f"PROBLEM {VID}: "), cap.err
    assert "verified 6 videos: 1 problems" in cap.out


def test_verify_finds_truncated_and_missing_files(store, tmp_path, capsys):
    damaged = tmp_path / "st"
    shutil.copytree(store, damaged)
    path = damaged / "videos" / (VID + ".h5")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (damaged / "videos" / "Down" / "v_Down_g01_c01.avi.h5").unlink()
    assert main(["verify", str(damaged), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"PROBLEM {VID}: " in err and "PROBLEM Down/v_Down_g01_c01.avi: " in err


def test_verify_fails_on_a_store_with_failures(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", per_class=1)
    write_video(root / "Right" / "one_frame.avi", textured_frames(1))
    store = tmp_path / "st"
    assert main(["extract", str(root), "-o", str(store), "--method", "dis", "--short-side", "0", "--jobs", "1",
                 "--quiet"]) == 1
    capsys.readouterr()
    assert main(["verify", str(store), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["PROBLEM Right/one_frame.avi: failed: only 1 frame after subsampling; "
                                        "flow needs at least 2"]
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "videos     2 done, 1 failed, 0 pending, of 3 found" in out
    assert "FAILED     Right/one_frame.avi: only 1 frame" in out


def test_show_writes_a_png(store, tmp_path):
    out = tmp_path / "sheet.png"
    p = run_flowprep("show", store, VID, "-o", out)  # the real entry point, once
    assert p.returncode == 0, p.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    # 6 evenly spaced flow frames of 7 (0, 1, 2, 4, 5, 6): frames on top, flow below, each 48x40 enlarged x4 (the
    # smallest whole factor that gives a 160-pixel short side), then the key column, one tile high.
    assert sheet.shape == (2 * 160, 6 * 192 + 160, 3)
    flow_part = sheet[160 + 40:320 - 40, :6 * 192].reshape(-1, 3).astype(int)
    r, g, b = np.median(flow_part, axis=0)
    assert r > g + 40 and r > b + 40, (r, g, b)  # rightward motion is red on the Middlebury wheel
    assert "tiles x4" in p.stdout

    # --scale 1 keeps the stored size; --animation writes frames beside flow
    gif = tmp_path / "anim.gif"
    assert main(["show", str(store), VID, "-o", str(out), "--scale", "1", "--frames", "3",
                 "--animation", str(gif)]) == 0
    assert cv2.imread(str(out)).shape == (80, 3 * 48 + 40, 3)
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames == 7 and im.size == (48 + 48 + 40, 40)
    assert main(["show", str(store), VID, "-o", str(out), "--animation", str(tmp_path / "a.webm")]) == 2


def test_flow_colour_wheel():
    def colour(u, v):
        flow = np.zeros((4, 4, 2), np.float32)
        flow[1:3, 1:3] = u, v  # the rest is still and sets no scale
        return flow_to_color(flow)[1, 1].astype(int)

    assert (flow_to_color(np.zeros((2, 2, 2), np.float32)) == 255).all()  # still is white
    r, g, b = colour(3, 0)
    assert r == 255 and g < 30 and b < 30  # right: red
    r, g, b = colour(-3, 0)
    assert r < 30 and g > 200 and b > 150  # left: cyan
    r, g, b = colour(0, 3)
    assert r > 200 and g > 100 and b < 30  # down: orange/yellow
    r, g, b = colour(0, -3)
    assert b > 200 and r > g  # up: blue/violet
    half = flow_to_color(np.array([[[1.0, 0.0], [2.0, 0.0]]], np.float32))
    assert half[0, 0, 1] > half[0, 1, 1]  # half the magnitude, half the saturation


def test_methods(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for line in ["tvl1: OpenCV contrib DualTVL1", "farneback: OpenCV Farneback", "dis: OpenCV DIS", "preset=medium",
                 "tau=0.25, lambda_=0.15, theta=0.3, nscales=5, warps=5"]:
        assert line in out
