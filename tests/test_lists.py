"""Lists and splits: path aliases, train/test overlap, label checks, BOM/CRLF, and every list format
(mmaction2 video and rawframe lists, Kinetics CSV, Something-Something v2 JSON), each from small files
written here, with the named problem (file and line) each bad line must give."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_flowprep, textured_frames, write_video
from flowprep.dataset import (DatasetError, DatasetSource, ListEntry, assign_labels, discover, normalize_path,
                              read_class_index, read_list)
from flowprep.store import Store


def _touch(root: Path, *rels: str) -> Path:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")  # discovery does not decode: any file stands in for a video
    return root


def _write(path: Path, text: str, *, bom=False, crlf=False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8"))
    return path


def _problems(ds) -> dict[str, str]:
    return {p["id"]: p["problem"] for p in ds.problems}


def _ucf(tmp_path, trainlist: str, testlist: str, classind="1 A\n2 B\n", **kw):
    root = _touch(tmp_path / "ucf", "A/a0.avi", "A/a1.avi", "A/a2.avi", "B/b0.avi", "B/b1.avi")
    lists = root / "ucfTrainTestlist"
    _write(lists / "classInd.txt", classind, **kw)
    _write(lists / "trainlist01.txt", trainlist, **kw)
    _write(lists / "testlist01.txt", testlist, **kw)
    return root


# --- B: lists and splits that were silently wrong ---------------------------------------------------

def test_normalize_path():
    for alias in ("A/a0.avi", "./A/a0.avi", "A//a0.avi", "A/./a0.avi", "A\\a0.avi", "A/x/../a0.avi"):
        assert normalize_path(alias) == "A/a0.avi"
    for outside in ("../a.avi", "/etc/passwd", "A/../../a.avi", "."):
        with pytest.raises(ValueError):
            normalize_path(outside)


def test_path_aliases_are_one_video_and_repeats_are_duplicates(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.avi", "B/b0.avi")
    lst = _write(tmp_path / "list.txt", "A/a0.avi 0\n./A/a0.avi 0\nA//a0.avi 0\nA/./a0.avi 0\nB/b0.avi 1\n")
    ds = discover(root, list_file=lst)
    assert [v.id for v in ds.videos] == ["A/a0.avi", "B/b0.avi"]
    assert [p["problem"] for p in ds.problems] == [
        f"list.txt line {n}: duplicate entry in list.txt (first at list.txt line 1); the first is used"
        for n in (2, 3, 4)]
    # In a UCF101 split, an alias in the test list is the same video as the train entry: on both sides.
    root = _ucf(tmp_path, "A/a0.avi 1\nA/a1.avi 1\nB/b0.avi 2\n", "./A//a0.avi\nA/a2.avi\nB/b1.avi\n")
    ds = discover(root)
    assert ds.splits[1] == {"train": ["A/a1.avi", "B/b0.avi"], "test": ["A/a2.avi", "B/b1.avi"]}
    assert _problems(ds) == {"A/a0.avi (train and test of split 1)": "testlist01.txt line 1: listed as test, but as "
                             "train at trainlist01.txt line 1: a video on both sides of split 1 is left out of both"}


def test_train_test_overlap_is_a_problem_and_in_neither_split(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.avi", "A/a1.avi", "B/b0.avi", "B/b1.avi")
    train = _write(tmp_path / "train.txt", "A/a0.avi 0\nA/a1.avi 0\nB/b0.avi 1\n")
    test = _write(tmp_path / "test.txt", "B/b1.avi 1\nA/a1.avi 0\n")
    ds = discover(root, DatasetSource(train_list=train, test_list=test))
    assert ds.split_source == "lists" and ds.classes == ["A", "B"]
    assert ds.splits == {1: {"train": ["A/a0.avi", "B/b0.avi"], "test": ["B/b1.avi"]}}
    assert _problems(ds) == {"A/a1.avi (train and test of split 1)": "test.txt line 2: listed as test, but as train at "
                             "train.txt line 2: a video on both sides of split 1 is left out of both"}
    # HMDB51: a video marked train on one line and test on another.
    root = _touch(tmp_path / "h", "jump/j1.avi", "jump/j2.avi")
    _write(root / "splits" / "jump_test_split1.txt", "j1.avi 1\nj2.avi 2\nj1.avi 2\n")
    ds = discover(root)
    assert ds.splits[1] == {"train": [], "test": ["jump/j2.avi"]}
    assert "jump_test_split1.txt line 3: listed as test, but as train at jump_test_split1.txt line 1" in \
        _problems(ds)["jump/j1.avi (train and test of split 1)"]


def test_ucf101_label_must_match_the_class_folder(tmp_path):
    root = _ucf(tmp_path, "A/a0.avi 1\nA/a1.avi 2\nB/b0.avi 2\nB/b1.avi 7\n", "A/a2.avi\n")
    ds = discover(root)
    assert ds.splits[1] == {"train": ["A/a0.avi", "B/b0.avi"], "test": ["A/a2.avi"]}
    assert {v.id: v.label for v in ds.videos}["A/a1.avi"] == 0  # its folder's label, never the list's
    assert _problems(ds) == {
        "A/a1.avi (trainlist01.txt line 2)": "trainlist01.txt line 2: label 2 is class 'B' in classInd.txt, but the "
        "video is in the folder of class 'A' (1); it is left out of split 1",
        "B/b1.avi (trainlist01.txt line 4)": "trainlist01.txt line 4: label 7 is outside 1..2 of classInd.txt, but the "
        "video is in the folder of class 'B' (2); it is left out of split 1"}


@pytest.mark.parametrize("classind, message", [
    ("5 A\n0 B\n", "classInd.txt:1: index 5 is outside 1..2"),
    ("1 A\n1 B\n", "classInd.txt:2: index 1 given twice (also line 1)"),
    ("1 A\n2 A\n", "classInd.txt:2: class 'A' given twice (also line 1)"),
    ("1 A\nB\n", "classInd.txt:2: expected '<index> <class>'"),
])
def test_class_index_must_be_1_to_n(tmp_path, classind, message):
    root = _ucf(tmp_path, "A/a0.avi 1\n", "B/b0.avi\n", classind)
    with pytest.raises(DatasetError, match=re.escape(message)):
        discover(root)


def test_class_index_formats(tmp_path):
    assert read_class_index(_write(tmp_path / "c.txt", "2 b c\n1 a\n")) == ["a", "b c"]  # any line order
    assert read_class_index(_write(tmp_path / "n.txt", "playing bass guitar\nabseiling\n")) == [
        "playing bass guitar", "abseiling"]
    assert read_class_index(_write(tmp_path / "l.json", '{"Pushing something": "1", "Holding something": "0"}')) == [
        "Holding something", "Pushing something"]
    with pytest.raises(DatasetError, match="'x' has index '2'; indices must be 0..1"):
        read_class_index(_write(tmp_path / "b.json", '{"x": "2", "y": "0"}'))


def test_list_labels_out_of_range_mixed_and_negative(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.avi", "A/a1.avi", "B/b0.avi", "C/c0.avi", "D/d0.avi")
    lst = _write(tmp_path / "l.txt", "A/a0.avi 0\nA/a1.avi 0\nB/b0.avi 1\nC/c0.avi 7\nD/d0.avi -1\n")
    ds = discover(root, list_file=lst)
    assert ds.classes == ["A", "B"]  # not eight classes with five empty ones
    assert [(v.id, v.label) for v in ds.videos] == [("A/a0.avi", 0), ("A/a1.avi", 0), ("B/b0.avi", 1)]
    assert _problems(ds) == {
        "C/c0.avi": "l.txt line 4: label 7: outside 0..1: no entry has label 2, and without --classes FILE the labels "
                    "must run 0..N-1 (give the class names in order with --classes if a class has no video)",
        "D/d0.avi": "l.txt line 5: label -1: negative; labels are 0-based class indices"}
    mixed = _write(tmp_path / "m.txt", "A/a0.avi walk\nB/b0.avi run\nC/c0.avi 2\n")
    ds = discover(root, list_file=mixed)
    assert ds.classes == ["run", "walk"] and len(ds.videos) == 2  # the integer is no class name
    assert _problems(ds) == {"C/c0.avi": "m.txt line 3: label 2: an integer among class-name labels (the first: "
                             "'walk', m.txt line 1); use one kind, or give the classes in order with --classes FILE"}
    # With a class file, integers index it (0-based) and names must be in it; both kinds may mix.
    classes = _write(tmp_path / "classInd.txt", "1 walk\n2 run\n3 jump\n")
    lst = _write(tmp_path / "c.txt", "A/a0.avi 2\nA/a1.avi run\nB/b0.avi 3\nC/c0.avi swim\n")
    ds = discover(root, DatasetSource(list_file=lst, classes_file=classes))
    assert ds.classes == ["walk", "run", "jump"]
    assert [(v.id, v.class_name) for v in ds.videos] == [("A/a0.avi", "jump"), ("A/a1.avi", "run")]
    assert _problems(ds) == {
        "B/b0.avi": "c.txt line 3: label 3: outside 0..2, the 3 classes of classInd.txt (list labels are 0-based)",
        "C/c0.avi": "c.txt line 4: label 'swim': not a class of classInd.txt"}


def test_list_label_contradicting_its_class_folder(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.avi", "B/b0.avi")
    classes = _write(tmp_path / "classes.txt", "A\nB\n")
    lst = _write(tmp_path / "l.txt", "A/a0.avi 1\nB/b0.avi 1\n")  # e.g. UCF101's 1-based labels given as 0-based
    ds = discover(root, DatasetSource(list_file=lst, classes_file=classes))
    assert [v.id for v in ds.videos] == ["B/b0.avi"]
    assert _problems(ds) == {"A/a0.avi": "l.txt line 1: label 1 is class 'B', but the video is in the folder of class "
                             "'A'; fix the label or the classes"}


def test_bom_and_crlf_in_every_list_and_class_file(tmp_path):
    train, test = "A/a0.avi 1\nA/a1.avi 1\nB/b0.avi 2\n", "A/a2.avi\nB/b1.avi\n"
    clean = discover(_ucf(tmp_path / "clean", train, test))
    messy = discover(_ucf(tmp_path / "messy", train, test, bom=True, crlf=True))
    assert messy.classes == clean.classes == ["A", "B"]
    assert messy.splits == clean.splits and messy.problems == clean.problems == []
    root = _touch(tmp_path / "r", "A/a0.avi", "B/b0.avi")
    for name, text in (("l.txt", "A/a0.avi 0\nB/b0.avi 1\n"), ("l.csv", "label,youtube_id,time_start,time_end\n"
                                                                       "a b,x,1,2\n")):
        _write(tmp_path / name, text, bom=True, crlf=True)
    ds = discover(root, list_file=tmp_path / "l.txt")
    assert [(v.id, v.label) for v in ds.videos] == [("A/a0.avi", 0), ("B/b0.avi", 1)] and not ds.problems
    # The BOM is not part of the first column's name, nor CR of the last field.
    assert read_list(tmp_path / "l.csv").entries == [ListEntry("x_000001_000002", "a b", "l.csv line 2", exact=False)]
    classes = _write(tmp_path / "c.txt", "1 B\n2 A\n", bom=True, crlf=True)
    assert read_class_index(classes) == ["B", "A"]


def test_a_list_that_is_not_utf8_names_its_line(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_bytes(b"A/a0.avi 0\nA/caf\xe9.avi 0\n")
    with pytest.raises(DatasetError, match=r"l.txt:2: not UTF-8 text \(byte 0xe9\)"):
        read_list(lst)


# --- C: list formats -----------------------------------------------------------------------------------

def test_mmaction2_video_lists_train_and_val(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.mp4", "A/a1.mp4", "B/b0.mp4", "B/b1.mp4")
    train = _write(tmp_path / "train_list_videos.txt", "A/a0.mp4 0\nB/b0.mp4 1\nB/gone.mp4 1\n")
    val = _write(tmp_path / "val_list_videos.txt", "A/a1.mp4 0\nB/b1.mp4 1\n")
    ds = discover(root, DatasetSource(train_list=train, val_list=val))
    # The official pair as is: val is the split's test set (what training validates on).
    assert ds.splits == {1: {"train": ["A/a0.mp4", "B/b0.mp4"], "test": ["A/a1.mp4", "B/b1.mp4"]}}
    assert _problems(ds) == {"B/gone.mp4": f"train_list_videos.txt line 3: no such file under {root}"}
    test = _write(tmp_path / "test.txt", "A/a0.mp4 0\n")
    root2 = _touch(tmp_path / "r2", "A/a0.mp4", "A/a1.mp4", "A/a2.mp4")
    ds = discover(root2, DatasetSource(train_list=_write(tmp_path / "t.txt", "A/a1.mp4 0\n"), val_list=
                                       _write(tmp_path / "v.txt", "A/a2.mp4 0\n"), test_list=test))
    assert ds.splits == {1: {"train": ["A/a1.mp4"], "val": ["A/a2.mp4"], "test": ["A/a0.mp4"]}}


def test_multi_label_and_unlabelled_lists_are_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"multi.txt:2: several labels in 'b.mp4 1 3': multi-label lists are not"):
        read_list(_write(tmp_path / "multi.txt", "a.mp4 1\nb.mp4 1 3\n"))
    with pytest.raises(DatasetError, match="multi-label"):
        read_list(_write(tmp_path / "multi_raw.txt", "a 10 1\nb 12 1 3\n"), "rawframes")
    with pytest.raises(DatasetError, match="test.txt: no label on any line .* unlabelled lists .* are not supported"):
        read_list(_write(tmp_path / "test.txt", "a.mp4\nb.mp4\n"))
    # One line without a label among labelled ones is that line's problem, not the list's.
    lf = read_list(_write(tmp_path / "one.txt", "a.mp4 1\nb.mp4\n"))
    assert [e.path for e in lf.entries] == ["a.mp4"] and lf.problems == [{"id": "b.mp4", "problem": "one.txt line 2: "
                                                                           "no label"}]


def test_mmaction2_rawframe_list(tmp_path):
    root = _touch(tmp_path / "r", "A/v_a0.avi", "B/v_b0.mp4", "B/v_b1.avi")
    lst = _write(tmp_path / "train_list_rawframes.txt", "A/v_a0 40 0\nB/v_b0 35 1\nB/v_gone 20 1\nB/v_b1 x 1\n")
    lf = read_list(lst)
    assert lf.format == "rawframes"
    assert lf.entries[0] == ListEntry("A/v_a0", 0, "train_list_rawframes.txt line 1", 40, exact=False)
    assert lf.problems == [{"id": "B/v_b1", "problem": "train_list_rawframes.txt line 4: the frame count 'x' is not a "
                            "whole number"}]
    ds = discover(root, DatasetSource(train_list=lst))  # for extract, a frame folder's video is dir.* under ROOT
    assert [(v.id, v.label) for v in ds.videos] == [("A/v_a0.avi", 0), ("B/v_b0.mp4", 1)]
    assert _problems(ds)["B/v_gone"] == f"train_list_rawframes.txt line 3: no file B/v_gone.* under {root}"


KINETICS = """label,youtube_id,time_start,time_end,split
playing bass guitar,abc-123_XY,14,24,train
abseiling,--07WQ2iBlw,1,11,train
"tying knot (not on a tie, bow)",zz9,0,10,train
abseiling,missing_1,5,15,train
abseiling,badtime,x,10,train
,nolabel,0,10,train
"""


def test_kinetics_csv(tmp_path):
    root = _touch(tmp_path / "k", "playing bass guitar/abc-123_XY_000014_000024.mp4", "--07WQ2iBlw_000001_000011.mkv",
                  "tying_knot_(not_on_a_tie,_bow)/zz9_000000_000010.webm")
    lf = read_list(_write(tmp_path / "train.csv", KINETICS))
    assert lf.format == "kinetics"
    assert [(e.path, e.label, e.where) for e in lf.entries] == [
        ("abc-123_XY_000014_000024", "playing bass guitar", "train.csv line 2"),
        ("--07WQ2iBlw_000001_000011", "abseiling", "train.csv line 3"),
        ("zz9_000000_000010", "tying knot (not on a tie, bow)", "train.csv line 4"),
        ("missing_1_000005_000015", "abseiling", "train.csv line 5")]
    assert lf.problems == [{"id": "badtime", "problem": "train.csv line 6: time 'x' is not a number"},
                           {"id": "nolabel_000000_000010", "problem": "train.csv line 7: no label"}]
    ds = discover(root, DatasetSource(train_list=tmp_path / "train.csv"))
    assert ds.classes == ["abseiling", "playing bass guitar", "tying knot (not on a tie, bow)"]  # sorted names
    assert [(v.id, v.class_name) for v in ds.videos] == [
        ("playing bass guitar/abc-123_XY_000014_000024.mp4", "playing bass guitar"),
        ("--07WQ2iBlw_000001_000011.mkv", "abseiling"),
        ("tying_knot_(not_on_a_tie,_bow)/zz9_000000_000010.webm", "tying knot (not on a tie, bow)")]
    assert _problems(ds)["missing_1_000005_000015"] == \
        f"train.csv line 5: no file missing_1_000005_000015.* under {root}"
    assert len(ds.problems) == 3
    with pytest.raises(DatasetError, match="test.csv:1: no label column: unlabelled lists"):
        read_list(_write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\nabc,0,10,test\n"))
    with pytest.raises(DatasetError, match="validate.csv: no entries in it"):
        read_list(_write(tmp_path / "validate.csv", "label,youtube_id,time_start,time_end,split\n"))
    with pytest.raises(DatasetError, match="other.csv:1: not a Kinetics CSV"):
        read_list(_write(tmp_path / "other.csv", "a,b\n1,2\n"))


def test_something_something_v2_json(tmp_path):
    root = _touch(tmp_path / "ssv2", "78687.webm", "42326.webm", "3.mp4")
    labels = {"Holding something next to something": "0", "Pushing something from left to right": "1"}
    _write(tmp_path / "something-something-v2-labels.json", json.dumps(labels))
    train = [
        {"id": "78687", "label": "holding potato next to vicks vaporub bottle",
         "template": "Holding [something] next to [something]", "placeholders": ["potato", "vicks vaporub bottle"]},
        {"id": "42326", "label": "pushing a pen from left to right",
         "template": "Pushing [something] from left to right", "placeholders": ["a pen"]},
        {"id": "3", "label": "x", "template": "Holding [something] next to [something]", "placeholders": []},
        {"id": "999", "label": "y", "template": "Pushing [something] from left to right", "placeholders": []},
        {"id": "5", "label": "z", "template": "Spinning [something]", "placeholders": []},
        {"label": "no id", "template": "Holding [something] next to [something]"},
    ]
    lst = _write(tmp_path / "something-something-v2-train.json", json.dumps(train))
    lf = read_list(lst)
    assert lf.format == "ssv2"
    assert lf.entries[0] == ListEntry("78687", "Holding something next to something",
                                      "something-something-v2-train.json record 1", exact=False)
    ds = discover(root, DatasetSource(train_list=lst))  # the labels file is found beside the list
    assert ds.classes == list(labels)
    assert [(v.id, v.label) for v in ds.videos] == [("78687.webm", 0), ("42326.webm", 1), ("3.mp4", 0)]
    assert _problems(ds) == {
        "something-something-v2-train.json record 6": "something-something-v2-train.json record 6: no id",
        "5": "something-something-v2-train.json record 5: label 'Spinning something': not a class of "
             "something-something-v2-labels.json",
        "999": f"something-something-v2-train.json record 4: no file 999.* under {root}"}
    with pytest.raises(DatasetError, match="test.json: no label on any line"):
        read_list(_write(tmp_path / "something-something-v2-test.json", json.dumps([{"id": "1"}, {"id": "2"}])))


def test_source_options_that_exclude_each_other(tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        DatasetSource(list_file="a", train_list="b")
    with pytest.raises(ValueError, match="--classes goes with list files"):
        DatasetSource(classes_file="c")
    with pytest.raises(ValueError, match="unknown list format"):
        DatasetSource(train_list="a", list_format="csv")
    assert assign_labels([], None) == ({}, [], [])


# --- the CLI on real videos: the good ones extracted, problems named, exit status -----------------------

def test_extract_with_list_problems(tmp_path):
    root = tmp_path / "ds"
    good = {"A/a0.avi": 0, "A/a1.avi": 0, "B/b0.avi": 1, "B/b1.avi": 1}
    for i, vid in enumerate(good):
        write_video(root / vid, textured_frames(4, (32, 24), 1, 0, seed=i))
    train = _write(tmp_path / "train.txt", "A/a0.avi 0\n./B//b0.avi 1\nB/b0.avi 1\nA/a1.avi 0\nB/x.avi 9\n",
                   bom=True, crlf=True)
    val = _write(tmp_path / "val.txt", "A/./a1.avi 0\nB/b1.avi 1\n")
    store = tmp_path / "st"
    r = run_flowprep("extract", root, "-o", store, "--train-list", train, "--val-list", val, "--method", "farneback",
                     "--short-side", "0", "--jobs", "1", "--quiet")
    assert r.returncode == 1, r.stderr
    assert "4 extracted, 0 already done, 3 failed, of 7" in r.stdout
    for line in ("B/b0.avi (duplicate in train.txt): train.txt line 3: duplicate entry in train.txt (first at "
                 "train.txt line 2); the first is used",
                 "A/a1.avi (train and val of split 1): val.txt line 1: listed as val, but as train at train.txt line 4",
                 "B/x.avi: train.txt line 5: label 9: outside 0..1"):
        assert line in r.stderr
    st = Store(store)
    assert sorted(st.video_ids()) == sorted(good)
    assert st.splits == {1: {"train": ["A/a0.avi", "B/b0.avi"], "test": ["B/b1.avi"]}}
    assert {v: st.label(v) for v in good} == good
    assert "split 1    2 train, 1 test (lists)" in run_flowprep("info", store).stdout
    # Bad arguments and unusable files: one line, exit 2, nothing made.
    r = run_flowprep("extract", root, "-o", tmp_path / "x", "--list", train, "--train-list", train)
    assert r.returncode == 2 and "exclude each other" in r.stderr and not (tmp_path / "x").exists()
    r = run_flowprep("extract", root, "-o", tmp_path / "x", "--train-list", _write(tmp_path / "m.txt", "a.avi 0 1\n"))
    assert r.returncode == 2 and "m.txt:1: several labels" in r.stderr and not (tmp_path / "x").exists()
    _write(root / "ucfTrainTestlist" / "classInd.txt", "5 A\n0 B\n")
    r = run_flowprep("extract", root, "-o", tmp_path / "x")
    assert r.returncode == 2 and not (tmp_path / "x").exists()
    assert r.stderr.strip().endswith("classInd.txt:1: index 5 is outside 1..2: a class index file numbers its 2 "
                                     "classes 1..2, one each")


def test_extract_help_lists_the_list_options():
    r = run_flowprep("extract", "--help")
    for option in ("--train-list", "--val-list", "--test-list", "--list-format", "--classes", "kinetics", "ssv2",
                   "rawframes", "multi-label"):
        assert option in r.stdout


def test_frame_folders_take_the_same_lists(tmp_path):
    """The rawframes importer's view: videos are frame folders; split and list entries name them."""
    root = tmp_path / "frames"
    for d in ("A/v_A_g01_c01", "A/v_A_g02_c01", "B/v_B_g01_c01"):
        (root / d).mkdir(parents=True)
    ucf = _write(root / "ucfTrainTestlist" / "classInd.txt", "1 A\n2 B\n").parent
    _write(ucf / "trainlist01.txt", "A/v_A_g01_c01.avi 1\nB/v_B_g01_c01.avi 1\n")
    _write(ucf / "testlist01.txt", "A/v_A_g02_c01.avi\n")
    ds = discover(root, frame_folders="nested")
    assert [v.id for v in ds.videos] == ["A/v_A_g01_c01", "A/v_A_g02_c01", "B/v_B_g01_c01"]
    assert ds.splits == {1: {"train": ["A/v_A_g01_c01"], "test": ["A/v_A_g02_c01"]}}
    assert list(_problems(ds)) == ["B/v_B_g01_c01 (trainlist01.txt line 2)"]  # label 1 is A, the folder is B's
    lst = _write(tmp_path / "train_rawframes.txt", "A/v_A_g01_c01 40 0\nB/v_B_g01_c01 30 1\nB/gone 3 1\n")
    ds = discover(root, DatasetSource(train_list=lst), frame_folders="nested")
    assert [(v.id, v.label) for v in ds.videos] == [("A/v_A_g01_c01", 0), ("B/v_B_g01_c01", 1)]
    assert _problems(ds) == {"B/gone": f"train_rawframes.txt line 3: no frame folder B/gone under {root}"}


def test_a_one_based_list_is_refused_line_by_line(tmp_path):
    root = _touch(tmp_path / "r", "A/a0.avi", "B/b0.avi")
    ds = discover(root, list_file=_write(tmp_path / "l.txt", "A/a0.avi 1\nB/b0.avi 2\n"))
    assert ds.videos == [] and _problems(ds) == {
        vid: f"l.txt line {n}: label {n}: no entry has label 0: labels are 0-based (is the list 1-based, like "
             "UCF101's trainlist files?)" for n, vid in ((1, "A/a0.avi"), (2, "B/b0.avi"))}
