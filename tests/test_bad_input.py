"""Bad input: every kind of broken video or dataset entry in one batch, which carries on; bad arguments."""
from __future__ import annotations

import os

import pytest

from conftest import make_dataset, read_store_file, run_flowprep, textured_frames, write_video
from flowprep.cli import main
from flowprep.store import Store

GOOD = ["Down/v_Down_g01_c01.avi", "Down/v_Down_g02_c01.avi", "Right/v_Right_g01_c01.avi",
        "Right/v_Right_g02_c01.avi", "Right/v_Right long name with spaces.avi", "Café Jump/v_ü ñ 雪.avi"]
# id -> a pattern of the reason it must fail with
BAD = {
    "Right/corrupt.avi": "cannot open it as a video",
    "Right/truncated.avi": "truncated: the header says 40 frames",
    "Right/zero_frames.avi": "no frame could be decoded",
    "Right/one_frame.avi": "only 1 frame",
    "Right/empty.avi": "empty file",
    "Right/notes.txt": "cannot open it as a video",
    "Right/dangling.avi": "no such file",
    "Right/v_Right_gone.avi": "listed in trainlist01.txt but no such file",
    "Stranger/v_Stranger_g01.avi": "unknown class 'Stranger'",
    "Right/v_Right_g01_c01.avi (duplicate in trainlist01.txt)": "duplicate entry in trainlist01.txt",
}


