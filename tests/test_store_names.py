"""Video names that the store cannot use as file names as they are: too long, or not UTF-8.

Each must leave the batch running: the good videos beside it are extracted, a rerun knows which are done.
"""
from __future__ import annotations

import json
import os

from conftest import run_flowprep, textured_frames, write_video
from flowprep.store import NAME_MAX_BYTES, Store, failure_path, store_name, video_path

LONG = "A/" + "L" * 236 + ".avi"  # a 240-character name
LONGEST = "A/" + "é" * 125 + "x.avi"  # 255 bytes in UTF-8: the longest name ext4 takes
GOOD = ["A/a0.avi", "B/b0.avi", LONG, LONGEST]


def _dataset(root):
    for i, vid in enumerate(GOOD):
        write_video(root / vid, textured_frames(4, (32, 24), 1, 0, seed=i))
    (root / "B" / ("N" * 251 + ".avi")).write_bytes(b"not a video")  # a long name that fails
    return root


def _files(store):
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())


def test_store_names_fit_the_file_system():
    assert store_name("A/a0.avi") == "A/a0.avi"  # readable when it fits
    for vid in (LONG, LONGEST, "../x.avi", "/etc/x", "A//x", "#hashed/x", "A/bad\udcff.avi", "A/" * 600 + "x"):
        name = store_name(vid)
        assert name.startswith("#hashed/") and len(name) == len("#hashed/") + 32, vid
    assert store_name(LONG) != store_name(LONGEST)
    # Every part of a readable name leaves room for the longest suffix (".json.tmp-<pid>") under 255 bytes.
    assert NAME_MAX_BYTES + len(".json.tmp-4194304") <= 255
    edge = "A/" + "x" * NAME_MAX_BYTES
    assert store_name(edge) == edge and store_name(edge + "x") != edge + "x"
    assert failure_path("st", "../x.avi").parent.parent == failure_path("st", "a").parent  # inside failed/


def test_long_names_do_not_stop_the_batch(tmp_path):
    root, store = _dataset(tmp_path / "ds"), tmp_path / "st"
    bad = "B/" + "N" * 251 + ".avi"
    args = ["extract", root, "-o", store, "--method", "farneback", "--short-side", "0", "--jobs", "1", "--quiet"]
    r = run_flowprep(*args)
    assert r.returncode == 1, r.stderr
    assert "4 extracted, 0 already done, 1 failed, of 5" in r.stdout
    assert f"{bad}: OpenCV cannot open it as a video" in r.stderr
    st = Store(store)
    assert sorted(st.video_ids()) == sorted(GOOD)
    for vid in GOOD:
        assert st.flow(vid, [0]).shape == (1, 24, 32, 2)
        assert st.attrs(vid)["id"] == vid  # the full id is inside the file
    assert video_path(store, LONG).parent.name == "#hashed"
    assert json.loads(failure_path(store, bad).read_text())["id"] == bad
    assert set(st.failures()) == {bad}
    assert all(len(part.encode()) <= 255 for f in _files(store) for part in f.split("/"))
    # The rerun finds what is done, by the same names.
    before = _files(store)
    r = run_flowprep(*args)
    assert r.returncode == 1 and "0 extracted, 4 already done, 1 failed, of 5" in r.stdout, r.stdout + r.stderr
    assert _files(store) == before


def test_a_non_utf8_name_fails_alone(tmp_path):
    root, store = tmp_path / "ds", tmp_path / "st"
    for vid in ("A/a0.avi", "A/a1.avi"):
        write_video(root / vid, textured_frames(4, (32, 24), 1, 0))
    os.rename(root / "A" / "a1.avi", os.fsencode(root / "A") + b"/bad\xff\xfe.avi")  # a good video, badly named
    args = ["extract", root, "-o", store, "--method", "farneback", "--short-side", "0", "--jobs", "1", "--quiet"]
    for rerun in (False, True):
        r = run_flowprep(*args)
        assert r.returncode == 1, r.stderr
        assert f"{int(not rerun)} extracted, {int(rerun)} already done, 1 failed, of 2" in r.stdout
        assert "A/bad\\xff\\xfe.avi: the file name is not valid UTF-8" in r.stderr
        assert not list(store.rglob("*.tmp-*"))  # no manifest.json.tmp-PID left behind
        st = Store(store)
        assert st.video_ids() == ["A/a0.avi"]
        assert list(st.failures()) == ["A/bad\\xff\\xfe.avi"]  # the id round-trips through JSON
