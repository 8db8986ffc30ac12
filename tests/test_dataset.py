"""Dataset discovery: class folders, UCF101 and HMDB51 split files, list files, and the problems they report."""
from __future__ import annotations

from pathlib import Path

import pytest

from flowprep.dataset import DatasetError, discover


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")  # discovery does not decode: any file stands in for a video


def test_ucf101_layout(tiny_dataset):
    ds = discover(tiny_dataset)
    assert ds.split_source == "ucf101"
    assert ds.classes == ["Down", "Right"]  # classInd order, labels 0-based
    assert {v.id: (v.label, v.class_name) for v in ds.videos} == {
        f"{c}/v_{c}_g{g:02d}_c01.avi": (i, c) for i, c in enumerate(ds.classes) for g in (1, 2, 3)}
    assert ds.splits == {1: {"train": ["Down/v_Down_g01_c01.avi", "Down/v_Down_g02_c01.avi",
                                       "Right/v_Right_g01_c01.avi", "Right/v_Right_g02_c01.avi"],
                             "test": ["Down/v_Down_g03_c01.avi", "Right/v_Right_g03_c01.avi"]}}
    assert ds.problems == []


def test_ucf101_problems(tmp_path):
    root = tmp_path / "ucf"
    _touch(root, "A/a1.avi", "A/a2.avi", "B/b1.avi", "C/c1.avi", "A/.hidden.avi")
    (root / "A" / "sub").mkdir()  # directories inside a class folder are not videos
    lists = root / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 A\n2 B\n")
    (lists / "trainlist01.txt").write_text("A/a1.avi 1\nA/a1.avi 1\nA/gone.avi 1\nZ/z.avi 3\nB/b1.avi 2\n")
    (lists / "testlist01.txt").write_text("A\\a2.avi\n")
    ds = discover(root)
    assert [v.id for v in ds.videos] == ["A/a1.avi", "A/a2.avi", "B/b1.avi"]
    assert ds.splits[1] == {"train": ["A/a1.avi", "B/b1.avi"], "test": ["A/a2.avi"]}
    problems = {p["id"]: p["problem"] for p in ds.problems}
    assert "unknown class 'C'" in problems["C/c1.avi"]
    assert "unknown class 'Z'" in problems["Z/z.avi"]
    assert "no such file" in problems["A/gone.avi"]
    dup = [p for p in ds.problems if "duplicate" in p["problem"]]
    assert len(dup) == 1 and "trainlist01.txt" in dup[0]["problem"]
    # The duplicate's record must not take the id of the video, which is fine and gets extracted.
    assert dup[0]["id"] != "A/a1.avi" and dup[0]["id"].startswith("A/a1.avi")
    assert len(ds.problems) == 4


def test_hmdb51_layout(tmp_path):
    root = tmp_path / "hmdb"
    _touch(root, "jump/j1.avi", "jump/j2.avi", "jump/j3.avi", "run/r1.avi", "run/r2.avi")
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "jump_test_split1.txt").write_text("j1.avi 1\nj2.avi 2\nj3.avi 0\nj1.avi 1\n")
    (splits / "run_test_split1.txt").write_text("r1.avi 1 \nr2.avi 2\nr9.avi 1\n")
    (splits / "run_test_split2.txt").write_text("r1.avi 2\nr2.avi 1\n")
    (splits / "jump_test_split2.txt").write_text("j1.avi 2\nj2.avi 1\nj3.avi 1\n")
    ds = discover(root, splits_dir=splits)
    assert ds.split_source == "hmdb51" and ds.classes == ["jump", "run"]
    assert ds.splits[1] == {"train": ["jump/j1.avi", "run/r1.avi"], "test": ["jump/j2.avi", "run/r2.avi"]}
    assert ds.splits[2] == {"train": ["jump/j2.avi", "jump/j3.avi", "run/r2.avi"],
                            "test": ["jump/j1.avi", "run/r1.avi"]}
    assert sorted(p["problem"] for p in ds.problems) == [
        "jump_test_split1.txt line 4: duplicate entry in jump_test_split1.txt (first at jump_test_split1.txt line 1); "
        "the first is used", f"run_test_split1.txt line 3: listed in run_test_split1.txt but no such file under {root}"]
    with pytest.raises(DatasetError, match="no classInd.txt"):
        discover(root, splits_dir=tmp_path / "elsewhere")


def test_list_file(tmp_path):
    root = tmp_path / "lst"
    _touch(root, "x/one.mp4", "x/two one.mp4", "y/three.mkv")
    (root / "videos.txt").write_text("x/one.mp4 0\nx/two one.mp4 0\ny/three.mkv 1\ny/four.mkv 1\nx/one.mp4 0\n")
    ds = discover(root, list_file=root / "videos.txt")
    assert ds.split_source == "list" and ds.classes == ["x", "y"]  # integer labels named by their folder
    assert [(v.id, v.label) for v in ds.videos] == [("x/one.mp4", 0), ("x/two one.mp4", 0), ("y/three.mkv", 1)]
    assert sorted(p["problem"] for p in ds.problems) == [
        f"videos.txt line 4: no such file under {root}",
        "videos.txt line 5: duplicate entry in videos.txt (first at videos.txt line 1); the first is used"]
    (root / "named.txt").write_text("y/three.mkv walk\nx/one.mp4 run\n")
    ds = discover(root, list_file=root / "named.txt")
    assert ds.classes == ["run", "walk"] and [v.label for v in ds.videos] == [1, 0]
    (root / "bad.txt").write_text("justonefield\n")
    with pytest.raises(DatasetError, match="bad.txt: no label on any line"):
        discover(root, list_file=root / "bad.txt")


def test_class_folders_without_splits(tmp_path):
    root = tmp_path / "plain"
    _touch(root, *[f"a/{i}.avi" for i in range(8)], *[f"b/{i}.avi" for i in range(4)])
    (root / "empty").mkdir()
    ds = discover(root)
    assert ds.split_source == "auto" and ds.classes == ["a", "b"]  # a folder with no files is no class
    # Every fourth video of each class goes to the test set.
    assert ds.splits[1]["test"] == ["a/3.avi", "a/7.avi", "b/3.avi"]
    assert len(ds.splits[1]["train"]) == 9


def test_unusable_roots(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        discover(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "v.avi").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no class folders"):
        discover(tmp_path / "flat")


def test_list_entries_outside_the_root_are_refused(tmp_path):
    from flowprep.store import failure_path

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "v.avi").write_bytes(b"x")
    (tmp_path / "outside.avi").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("a/v.avi 0\n../outside.avi 0\n")
    ds = discover(root, list_file=lst)
    assert [v.id for v in ds.videos] == ["a/v.avi"]
    assert [p["id"] for p in ds.problems] == ["../outside.avi"]
    assert "outside the dataset root" in ds.problems[0]["problem"]
    store = tmp_path / "store"
    assert store / "failed" in failure_path(store, "../outside.avi").parents
