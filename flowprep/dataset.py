"""Find the labelled videos and the train/test splits of a dataset: class folders, split files, list files.

Layouts and formats understood (``data/README.md`` shows each with an example):

* class folders: ``ROOT/<class>/<video>``; every regular, non-hidden file in a class folder is taken as a
  video (a file that is not one fails at decoding and is recorded, rather than skipped silently);
* UCF101 split files: ``classInd.txt`` (``1 ApplyEyeMakeup``), ``trainlist0N.txt`` (``Class/v.avi 1``),
  ``testlist0N.txt`` (``Class/v.avi``), looked for in ``--splits DIR``, ``ROOT``, ``ROOT/ucfTrainTestlist``
  and ``ROOT/splits``;
* HMDB51 split files: ``<class>_test_splitN.txt`` with lines ``video.avi 1|2|0`` (1 train, 2 test, 0 unused),
  in the same places;
* list files (:func:`read_list`), one per subset (``--train-list``/``--val-list``/``--test-list``, used as they
  are) or one for everything (``--list``, split made as for class folders): mmaction2 video lists
  (``path label``), mmaction2 rawframe lists (``dir num_frames label``), Kinetics CSV
  (``label,youtube_id,time_start,time_end,split``) and Something-Something v2 JSON;
* class index files (:func:`read_class_index`, ``--classes``): ``classInd.txt``, one name per line, or the
  Something-Something v2 labels JSON.

A video's id is its path under the root with ``/`` separators, normalised (``./A//a.avi`` is ``A/a.avi``)
before ids are compared, so one file has one id. Without split files every fourth video of each class (in
sorted order) is put in the test set of split 1.

Problems with the dataset itself (an entry whose file is missing, an unknown class, a duplicate entry, a
video in both train and test, a label that contradicts the class folder or is out of range, a malformed line)
do not stop discovery: they are returned in ``Dataset.problems``, each naming the file and line, and recorded
by the extraction, which then exits non-zero. A file that cannot be used at all (not UTF-8, a class index
that is not 1..N, a multi-label or unlabelled list) raises :class:`DatasetError` naming the file and line.

Videos may also be folders of frames (``discover(..., frame_folders="nested"|"flat")``, for the rawframes
importer): split and list entries then name folders. The pieces are public for other readers of these files:
:func:`read_list`, :func:`read_class_index`, :func:`assign_labels` and :func:`dataset_from_lists` with a
``resolve`` of one's own (:class:`VideoFinder`, :class:`FrameFolderFinder`).
"""
from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ConfigError, FlowprepError

SPLIT_DIR_NAMES = (".", "ucfTrainTestlist", "splits")
LIST_FORMATS = ("auto", "video", "rawframes", "kinetics", "ssv2")
SUBSETS = ("train", "val", "test")
SSV2_LABEL_FILES = ("something-something-v2-labels.json", "labels.json")  # looked for beside an SSv2 list
_INT = re.compile(r"[+-]?\d+")


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
    # {split number: {"train": [video ids], "test": [video ids]}}, plus "val" when both a val and a test list are given
    splits: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    # [{"id": ..., "problem": ...}] for entries that cannot be extracted or are left out of a split
    problems: list[dict] = field(default_factory=list)
    split_source: str = "auto"


class DatasetError(FlowprepError):
    """The dataset root or a list/split file cannot be used at all; the message names the file (and line)."""


@dataclass
class DatasetSource:
    """Where the labels and splits come from, when not (only) from the root's class folders and split files.

    Attributes:
        splits_dir: the folder of UCF101 / HMDB51 split files, if not under the root.
        list_file: one list file of every video; split 1 is made as for class folders (``--list``).
        train_list, val_list, test_list: one list file per subset, used as they are. Without a test list the
            val list is the split's test set (what training validates on and ``evaluate`` scores); with both,
            the val list is kept as the split's ``val`` subset.
        list_format: ``auto`` (``.csv`` Kinetics, ``.json`` SSv2, else by the first line), ``video``,
            ``rawframes``, ``kinetics`` or ``ssv2`` (see :func:`read_list`).
        classes_file: class names in label order (see :func:`read_class_index`); integer labels index it and
            name labels must be in it. Without it, name labels give sorted classes and integer labels must run
            0..N-1. An SSv2 list finds its labels file beside it.
    """

    splits_dir: str | Path | None = None
    list_file: str | Path | None = None
    train_list: str | Path | None = None
    val_list: str | Path | None = None
    test_list: str | Path | None = None
    list_format: str = "auto"
    classes_file: str | Path | None = None

    def __post_init__(self):
        if self.list_format not in LIST_FORMATS:
            raise ConfigError(f"unknown list format {self.list_format!r}; choose one of {', '.join(LIST_FORMATS)}")
        per_subset = self.train_list or self.val_list or self.test_list
        if self.list_file and per_subset:
            raise ConfigError("--list (one list, split made automatically) and --train-list/--val-list/--test-list "
                             "(one list per subset) exclude each other")
        if self.splits_dir and (self.list_file or per_subset):
            raise ConfigError("--splits names UCF101/HMDB51 split files; with list files leave it out")
        if self.classes_file and not (self.list_file or per_subset):
            raise ConfigError("--classes goes with list files (--list, --train-list, ...); split files have their own")

    @property
    def lists(self) -> dict[str, Path]:
        """``{"all": --list}`` or ``{subset: list file}`` of the lists given; empty without list files."""
        if self.list_file:
            return {"all": Path(self.list_file)}
        given = {"train": self.train_list, "val": self.val_list, "test": self.test_list}
        return {k: Path(v) for k, v in given.items() if v}