def _bad_dataset(root):
    root = make_dataset(root, per_class=2)  # Down/Right g01 train, g02 test
    r = root / "Right"
    (r / "corrupt.avi").write_bytes(os.urandom(4000))
    write_video(r / "long.avi", textured_frames(40, (48, 40), 2, 0, seed=8))
    data = (r / "long.avi").read_bytes()
    (r / "truncated.avi").write_bytes(data[: len(data) // 2])  # the header still says 40 frames
    (r / "long.avi").unlink()
    write_video(r / "zero_frames.avi", textured_frames(1)[:0])  # a valid container holding no frame
    write_video(r / "one_frame.avi", textured_frames(1))
    (r / "empty.avi").write_bytes(b"")
    (r / "notes.txt").write_text("not a video\n")
    # Unreadable: tests run as root, for whom chmod 000 changes nothing, so a link to nowhere stands in.
    os.symlink(root / "nowhere" / "x.avi", r / "dangling.avi")
    write_video(root / "Stranger" / "v_Stranger_g01.avi", textured_frames(4, seed=9))
    write_video(r / "v_Right long name with spaces.avi", textured_frames(6, (48, 40), 2, 0, seed=10))
    write_video(root / "Café Jump" / "v_ü ñ 雪.avi", textured_frames(6, (48, 40), 1, 1, seed=11))
    lists = root / "ucfTrainTestlist"
    with open(lists / "classInd.txt", "a", encoding="utf-8") as f:
        f.write("3 Café Jump\n")
    with open(lists / "trainlist01.txt", "a", encoding="utf-8") as f:
        f.write("Right/v_Right_gone.avi 2\nRight/v_Right_g01_c01.avi 2\nCafé Jump/v_ü ñ 雪.avi 3\n"
                "Right/v_Right long name with spaces.avi 2\n")
    return root


def _run(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_every_bad_input_kind_in_one_batch(tmp_path, capsys):
    root, store = _bad_dataset(tmp_path / "ds"), tmp_path / "st"
    argv = ["extract", root, "-o", store, "--method", "dis", "--short-side", "0", "--jobs", "1", "--quiet"]
    rc, out, err = _run(argv, capsys)
    assert rc == 1
    assert f"{len(GOOD)} extracted, 0 already done, {len(BAD)} failed" in out
    st = Store(store)
    assert sorted(st.video_ids()) == sorted(GOOD)  # the batch carried on: every good video is there, and only those
    for vid in GOOD:
        assert st.flow(vid, [0]).shape == (1, 40, 48, 2)
    failures = st.failures()
    assert sorted(failures) == sorted(BAD)
    for vid, reason in BAD.items():
        assert reason in failures[vid]["error"], (vid, failures[vid])
        assert (store / "failed" / (vid + ".json")).is_file()
        assert f"{vid}: {failures[vid]['error']}" in err  # printed with its reason
    # Names with spaces and non-ASCII went through to the split and the store file names.
    assert "Café Jump/v_ü ñ 雪.avi" in st.video_ids(1, "train")
    assert st.classes == ["Down", "Right", "Café Jump"] and st.label("Café Jump/v_ü ñ 雪.avi") == 2

    # Rerun: nothing extracted is lost or redone, the failures are still failures.
    before = {v: (store / "videos" / (v + ".h5")).stat() for v in GOOD}
    contents = {v: read_store_file(store / "videos" / (v + ".h5")) for v in GOOD}
    rc, out, err = _run(argv, capsys)
    assert rc == 1 and f"0 extracted, {len(GOOD)} already done, {len(BAD)} failed" in out
    for v in GOOD:
        after = (store / "videos" / (v + ".h5")).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[v].st_ino, before[v].st_mtime_ns), v
        assert read_store_file(store / "videos" / (v + ".h5")) == contents[v]
    assert sorted(Store(store).failures()) == sorted(BAD)

    # Repair one video: the rerun retries it, and its failure record goes.
    (root / "Right" / "corrupt.avi").unlink()
    write_video(root / "Right" / "corrupt.avi", textured_frames(5, (48, 40), 2, 0, seed=12))
    rc, out, err = _run(argv, capsys)
    assert rc == 1 and f"1 extracted, {len(GOOD)} already done, {len(BAD) - 1} failed" in out
    st = Store(store)
    assert "Right/corrupt.avi" in st.video_ids() and "Right/corrupt.avi" not in st.failures()
    assert not (store / "failed" / "Right" / "corrupt.avi.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--size", "12"], "expected WIDTHxHEIGHT"),
    (["--size", "4x4"], "size must be (width, height) of at least 8"),
    (["--method", "nope"], "invalid choice: 'nope'"),
    (["--bound", "-1"], "bound must be positive"),
    (["--jobs", "0"], "jobs must be"),
    (["--threads", "0"], "threads must be at least 1"),
    (["--stride", "0"], "stride must be at least 1"),
    (["--fps", "0"], "fps must be positive"),
    (["--short-side", "4"], "short_side must be at least 8"),
    (["--jpeg-quality", "101"], "jpeg quality must be in 1..100"),
    (["--param", "preset=slow", "--method", "dis"], "preset must be one of"),
    (["--param", "nscales=many"], "takes a int value"),
    (["--param", "noequals"], "expected NAME=VALUE"),
    (["--list", "no_such_list.txt"], "list file not found"),
    (["--splits", "no_such_dir"], "no classInd.txt"),
])
def test_bad_arguments_one_line_exit_2(tiny_dataset, tmp_path, capsys, args, message):
    store = tmp_path / "st"
    rc, out, err = _run(["extract", tiny_dataset, "-o", store, "--quiet", *args], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "error:" in err and message in err, err
    assert not store.exists()  # refused before anything was written


def test_bad_paths_one_line_exit_2(tiny_dataset, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    for argv, message in [
        (["extract", tmp_path / "missing", "-o", tmp_path / "st"], "dataset root is not a directory"),
        (["extract", tiny_dataset, "-o", tmp_path / "a_file", "--quiet"], "a_file"),
        (["info", tmp_path], "not a flowprep store"),
        (["verify", tmp_path / "missing"], "not a flowprep store"),
        (["show", tmp_path, "v.avi", "-o", tmp_path / "x.png"], "not a flowprep store"),
    ]:
        rc, out, err = _run(argv, capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, (argv, err)


def test_bad_argument_from_the_command_line(tmp_path):
    # The real entry point, in a fresh interpreter: no traceback, one line, status 2.
    p = run_flowprep("extract", tmp_path / "missing", "-o", tmp_path / "st", "--bound", "-1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == ["flowprep: error: bound must be positive, got -1.0"]
