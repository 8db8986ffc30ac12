"""Find the labelled videos and the train/test splits under a dataset root.

Layouts understood (see ``data/README.md``):

* class folders: ``ROOT/<class>/<video>``; every regular, non-hidden file in a class folder is taken as a
  video (a file that is not one fails at decoding and is recorded, rather than skipped silently);
* UCF101 split files: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v.avi 1``),
  ``testlist0N.txt`` (``Class/v.avi``), looked for in ``--splits DIR``, ``ROOT``, ``ROOT/ucfTrainTestlist``
  and ``ROOT/splits``;
* HMDB51 split files: ``<class>_test_splitN.txt`` with lines ``video.avi 1|2|0`` (1 train, 2 test, 0 unused),
  in the same places;
* a plain list file of ``relative/path label`` lines (label a 0-based integer or a class name).

Without split files every fourth video of each class (in sorted order) is put in the test set of split 1.
Problems with the dataset itself (a split entry whose file is missing, an unknown class, a duplicate entry)
do not stop discovery: they are returned in ``Dataset.problems`` and recorded by the extraction.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SPLIT_DIR_NAMES = (".", "ucfTrainTestlist", "splits")


@dataclass(frozen=True)
class VideoEntry:
    """One labelled video. ``id`` is its path relative to the root, with ``/`` separators."""

    id: str
    label: int
    class_name: str


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    videos: list[VideoEntry]
    # {split number: {"train": [video ids], "test": [video ids]}}
    splits: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    # [{"id": ..., "problem": ...}] for entries that cannot be extracted
    problems: list[dict] = field(default_factory=list)
    split_source: str = "auto"


class DatasetError(Exception):
    """The dataset root or a list/split file cannot be used at all."""


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def is_utf8(name: str) -> bool:
    """False for a name read from disk that holds bytes that are not UTF-8 (``os.listdir`` gives lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_id(rel: str) -> str:
    """``rel`` with each byte that is not UTF-8 written as ``\\xNN``: an id that JSON, HDF5 and a terminal take."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def _not_utf8_problem(rel: str) -> dict:
    return {"id": printable_id(rel), "problem": "the file name is not valid UTF-8 (its bytes are shown as \\xNN); "
            "rename it to extract it"}


def _duplicate_id(vid: str, list_name: str) -> str:
    # A duplicate's record must not take the id of the video itself: that video is extracted (from its first
    # entry), and a failure record under its id would be overwritten by, or hide, the video's own status.
    return f"{vid} (duplicate in {list_name})"


def _class_folders(root: Path, exclude: set[Path]) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.resolve() not in exclude:
            out[d.name] = sorted(p for p in d.iterdir() if not p.name.startswith(".") and not p.is_dir())
    return out


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _find_split_dir(root: Path, splits_dir: Path | None) -> tuple[Path | None, str]:
    candidates = [Path(splits_dir)] if splits_dir else [root / n for n in SPLIT_DIR_NAMES]
    for d in candidates:
        if (d / "classInd.txt").is_file():
            return d, "ucf101"
        if d.is_dir() and any(d.glob("*_test_split[0-9]*.txt")):
            return d, "hmdb51"
    if splits_dir:
        raise DatasetError(f"{splits_dir}: no classInd.txt (UCF101) or *_test_splitN.txt (HMDB51) split files there")
    return None, "auto"


def discover(root, *, splits_dir=None, list_file=None) -> Dataset:
    """Scan ``root`` for labelled videos and splits (see the module docstring for the layouts)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    if list_file is not None:
        return _from_list_file(root, Path(list_file))
    split_dir, kind = _find_split_dir(root, splits_dir)
    folders = _class_folders(root, {split_dir.resolve()} if split_dir else set())
    if kind == "ucf101":
        return _ucf101(root, split_dir, folders)
    if kind == "hmdb51":
        return _hmdb51(root, split_dir, folders)
    classes = [c for c, files in folders.items() if files and is_utf8(c)]
    if not classes:
        raise DatasetError(f"{root}: no class folders with files in them (expected ROOT/<class>/<video>)")
    problems: list[dict] = []
    videos = _label_folders(root, folders, {c: i for i, c in enumerate(classes)}, problems, "")
    return Dataset(root, classes, videos, _auto_split(videos), problems, "auto")


def _auto_split(videos: list[VideoEntry]) -> dict:
    train, test, seen = [], [], {}
    for v in videos:
        k = seen[v.label] = seen.get(v.label, -1) + 1
        (test if k % 4 == 3 else train).append(v.id)
    return {1: {"train": train, "test": test}}


def _label_folders(root: Path, folders: dict, label_of: dict, problems: list, why: str) -> list[VideoEntry]:
    """Videos of the class folders whose class the split files know; the others go to ``problems``."""
    videos = []
    for c, files in folders.items():
        for p in files:
            if not is_utf8(_rel(p, root)):
                problems.append(_not_utf8_problem(_rel(p, root)))
            elif c in label_of:
                videos.append(VideoEntry(_rel(p, root), label_of[c], c))
            else:
                problems.append({"id": _rel(p, root), "problem": f"unknown class {c!r}: {why}"})
    return videos


def _ucf101(root: Path, split_dir: Path, folders: dict) -> Dataset:
    classes, problems = [], []
    for line in _read_lines(split_dir / "classInd.txt"):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DatasetError(f"{split_dir / 'classInd.txt'}: expected '<index> <class>' lines, got {line!r}")
        classes.append(parts[1])
    label_of = {c: i for i, c in enumerate(classes)}
    videos = _label_folders(root, folders, label_of, problems, "not in classInd.txt")
    known = {v.id for v in videos}
    splits: dict[int, dict[str, list[str]]] = {}
    for f in sorted(split_dir.glob("*list[0-9]*.txt")):
        m = re.fullmatch(r"(train|test)list0*(\d+)\.txt", f.name)
        if not m:
            continue
        subset, n = m.group(1), int(m.group(2))
        ids = splits.setdefault(n, {"train": [], "test": []})[subset]
        seen = set()
        for line in _read_lines(f):
            vid = line.rsplit(maxsplit=1)[0] if subset == "train" and re.search(r"\s\d+$", line) else line
            vid = vid.replace("\\", "/")
            where = f"{f.name}"
            if vid in seen:
                problems.append({"id": _duplicate_id(vid, f.name),
                                 "problem": f"duplicate entry in {where}; the first is used"})
            elif vid.split("/")[0] not in label_of:
                problems.append({"id": vid, "problem": f"unknown class {vid.split('/')[0]!r} in {where}"})
            elif vid not in known:
                problems.append({"id": vid, "problem": f"listed in {where} but no such file under {root}"})
            else:
                ids.append(vid)
            seen.add(vid)
    if not splits:
        splits = _auto_split(videos)
    return Dataset(root, classes, videos, splits, problems, "ucf101")


def _hmdb51(root: Path, split_dir: Path, folders: dict) -> Dataset:
    split_files = sorted(split_dir.glob("*_test_split[0-9]*.txt"))
    classes = sorted({re.sub(r"_test_split\d+\.txt$", "", f.name) for f in split_files})
    label_of = {c: i for i, c in enumerate(classes)}
    problems: list[dict] = []
    videos = _label_folders(root, folders, label_of, problems, "it has no <class>_test_splitN.txt")
    known = {v.id for v in videos}
    splits: dict[int, dict[str, list[str]]] = {}
    for f in split_files:
        m = re.fullmatch(r"(.+)_test_split(\d+)\.txt", f.name)
        c, n = m.group(1), int(m.group(2))
        split = splits.setdefault(n, {"train": [], "test": []})
        seen = set()
        for line in _read_lines(f):
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DatasetError(f"{f}: expected '<video> 0|1|2' lines, got {line!r}")
            vid = f"{c}/{parts[0]}"
            if vid in seen:
                problems.append({"id": _duplicate_id(vid, f.name),
                                 "problem": f"duplicate entry in {f.name}; the first is used"})
            elif vid not in known:
                problems.append({"id": vid, "problem": f"listed in {f.name} but no such file under {root}"})
            elif parts[1] != "0":
                split["train" if parts[1] == "1" else "test"].append(vid)
            seen.add(vid)
    return Dataset(root, classes, videos, splits, problems, "hmdb51")


def _from_list_file(root: Path, list_file: Path) -> Dataset:
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: list file not found")
    rows, problems, seen = [], [], set()
    for lineno, line in enumerate(_read_lines(list_file), 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise DatasetError(f"{list_file}:{lineno}: expected '<relative/path> <label>', got {line!r}")
        vid, label = parts[0].replace("\\", "/"), parts[1]
        if vid in seen:
            problems.append({"id": _duplicate_id(vid, list_file.name),
                             "problem": f"duplicate entry ({list_file.name} line {lineno}); the first is used"})
        elif vid.startswith("/") or ".." in vid.split("/"):
            problems.append({"id": vid, "problem": f"{list_file.name} line {lineno}: the path leads outside the "
                             f"dataset root {root}; give paths relative to it"})
        elif not (root / vid).exists():
            problems.append({"id": vid, "problem": f"listed in {list_file.name} line {lineno} but no such file under {root}"})
        else:
            rows.append((vid, label))
        seen.add(vid)
    if all(label.isdigit() for _, label in rows):
        n = max((int(label) for _, label in rows), default=-1) + 1
        # Name each integer class by its folder when all its videos share one, else by the number.
        folders: dict[int, set] = {}
        for vid, label in rows:
            folders.setdefault(int(label), set()).add(os.path.dirname(vid) or str(label))
        classes = [next(iter(folders[k])) if len(folders.get(k, ())) == 1 else str(k) for k in range(n)]
        videos = [VideoEntry(vid, int(label), classes[int(label)]) for vid, label in rows]
    else:
        classes = sorted({label for _, label in rows})
        videos = [VideoEntry(vid, classes.index(label), label) for vid, label in rows]
    return Dataset(root, classes, videos, _auto_split(videos), problems, "list")