# --- text, paths and ids ---------------------------------------------------------------------------

def read_text(path) -> str:
    """The text of a list or class file: UTF-8, a leading BOM dropped, CRLF line ends read as LF."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save it as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_lines(path) -> list[tuple[int, str]]:
    """The non-blank lines of a text file as ``(1-based line number, stripped line)`` (see :func:`read_text`)."""
    return [(n, line.strip()) for n, line in enumerate(read_text(path).split("\n"), 1) if line.strip()]


def normalize_path(text: str) -> str:
    """A path from a list as an id: ``/`` separators, no ``.``, empty or ``x/..`` parts.

    ``./A/a0.avi``, ``A//a0.avi``, ``A/./a0.avi`` and ``A\\a0.avi`` all give ``A/a0.avi``.
    Raises ValueError for a path that is absolute or leads outside the root.
    """
    p = text.strip().replace("\\", "/")
    if p.startswith("/"):
        raise ValueError("an absolute path")
    p = posixpath.normpath(p)
    if p in (".", "..") or p.startswith("../"):
        raise ValueError("a path that leads outside the dataset root")
    return p


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


def _entry_id(vid: str, where: str) -> str:
    """The id of a problem with one entry of a video that is extracted anyway (see :func:`_duplicate_id`)."""
    return f"{vid} ({where})"


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# --- class index files -----------------------------------------------------------------------------

def read_class_index(path) -> list[str]:
    """Class names in label order (label 0 first) from a class index file.

    Formats: UCF101 ``classInd.txt`` lines ``<index> <name>`` whose indices are 1..N, each once, in any line
    order; one name per line (the line order is the label order); the Something-Something v2 labels JSON
    ``{"<name>": "<index>"}`` with indices 0..N-1. Names may hold spaces.

    Raises:
        DatasetError: naming the file and line (or JSON key) of the first problem: an index outside 1..N, an
            index or a name given twice, a line that is not ``<index> <name>`` in an indexed file.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _json_class_index(path)
    lines = read_lines(path)
    if not lines:
        raise DatasetError(f"{path}: no class names in it")
    indexed = len(lines[0][1].split(maxsplit=1)) == 2 and _INT.fullmatch(lines[0][1].split()[0])
    if not indexed:
        first_line: dict[str, int] = {}
        for n, line in lines:
            if line in first_line:
                raise DatasetError(f"{path}:{n}: class {line!r} given twice (also line {first_line[line]})")
            first_line[line] = n
        return list(first_line)
    by_index: dict[int, tuple[str, int]] = {}
    lines_of_name: dict[str, int] = {}
    for n, line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not _INT.fullmatch(parts[0]):
            raise DatasetError(f"{path}:{n}: expected '<index> <class>' like the lines before it, got {line!r}")
        i, name = int(parts[0]), parts[1]
        if i in by_index:
            raise DatasetError(f"{path}:{n}: index {i} given twice (also line {by_index[i][1]})")
        if name in lines_of_name:
            raise DatasetError(f"{path}:{n}: class {name!r} given twice (also line {lines_of_name[name]})")
        by_index[i], lines_of_name[name] = (name, n), n
    for n, line in lines:
        i = int(line.split()[0])
        if not 1 <= i <= len(lines):
            raise DatasetError(f"{path}:{n}: index {i} is outside 1..{len(lines)}: a class index file numbers its "
                               f"{len(lines)} classes 1..{len(lines)}, one each")
    return [by_index[i][0] for i in range(1, len(lines) + 1)]


def _json_class_index(path: Path) -> list[str]:
    try:
        data = json.loads(read_text(path))
    except ValueError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or not data:
        raise DatasetError(f"{path}: expected a JSON object {{\"<class name>\": \"<0-based index>\"}} "
                           "(the Something-Something v2 labels file)")
    by_index: dict[int, str] = {}
    for name, value in data.items():
        if not _INT.fullmatch(str(value).strip()) or not 0 <= int(value) < len(data):
            raise DatasetError(f"{path}: class {name!r} has index {value!r}; indices must be 0..{len(data) - 1}")
        if int(value) in by_index:
            raise DatasetError(f"{path}: index {value} given to {by_index[int(value)]!r} and {name!r}")
        by_index[int(value)] = name
    return [by_index[i] for i in range(len(data))]


# --- list files ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ListEntry:
    """One line (or JSON record) of a list file, before it is looked for on disk.

    Attributes:
        path: the normalised path of the video (``exact``), or a name to find with any extension: a Kinetics
            clip ``{youtube_id}_{start:06d}_{end:06d}``, an SSv2 ``{id}``, a rawframe list's frame folder.
        label: a 0-based class index (int) or a class name (str), as the list gives it.
        where: ``"<file name> line N"`` (``record N`` for JSON), for messages.
        num_frames: the frame count of a rawframe list; None otherwise.
        exact: whether ``path`` names the file itself.
    """

    path: str
    label: int | str
    where: str
    num_frames: int | None = None
    exact: bool = True


@dataclass
class ListFile:
    """A parsed list file: its entries and the problems of the lines that gave no entry."""

    path: Path
    format: str
    entries: list[ListEntry]
    problems: list[dict] = field(default_factory=list)


def detect_list_format(path) -> str:
    """``kinetics`` for ``.csv``, ``ssv2`` for ``.json``; a text list whose first line ends in two integers after a
    path without an extension (``dir 150 3``) is ``rawframes``, any other ``video``."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return "kinetics"
    if path.suffix.lower() == ".json":
        return "ssv2"
    lines = read_lines(path)
    tokens = lines[0][1].split() if lines else []
    if (len(tokens) >= 3 and _INT.fullmatch(tokens[-1]) and _INT.fullmatch(tokens[-2])
            and not posixpath.splitext(tokens[-3])[1]):
        return "rawframes"
    return "video"


def read_list(path, format: str = "auto") -> ListFile:
    """Parse one list file (no disk access beyond reading it).

    Formats:
        ``video`` (mmaction2 video list, and ``--list``): ``relative/path label`` lines; the path may hold spaces.
        ``rawframes`` (mmaction2 rawframe list): ``frame_dir num_frames label`` lines.
        ``kinetics``: CSV with a header naming ``label``, ``youtube_id``, ``time_start``, ``time_end`` (``split``
            and other columns are ignored); a clip is ``{youtube_id}_{time_start:06d}_{time_end:06d}`` with any
            extension; class names may hold spaces and commas (quoted).
        ``ssv2``: Something-Something v2 JSON ``[{"id", "label", "template", "placeholders"}]``; the class is the
            template with its brackets removed (``Putting [something] on a surface`` ->
            ``Putting something on a surface``), the video ``{id}.webm`` (or ``{id}`` with another extension).

    A label is an integer (a 0-based class index) or a class name. Lines that give no entry (no label in a
    labelled list, a path outside the root, a bad frame count or time) are returned as problems naming the file
    and line.

    Raises:
        DatasetError: the file is not readable as its format, has several labels on a line (multi-label lists
            are not supported: the store and training hold one label per video), or has no label on any line
            (an unlabelled list, such as a test set without annotations, cannot train or evaluate), or no entries.
    """
    path = Path(path)
    fmt = detect_list_format(path) if format == "auto" else format
    if fmt not in LIST_FORMATS[1:]:
        raise ValueError(f"unknown list format {format!r}; choose one of {', '.join(LIST_FORMATS)}")
    parser = {"video": _video_lines, "rawframes": _rawframe_lines, "kinetics": _kinetics_csv, "ssv2": _ssv2_json}[fmt]
    out = ListFile(path, fmt, [], [])
    unlabelled = parser(path, out)
    if not out.entries and not out.problems:
        raise DatasetError(f"{path}: no entries in it (an empty {fmt} list)")
    if unlabelled and not out.entries:
        more = ", ..." if len(unlabelled) > 1 else ""
        raise DatasetError(f"{path}: no label on any line ({unlabelled[0]}{more}): unlabelled lists (such "
                           f"as a test set without annotations) are not supported; flowprep needs a label per video")
    return out


def _add(out: ListFile, where: str, path_text: str, label: str | int, *, exact: bool, num_frames=None) -> None:
    try:
        p = normalize_path(path_text)
    except ValueError as e:
        out.problems.append({"id": path_text, "problem": f"{where}: {e}; give paths relative to the dataset root"})
        return
    if isinstance(label, str) and _INT.fullmatch(label):
        label = int(label)
    out.entries.append(ListEntry(p, label, where, num_frames, exact))


def _no_label(out: ListFile, where: str, key: str, unlabelled: list) -> None:
    out.problems.append({"id": key, "problem": f"{where}: no label"})
    unlabelled.append(where)


def _video_lines(path: Path, out: ListFile) -> list:
    unlabelled: list[str] = []
    for n, line in read_lines(path):
        where, tokens = f"{path.name} line {n}", line.split()
        if len(tokens) == 1:
            _no_label(out, where, tokens[0], unlabelled)
            continue
        if len(tokens) >= 3 and _INT.fullmatch(tokens[-2]) and _INT.fullmatch(tokens[-1]):
            raise DatasetError(f"{path}:{n}: several labels in {line!r}: multi-label lists are not supported "
                               f"(the store and training hold one label per video)")
        p, label = line.rsplit(maxsplit=1)
        _add(out, where, p, label, exact=True)
    return unlabelled


def _rawframe_lines(path: Path, out: ListFile) -> list:
    unlabelled: list[str] = []
    for n, line in read_lines(path):
        where, tokens = f"{path.name} line {n}", line.split()
        if len(tokens) == 2 and _INT.fullmatch(tokens[1]):
            _no_label(out, where, tokens[0], unlabelled)
            continue
        if len(tokens) < 3:
            out.problems.append({"id": tokens[0], "problem": f"{where}: expected '<frame dir> <num frames> <label>', "
                                 f"got {line!r}"})
            continue
        if len(tokens) >= 4 and all(_INT.fullmatch(t) for t in tokens[-3:]):
            raise DatasetError(f"{path}:{n}: several labels in {line!r}: multi-label lists are not supported "
                               f"(the store and training hold one label per video)")
        p, frames, label = line.rsplit(maxsplit=2)
        if not frames.isdigit():
            out.problems.append({"id": p, "problem": f"{where}: the frame count {frames!r} is not a whole number"})
            continue
        _add(out, where, p, label, exact=False, num_frames=int(frames))
    return unlabelled


KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _kinetics_csv(path: Path, out: ListFile) -> list:
    reader = csv.reader(io.StringIO(read_text(path)))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in KINETICS_COLUMNS[1:] if c not in header]
    if missing:
        raise DatasetError(f"{path}:1: not a Kinetics CSV: the header must name the columns "
                           f"label,youtube_id,time_start,time_end[,split] (missing: {', '.join(missing)})")
    if "label" not in header:
        raise DatasetError(f"{path}:1: no label column: unlabelled lists (such as Kinetics' test set) are not "
                           "supported; flowprep needs a label per video")
    col = {c: header.index(c) for c in KINETICS_COLUMNS}
    unlabelled: list[str] = []
    for row in reader:
        n, where = reader.line_num, f"{path.name} line {reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            out.problems.append({"id": f"{path.name} line {n}", "problem": f"{where}: {len(row)} fields, the header "
                                 f"has {len(header)}"})
            continue
        label, yid = row[col["label"]].strip(), row[col["youtube_id"]].strip()
        try:
            start, end = (_whole(row[col[c]]) for c in ("time_start", "time_end"))
        except ValueError as e:
            out.problems.append({"id": yid or where, "problem": f"{where}: {e}"})
            continue
        clip = f"{yid}_{start:06d}_{end:06d}"
        if not label:
            _no_label(out, where, clip, unlabelled)
        elif not yid or "/" in yid or "\\" in yid:
            out.problems.append({"id": clip, "problem": f"{where}: youtube_id {yid!r} is not a file name"})
        else:
            out.entries.append(ListEntry(clip, label, where, exact=False))
    return unlabelled


def _whole(text: str) -> int:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"time {text.strip()!r} is not a number") from None
    if x != int(x) or x < 0:
        raise ValueError(f"time {text.strip()!r} is not a whole number of seconds")
    return int(x)


def _ssv2_json(path: Path, out: ListFile) -> list:
    try:
        data = json.loads(read_text(path))
    except ValueError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DatasetError(f"{path}: not a Something-Something v2 list: expected a JSON array of "
                           '{"id", "label", "template", "placeholders"} records')
    unlabelled: list[str] = []
    for n, rec in enumerate(data, 1):
        where, vid = f"{path.name} record {n}", str(rec.get("id", "")).strip()
        if not vid:
            out.problems.append({"id": where, "problem": f"{where}: no id"})
        elif not isinstance(rec.get("template"), str) or not rec["template"].strip():
            _no_label(out, where, vid, unlabelled)
        else:
            _add(out, where, vid, rec["template"].replace("[", "").replace("]", "").strip(), exact=False)
    return unlabelled


# --- labels ------------------------------------------------------------------------------------------

def assign_labels(entries: list[ListEntry], classes: list[str] | None = None, classes_name: str = "") \
        -> tuple[dict[int, int], list[str] | None, list[dict]]:
    """Check the labels of list entries and turn them into 0-based class indices.

    Args:
        entries: the entries of every list of the dataset (labels are checked across all of them).
        classes: class names in label order, or None to infer them.
        classes_name: the file ``classes`` came from, for messages.

    Returns:
        ``({entry position: label}, classes, problems)``. ``classes`` is None when the labels are integers without
        ``classes`` (name them with :func:`name_integer_classes` once the videos are known). An entry with a bad
        label is left out and named in ``problems`` with its file and line: an integer outside the classes, a
        name not among them, a negative label, an integer among name labels or the other way round (without
        ``classes``), or an integer past a gap (without ``classes`` the labels must run 0..N-1).
    """
    labels: dict[int, int] = {}
    problems: list[dict] = []

    def bad(i: int, why: str) -> None:
        e = entries[i]
        problems.append({"id": e.path, "problem": f"{e.where}: label {e.label!r}: {why}"})

    if classes is not None:
        index = {c: k for k, c in enumerate(classes)}
        for i, e in enumerate(entries):
            if isinstance(e.label, int):
                if 0 <= e.label < len(classes):
                    labels[i] = e.label
                else:
                    bad(i, f"outside 0..{len(classes) - 1}, the {len(classes)} classes of {classes_name} "
                        "(list labels are 0-based)")
            elif e.label in index:
                labels[i] = index[e.label]
            else:
                bad(i, f"not a class of {classes_name}")
        return labels, classes, problems
    kinds = [isinstance(e.label, int) for e in entries]
    if not entries:
        return labels, [], problems
    first = entries[0]
    for i, e in enumerate(entries):
        if kinds[i] != kinds[0]:
            bad(i, f"{'an integer' if kinds[i] else 'a class name'} among {'integer' if kinds[0] else 'class-name'} "
                f"labels (the first: {first.label!r}, {first.where}); use one kind, or give the classes in order "
                "with --classes FILE")
    if not kinds[0]:
        names = sorted({e.label for i, e in enumerate(entries) if not kinds[i]})
        index = {c: k for k, c in enumerate(names)}
        labels = {i: index[e.label] for i, e in enumerate(entries) if not kinds[i]}
        return labels, names, problems
    used = {e.label for i, e in enumerate(entries) if kinds[i] and e.label >= 0}
    n = 0
    while n in used:
        n += 1
    for i, e in enumerate(entries):
        if not kinds[i]:
            continue
        if e.label < 0:
            bad(i, "negative; labels are 0-based class indices")
        elif n == 0:
            bad(i, "no entry has label 0: labels are 0-based (is the list 1-based, like UCF101's trainlist files?)")
        elif e.label >= n:
            bad(i, f"outside 0..{n - 1}: no entry has label {n}, and without --classes FILE the labels must run "
                "0..N-1 (give the class names in order with --classes if a class has no video)")
        else:
            labels[i] = e.label
    return labels, None, problems


def name_integer_classes(videos: list[tuple[str, int]], n: int) -> list[str]:
    """Names for integer classes 0..n-1: the folder that holds all of a class's videos, when no other class's
    videos are in it; else the number itself."""
    folders: dict[int, set] = {}
    for vid, label in videos:
        folders.setdefault(label, set()).add(posixpath.dirname(vid))
    names = [next(iter(folders[k])) if len(folders.get(k, ())) == 1 else "" for k in range(n)]
    out = [c if c and names.count(c) == 1 else str(k) for k, c in enumerate(names)]
    return out if len(set(out)) == len(out) else [str(k) for k in range(n)]


# --- finding list entries on disk --------------------------------------------------------------------

class VideoFinder:
    """The default ``resolve`` of :func:`dataset_from_lists`: the video file of a list entry, as an id.

    An exact entry must be a file at its path under ``root``. Any other (a Kinetics clip, an SSv2 id, a rawframe
    list's frame folder) is a file with any extension: at its path, else by its name anywhere under ``root``
    (one walk, on first use); among several, the one in a folder named after its class (spaces or underscores),
    then a ``.webm``, is taken, and more than one left is a problem.
    """

    def __init__(self, root):
        self.root = Path(root)
        self._by_path: dict[str, list[str]] | None = None
        self._by_name: dict[str, list[str]] = {}

    def _index(self) -> None:
        self._by_path = {}
        for d, dirs, files in os.walk(self.root):
            dirs[:] = sorted(x for x in dirs if not x.startswith(".") and is_utf8(x))
            for f in sorted(files):
                if f.startswith(".") or not is_utf8(f):
                    continue
                rel = _rel(Path(d) / f, self.root)
                stem = posixpath.splitext(rel)[0]
                self._by_path.setdefault(stem, []).append(rel)
                self._by_name.setdefault(posixpath.basename(stem), []).append(rel)

    def __call__(self, entry: ListEntry, class_name: str) -> str:
        """The id of ``entry``'s video; raises LookupError saying why there is none."""
        if entry.exact:
            if (self.root / entry.path).is_file():
                return entry.path
            raise LookupError(f"no such file under {self.root}")
        if (self.root / entry.path).is_file():
            return entry.path
        if self._by_path is None:
            self._index()
        found = self._by_path.get(entry.path) or self._by_name.get(posixpath.basename(entry.path), [])
        if len(found) > 1:
            folders = {class_name, class_name.replace(" ", "_")}
            found = [f for f in found if posixpath.basename(posixpath.dirname(f)) in folders] or found
        if len(found) > 1:
            found = [f for f in found if f.endswith(".webm")] or found
        if len(found) == 1:
            return found[0]
        if found:
            raise LookupError(f"several files could be it: {', '.join(found[:4])}")
        raise LookupError(f"no file {entry.path}.* under {self.root}")


class _SplitSides:
    """The subsets of one split, with duplicate entries and videos on two sides found and reported."""

    def __init__(self, split: int, problems: list[dict]):
        self.split, self.problems = split, problems
        self.first: dict[str, tuple[str, str]] = {}  # id -> (subset, where)
        self.sides: dict[str, list[str]] = {}
        self.both: set[str] = set()

    def add(self, vid: str, subset: str, where: str, list_name: str) -> bool:
        """Put ``vid`` in ``subset``; False (and a problem) when it was listed before."""
        if vid not in self.first:
            self.first[vid] = (subset, where)
            self.sides.setdefault(subset, []).append(vid)
            return True
        first_subset, first_where = self.first[vid]
        if first_subset == subset:
            self.problems.append({"id": _duplicate_id(vid, list_name), "problem": f"{where}: duplicate entry in "
                                  f"{list_name} (first at {first_where}); the first is used"})
        elif vid not in self.both:
            self.both.add(vid)
            self.problems.append({"id": _entry_id(vid, f"{first_subset} and {subset} of split {self.split}"),
                                  "problem": f"{where}: listed as {subset}, but as {first_subset} at {first_where}: "
                                  f"a video on both sides of split {self.split} is left out of both"})
        return False

    def result(self) -> dict[str, list[str]]:
        """``{"train": ids, "test": ids}`` without the videos on both sides."""
        return {s: [v for v in self.sides.get(s, []) if v not in self.both] for s in ("train", "test")}


def dataset_from_lists(root, lists: dict[str, ListFile], *, classes: list[str] | None = None, classes_name: str = "",
                       resolve: Callable[[ListEntry, str], str] | None = None) -> Dataset:
    """A dataset from parsed list files.

    Args:
        root: the dataset root.
        lists: ``{"all": list}`` (split 1 made as for class folders) or ``{"train"/"val"/"test": list}`` (used as
            they are; without ``test``, ``val`` is the split's test set; with both it is kept as ``val``).
        classes, classes_name: class names in label order and the file they came from (see :func:`assign_labels`).
        resolve: ``resolve(entry, class_name) -> id`` of the entry's item, raising LookupError (the reason) when
            there is none; default :class:`VideoFinder` ``(root)``. The rawframes importer passes its own.

    Returns:
        The :class:`Dataset`; each entry left out is in ``problems``, named with its file and line.
    """
    root = Path(root)
    resolve = resolve or VideoFinder(root)
    problems = [p for lf in lists.values() for p in lf.problems]
    sides = _SplitSides(1, problems)
    kept: list[tuple[str, ListEntry, str]] = []  # (subset, entry, list name), first entries only
    for subset, lf in lists.items():
        for e in lf.entries:
            if sides.add(e.path, subset, e.where, lf.path.name):
                kept.append((subset, e, lf.path.name))
    entries = [e for _, e, _ in kept]
    labels, classes, label_problems = assign_labels(entries, classes, classes_name)
    problems += label_problems
    index = {c: k for k, c in enumerate(classes or [])}
    found: list[tuple[str, str, int, bool]] = []  # (subset, id, label, whether it is in no split: on two sides)
    by_id: dict[str, str] = {}
    for i, (subset, e, list_name) in enumerate(kept):
        if i not in labels:
            continue
        name = classes[labels[i]] if classes else str(labels[i])
        try:
            vid = resolve(e, name)
        except LookupError as err:
            problems.append({"id": e.path, "problem": f"{e.where}: {err}"})
            continue
        if vid in by_id:
            problems.append({"id": _duplicate_id(vid, list_name), "problem": f"{e.where}: the same video as "
                             f"{by_id[vid]} ({vid}); the first is used"})
            continue
        folder = vid.split("/")[0] if "/" in vid else None
        if classes and folder in index and index[folder] != labels[i]:
            problems.append({"id": vid, "problem": f"{e.where}: label {e.label!r} is class {name!r}, but the video "
                             f"is in the folder of class {folder!r}; fix the label or the classes"})
            continue
        by_id[vid] = e.where
        found.append((subset, vid, labels[i], e.path in sides.both))
    if classes is None:
        classes = name_integer_classes([(v, lab) for _, v, lab, _ in found], max(labels.values(), default=-1) + 1)
    videos = [VideoEntry(vid, lab, classes[lab]) for _, vid, lab, _ in found]
    if "all" in lists:
        splits = _auto_split(videos)
    else:
        split = {s: [vid for subset, vid, _, both in found if subset == s and not both] for s in SUBSETS}
        if "test" not in lists:
            split["test"] = split.pop("val")
        elif "val" not in lists:
            del split["val"]
        splits = {1: split}
    return Dataset(root, classes, videos, splits, problems, "list" if "all" in lists else "lists")


def _auto_split(videos: list[VideoEntry]) -> dict:
    train, test, seen = [], [], {}
    for v in videos:
        k = seen[v.label] = seen.get(v.label, -1) + 1
        (test if k % 4 == 3 else train).append(v.id)
    return {1: {"train": train, "test": test}}


# --- discovery ---------------------------------------------------------------------------------------

FRAME_FOLDERS = ("nested", "flat")
# Extensions a split-file entry may carry that its frame folder does not (``v_X.avi`` -> ``v_X``).
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")


def strip_video_extension(name: str) -> str:
    """``name`` without a video file extension (``Class/v_X.avi`` -> ``Class/v_X``); other names as they are."""
    stem, ext = posixpath.splitext(name)
    return stem if ext.lower() in VIDEO_EXTENSIONS else name


def discover(root, source: DatasetSource | None = None, *, splits_dir=None, list_file=None,
             frame_folders: str | None = None) -> Dataset:
    """Find the labelled videos and splits under ``root`` (see the module docstring for the layouts).

    Args:
        root: the dataset root.
        source: list files or a split folder to use (default: class folders and split files under ``root``).
        splits_dir, list_file: shorthands for ``DatasetSource(splits_dir=..., list_file=...)``.
        frame_folders: None (videos are files), or the videos are folders of frames (``flowprep import-frames``):
            ``"nested"`` ``ROOT/<class>/<video>/`` or ``"flat"`` ``ROOT/<video>/`` (TSN's layout). A split-file
            entry ``Class/v_X.avi`` then names the folder ``Class/v_X`` (nested) or ``v_X`` (flat, whose class
            comes from the entry: its folder part in UCF101 files, the file name in HMDB51 files); a list entry
            names its folder likewise (see :class:`FrameFolderFinder`).

    Raises:
        DatasetError: the root or a list, split or class file cannot be used at all (the message names it).
    """
    root = Path(root)
    source = source or DatasetSource(splits_dir=splits_dir, list_file=list_file)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root is not a directory")
    if frame_folders not in (None,) + FRAME_FOLDERS:
        raise ConfigError(f"frame_folders must be None, 'nested' or 'flat', got {frame_folders!r}")
    if source.lists:
        return _from_lists(root, source, frame_folders)
    split_dir, kind = _find_split_dir(root, source.splits_dir)
    exclude = {split_dir.resolve()} if split_dir else set()
    if frame_folders == "flat" and kind == "auto":
        raise DatasetError(f"{root}: flat frame folders (ROOT/<video>/) carry no class; give UCF101 or HMDB51 split "
                           "files (--splits) or list files (--list, --train-list, ...)")
    key = _entry_key(frame_folders)
    folders = None if frame_folders == "flat" else _class_folders(root, exclude, dirs=frame_folders is not None)
    if kind == "ucf101":
        return _ucf101(root, split_dir, folders, key, exclude)
    if kind == "hmdb51":
        return _hmdb51(root, split_dir, folders, key, exclude)
    classes = [c for c, files in folders.items() if files and is_utf8(c)]
    if not classes:
        raise DatasetError(f"{root}: no class folders with files in them (expected ROOT/<class>/<video>)")
    problems: list[dict] = []
    videos = _label_folders(root, folders, {c: i for i, c in enumerate(classes)}, problems, "")
    return Dataset(root, classes, videos, _auto_split(videos), problems, "auto")


def _from_lists(root: Path, source: DatasetSource, frame_folders: str | None = None) -> Dataset:
    for name, path in source.lists.items():
        if not path.is_file():
            raise DatasetError(f"{path}: list file not found ({'--list' if name == 'all' else f'--{name}-list'})")
    lists = {name: read_list(path, source.list_format) for name, path in source.lists.items()}
    classes_file = source.classes_file
    if classes_file is None and all(lf.format == "ssv2" for lf in lists.values()):
        beside = [lf.path.parent / n for lf in lists.values() for n in SSV2_LABEL_FILES]
        classes_file = next((p for p in beside if p.is_file()), None)
    classes = read_class_index(classes_file) if classes_file else None
    name = Path(classes_file).name if classes_file else ""
    resolve = FrameFolderFinder(root, frame_folders) if frame_folders else None
    return dataset_from_lists(root, lists, classes=classes, classes_name=name, resolve=resolve)


class FrameFolderFinder:
    """The ``resolve`` of :func:`dataset_from_lists` for frame folders: the folder of a list entry, as an id.

    The entry's path without a video extension (``Class/v_X.avi`` and a rawframe list's ``Class/v_X`` both name
    ``Class/v_X``; in a ``flat`` root only its last part), else for a clip name (Kinetics, SSv2) a folder of that
    name at the root or in the class's folder (its name with spaces or underscores).
    """

    def __init__(self, root, frame_folders: str = "nested"):
        self.root, self.flat = Path(root), frame_folders == "flat"

    def __call__(self, entry: ListEntry, class_name: str) -> str:
        """The id of ``entry``'s frame folder; raises LookupError saying why there is none."""
        p = strip_video_extension(entry.path)
        tries = [posixpath.basename(p) if self.flat else p]
        if not entry.exact and not self.flat and "/" not in p:
            tries += [f"{class_name}/{p}", f"{class_name.replace(' ', '_')}/{p}"]
        for t in tries:
            if (self.root / t).is_dir():
                return t
        raise LookupError(f"no frame folder {tries[0]} under {self.root}")


def _entry_key(frame_folders: str | None) -> Callable[[str], str]:
    """How a split-file entry (``Class/v_X.avi``) names a video: itself, or its frame folder."""
    if frame_folders is None:
        return lambda vid: vid
    if frame_folders == "nested":
        return strip_video_extension
    return lambda vid: strip_video_extension(vid.rsplit("/", 1)[-1])


def _find_split_dir(root: Path, splits_dir) -> tuple[Path | None, str]:
    candidates = [Path(splits_dir)] if splits_dir else [root / n for n in SPLIT_DIR_NAMES]
    for d in candidates:
        if (d / "classInd.txt").is_file():
            return d, "ucf101"
        if d.is_dir() and any(d.glob("*_test_split[0-9]*.txt")):
            return d, "hmdb51"
    if splits_dir:
        raise DatasetError(f"{splits_dir}: no classInd.txt (UCF101) or *_test_splitN.txt (HMDB51) split files there")
    return None, "auto"


def _class_folders(root: Path, exclude: set[Path], dirs: bool = False) -> dict[str, list[Path]]:
    """{class: its videos}: the files in each class folder, or with ``dirs`` its subfolders (frame folders)."""
    out = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.resolve() not in exclude:
            out[d.name] = sorted(p for p in d.iterdir() if not p.name.startswith(".") and p.is_dir() == dirs)
    return out


def _flat_folders(root: Path, exclude: set[Path], class_of: dict[str, str], problems: list) -> dict[str, list[Path]]:
    """{class: frame folders} of a flat root, each folder's class from the split entries (``class_of``: {id: class})."""
    out: dict[str, list[Path]] = {}
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith(".") or d.resolve() in exclude:
            continue
        if d.name in class_of:
            out.setdefault(class_of[d.name], []).append(d)
        else:
            problems.append({"id": d.name, "problem": "frame folder named by no split file, so its class is unknown"})
    return out


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


def _ucf101_lines(root: Path, split_dir: Path):
    """``(split file, subset, split number, [(line number, entry, label or None)])`` per train/test list, split by
    split with the train list first (so a video in both is reported on its test line)."""
    found = (re.fullmatch(r"(train|test)list0*(\d+)\.txt", f.name) for f in split_dir.glob("*list[0-9]*.txt"))
    for m in sorted((m for m in found if m), key=lambda m: (int(m.group(2)), m.group(1) == "test")):
        f, rows = split_dir / m.group(0), []
        for lineno, line in read_lines(f):
            parts = line.rsplit(maxsplit=1)
            if len(parts) == 2 and _INT.fullmatch(parts[1]) and not (root / line).exists():
                rows.append((lineno, parts[0], int(parts[1])))
            else:
                rows.append((lineno, line, None))
        yield f, m.group(1), int(m.group(2)), rows


def _ucf101(root: Path, split_dir: Path, folders: dict | None, key, exclude: set[Path]) -> Dataset:
    classes = read_class_index(split_dir / "classInd.txt")
    label_of = {c: i for i, c in enumerate(classes)}
    problems: list[dict] = []
    lists = list(_ucf101_lines(root, split_dir))
    if folders is None:  # flat frame folders: each one's class is the folder part of the entries naming it
        class_of = {}
        for *_, rows in lists:
            for _, entry, _ in rows:
                try:
                    entry = normalize_path(entry)
                except ValueError:
                    continue
                class_of.setdefault(key(entry), entry.split("/")[0])
        folders = _flat_folders(root, exclude, class_of, problems)
    videos = _label_folders(root, folders, label_of, problems, "not in classInd.txt")
    known = {v.id for v in videos}
    sides: dict[int, _SplitSides] = {}
    for f, subset, n, rows in lists:
        split = sides.setdefault(n, _SplitSides(n, problems))
        for lineno, entry, label in rows:
            where = f"{f.name} line {lineno}"
            try:
                entry = normalize_path(entry)
            except ValueError as e:
                problems.append({"id": entry, "problem": f"{where}: {e}"})
                continue
            vid, c = key(entry), entry.split("/")[0]
            if c not in label_of:
                problems.append({"id": vid, "problem": f"{where}: unknown class {c!r} (not in classInd.txt)"})
            elif vid not in known:
                problems.append({"id": vid, "problem": f"{where}: listed in {f.name} but no such file under {root}"})
            elif label is not None and label != label_of[c] + 1:
                said = (f"class {classes[label - 1]!r} in classInd.txt" if 1 <= label <= len(classes)
                        else f"outside 1..{len(classes)} of classInd.txt")
                problems.append({"id": _entry_id(vid, where), "problem": f"{where}: label {label} is {said}, but the "
                                 f"video is in the folder of class {c!r} ({label_of[c] + 1}); it is left out of "
                                 f"split {n}"})
            else:
                split.add(vid, subset, where, f.name)
    splits = {n: s.result() for n, s in sorted(sides.items())} or _auto_split(videos)
    return Dataset(root, classes, videos, splits, problems, "ucf101")


def _hmdb51(root: Path, split_dir: Path, folders: dict | None, key, exclude: set[Path]) -> Dataset:
    split_files = sorted(split_dir.glob("*_test_split[0-9]*.txt"))
    class_of_file = {f: re.sub(r"_test_split\d+\.txt$", "", f.name) for f in split_files}
    classes = sorted(set(class_of_file.values()))
    label_of = {c: i for i, c in enumerate(classes)}
    problems: list[dict] = []
    lists = [(f, read_lines(f)) for f in split_files]
    if folders is None:  # flat frame folders: each one's class is that of the split file naming it
        class_of: dict[str, str] = {}
        for f, lines in lists:
            for _, line in lines:
                class_of.setdefault(key(line.rsplit(maxsplit=1)[0]), class_of_file[f])
        folders = _flat_folders(root, exclude, class_of, problems)
    videos = _label_folders(root, folders, label_of, problems, "it has no <class>_test_splitN.txt")
    known = {v.id for v in videos}
    sides: dict[int, _SplitSides] = {}
    for f, lines in lists:
        c, n = class_of_file[f], int(re.fullmatch(r".+_test_split(\d+)\.txt", f.name).group(1))
        split = sides.setdefault(n, _SplitSides(n, problems))
        for lineno, line in lines:
            where = f"{f.name} line {lineno}"
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                problems.append({"id": f"{c}/{parts[0]} ({where})", "problem": f"{where}: expected "
                                 f"'<video> 0|1|2' (unused, train, test), got {line!r}"})
                continue
            try:
                vid = key(normalize_path(f"{c}/{parts[0]}"))
            except ValueError as e:
                problems.append({"id": f"{c}/{parts[0]}", "problem": f"{where}: {e}"})
                continue
            if vid not in known:
                problems.append({"id": vid, "problem": f"{where}: listed in {f.name} but no such file under {root}"})
            else:
                split.add(vid, {"0": "unused", "1": "train", "2": "test"}[parts[1]], where, f.name)
    return Dataset(root, classes, videos, {n: s.result() for n, s in sorted(sides.items())}, problems, "hmdb51")
