"""The on-disk store of frames and flow: a directory with one HDF5 file per video.

Layout::

    STORE/
      store.json            settings the store was made with (method, parameters, mapping, bound, sizes, formats)
      manifest.json         the dataset: classes, videos (id, label, class), splits, dataset problems
      index.json            per-video summary (frames, size, bytes), rewritten at the end of each extraction
      videos/<name>.h5      one file per finished video; <name> is its id (its path under the dataset root)
      failed/<name>.json    one record per video that failed, with the reason

A file's ``<name>`` is the id itself when every part of it fits the file system's limit on a file name
with room for our suffixes, else a short hashed name ``#hashed/<sha256 of the id>`` (:func:`store_name`);
the full id is always inside the file, in ``index.json`` and in ``manifest.json``.

A video file appears only when it is complete: it is written as ``<name>.h5.tmp-<pid>`` and renamed
(``os.replace`` is atomic on POSIX), so a ``kill -9`` at any moment leaves finished videos intact and at
worst a temporary file, which the next extraction removes. No HDF5 file is ever written by two processes.

Schema of ``videos/<name>.h5``:

* attributes: ``id``, ``label``, ``class_name``, ``num_frames`` T, ``height``, ``width``, ``source_fps``, ``fps``,
  ``source_frames``, ``rgb_format``, ``flow_format``, ``mapping``, ``bound``, ``method``, and ``sha256`` of the
  datasets' contents (see :func:`content_digest`), which ``flowprep verify`` checks: JPEG decoders accept many
  damaged streams, so decoding alone misses damage;
* ``frame_index`` (T,) int32: index of each stored frame in the source video;
* ``rgb``: (T,) variable-length uint8, each a JPEG (``rgb_format="jpeg"``), or (T, H, W, 3) uint8 (``"raw"``);
* flow between stored frames t and t+1, T-1 of them, x and y apart:
  ``flow_x``/``flow_y`` (T-1,) variable-length uint8 holding a JPEG or PNG of the uint8 codes
  (``"jpeg"``/``"png"``), or (T-1, H, W) uint8 codes (``"raw"``), or one ``flow`` (T-1, H, W, 2) float16 (``"float16"``).
  Codes map to pixels through :mod:`flowprep.quantize` with the file's ``mapping`` and ``bound``.

:class:`Store` reads it. It opens HDF5 files without file locking (:func:`open_h5`), lazily and per process (a
DataLoader worker that inherits a ``Store`` by fork or pickling reopens its own handles), keeping a small cache of open files, each a
:class:`VideoFile` that reads and checks what every read needs once, when it opens, and keeps it when the file
is closed (a later open of the same file reuses it). JPEG and PNG items are
read straight from the file with ``os.pread`` (h5py's per-read overhead was larger than decoding them; see
``bench/store_bench.py`` and the README's performance section), at the places ``index.json`` records
(:func:`file_layout`), so that a read opens no HDF5 file at all.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import struct
from array import array
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np

from .errors import ConfigError, FlowprepError
from .h5guard import HEAP_OBJECT, LayoutError, attribute_table, superblock
from .quantize import MAPPINGS, dequantize

SCHEMA_VERSION = 1
RGB_FORMATS = ("jpeg", "raw")
FLOW_FORMATS = ("jpeg", "png", "raw", "float16")
# Upper bounds on what a video file may declare, checked before anything is allocated: a day of video at
# 10 fps, and frames larger than 8K video. Stores are shared between people, so a file's sizes are untrusted.
MAX_FRAMES = 1_000_000
MAX_SIDE = 8192


class StoreError(FlowprepError):
    """A store, or a video in it, cannot be read; the message names the path."""


# --- paths ---------------------------------------------------------------------------------------

# Every file name the store makes is <part of the id> + a suffix of at most 22 bytes (".json" + ".tmp-<pid>"):
# an id part of at most NAME_MAX_BYTES leaves room under the 255-byte NAME_MAX of ext4, XFS, btrfs, ZFS and NFS,
# and the whole id under PATH_MAX_BYTES keeps the path far from PATH_MAX (4096). Fixed numbers, not the limits
# of the file system at hand, so a store's names stay the same when it is copied elsewhere.
NAME_MAX_BYTES = 200
PATH_MAX_BYTES = 1000
HASHED_DIR = "#hashed"  # ids whose first part is this are always hashed, so no readable name can collide


def store_name(vid: str) -> str:
    """Where the store keeps video ``vid``: its path under ``videos/`` and ``failed/``, without the suffix.

    The id itself when it is a clean relative path whose parts fit :data:`NAME_MAX_BYTES` and whose UTF-8 fits
    :data:`PATH_MAX_BYTES`; otherwise ``#hashed/<first 32 hex digits of its sha256>``. The full id is kept inside
    each file (the ``id`` attribute or key), so nothing is lost by hashing.
    """
    parts = vid.split("/")
    try:
        raw = vid.encode("utf-8")
        readable = (len(raw) <= PATH_MAX_BYTES and parts[0] != HASHED_DIR
                    and all(p not in ("", ".", "..") and len(p.encode("utf-8")) <= NAME_MAX_BYTES for p in parts))
    except UnicodeEncodeError:  # lone surrogates (a non-UTF-8 name read by os.listdir)
        raw, readable = vid.encode("utf-8", "surrogatepass"), False
    return vid if readable else f"{HASHED_DIR}/{hashlib.sha256(raw).hexdigest()[:32]}"


def video_path(store_dir, vid: str) -> Path:
    """The HDF5 file of video ``vid`` in the store ``store_dir`` (see :func:`store_name`)."""
    return Path(store_dir) / "videos" / (store_name(vid) + ".h5")


def failure_path(store_dir, vid: str) -> Path:
    """The failure record of ``vid``; always inside ``store_dir/failed`` (see :func:`store_name`)."""
    return Path(store_dir) / "failed" / (store_name(vid) + ".json")


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` to write; then fsync it and rename it to ``path``.

    Readers (and a kill -9) see the old file or the new one, never half of one. The temporary name
    ``<name>.tmp-<pid>`` is the one the next extraction removes when a killed run leaves it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a failed write leaves the old file and no temporary behind
        tmp.unlink(missing_ok=True)
        # h5py reports a full disk without the file's name (and often without an errno): say which path.
        if isinstance(e, OSError) and (e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(e)
                                       or "quota exceeded" in str(e).lower()):
            raise OSError(errno.ENOSPC, f"{path}: no space left on the device to write it (free some space and "
                                        "run the same command again)") from None
        raise


def write_json_atomic(path, obj) -> None:
    """Write JSON atomically (see :func:`atomic_path`)."""
    try:
        data = json.dumps(obj, indent=1, ensure_ascii=False, sort_keys=True).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (a non-UTF-8 path): \udcff escapes, which json.load reads back
        data = json.dumps(obj, indent=1, ensure_ascii=True, sort_keys=True).encode("ascii")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_json(path):
    """Read a JSON file; :class:`StoreError` naming the file when it is not valid JSON."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"{path}: not valid JSON ({e}); the file is damaged") from None


def comparable_settings(settings: dict) -> dict:
    """A store's settings (``store.json``) without what may change between runs on the same store.

    That is the flowprep version and the flow method's runtime-only parameters (device, batch size, compile),
    which do not change the flow. Every video file carries this dict as its ``settings`` attribute (JSON), so
    the files say what they were made with even when ``store.json`` is lost or edited.
    """
    from .flow import get_method, method_names

    out = {k: v for k, v in settings.items() if k not in ("flowprep_version", "schema")}
    params = settings.get("params", {})
    out["params"] = get_method(settings["method"]).without_runtime(params) if settings.get("method") in method_names() \
        else dict(params)
    return out


def settings_differences(a: dict, b: dict) -> list[str]:
    """Keys whose values differ between two :func:`comparable_settings` dicts."""
    return [k for k in list(b) + [k for k in a if k not in b] if a.get(k) != b.get(k)]


# --- HDF5 files ----------------------------------------------------------------------------------

def _file_locking_option() -> dict:
    """``{"locking": False}`` where h5py and HDF5 support it (h5py >= 3.5 on HDF5 >= 1.12.1 or 1.10.7+), else ``{}``."""
    h5py_ok = tuple(int(x) for x in h5py.version.version.split(".")[:2]) >= (3, 5)
    v = h5py.version.hdf5_version_tuple[:3]
    hdf5_ok = v >= (1, 12, 1) or (1, 10, 7) <= v < (1, 11)
    return {"locking": False} if h5py_ok and hdf5_ok else {}


# HDF5's file locks fail on many NFS and Lustre mounts (h5py issues 1082, 1101) and protect nothing here: a
# video file is written once, by one process, under a temporary name, and only read after its rename.
# With an older h5py, set HDF5_USE_FILE_LOCKING=FALSE in the environment instead.
NO_LOCKING = _file_locking_option()


def open_h5(path, mode: str = "r") -> h5py.File:
    """Open a store's HDF5 file without HDF5 file locking (see :data:`NO_LOCKING`).

    For reading, the root group's attribute messages are checked from the file's bytes first
    (:func:`flowprep.h5guard.attribute_table`): the HDF5 library trusts them. Raises :class:`StoreError` naming
    the file when they are damaged, or laid out as flowprep never writes them.
    """
    f = h5py.File(path, mode, **NO_LOCKING)
    if mode == "r":
        try:
            attribute_table(f.id)
        except LayoutError as e:
            f.close()
            raise StoreError(f"{path}: {e} (damaged file)") from None
    return f


# --- encoding ------------------------------------------------------------------------------------

def _encode(img: np.ndarray, fmt: str, quality: int) -> np.ndarray:
    ext, args = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, quality]) if fmt == "jpeg" else (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1])
    ok, buf = cv2.imencode(ext, img, args)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {img.shape} image as {fmt}")
    return buf.reshape(-1)


def _digest(contents: dict) -> str:
    """sha256 over ``{dataset name: list of uint8 byte arrays}``, in name order, each item with its length."""
    h = hashlib.sha256()
    for name in sorted(contents):
        h.update(name.encode() + b"\0")
        for item in contents[name]:
            b = np.ascontiguousarray(item).tobytes()
            h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


SCHEMA_DATASETS = ("frame_index", "rgb", "flow_x", "flow_y", "flow")  # every dataset a video file may hold
_DIGEST_BYTES = 16 << 20  # bytes of a fixed-size dataset read at a time to checksum it


def content_digest(f: h5py.File, *, check_images: VideoInfo | None = None, where: str = "") -> str:
    """The ``sha256`` attribute a video file should carry, recomputed from what is stored in ``f``.

    Reads every stored byte once, a slice at a time (memory: 256 items, or 16 MB of a fixed-size dataset).
    Items of variable-length datasets are read by :class:`_HeapReader`, never by the HDF5 library, which would
    allocate whatever length a damaged entry declares; a fixed-size dataset must hold exactly the bytes its
    shape says (no fill values for missing chunks). With ``check_images`` (the file's :class:`VideoInfo`), also
    checks each stored image's header (format and size) on the way: no decoding.

    Raises:
        StoreError: naming ``where`` when a dataset is not one of :data:`SCHEMA_DATASETS`, or is laid out,
            typed or filtered as flowprep never writes it, or its items are not where their entries say.
    """
    if f.mode != "r":  # the items are read from the file's bytes: write out what the library holds back
        f.flush()
    h = hashlib.sha256()
    for name in sorted(f):
        d = f[name]
        if name not in SCHEMA_DATASETS or not isinstance(d, h5py.Dataset):
            raise StoreError(f"{where}: {name!r} is not a dataset flowprep writes")
        h.update(name.encode() + b"\0")
        if d.dtype == object:
            heap = _heap_reader(f, d, name, where)
            for start in range(0, d.shape[0], 256):
                idx = list(range(start, min(start + 256, d.shape[0])))
                for i, item in zip(idx, heap.read(idx)):
                    h.update(len(item).to_bytes(8, "little") + item.tobytes())
                    if check_images is not None and name in ("rgb", "flow_x", "flow_y"):
                        _check_header(item, check_images, name, i, where)
        else:  # the same bytes as hashing the whole array, read in slices along the first axis
            _check_fixed(d, name, where)
            h.update(d.nbytes.to_bytes(8, "little"))
            if d.shape == ():
                h.update(np.ascontiguousarray(d[()]).tobytes())
            else:
                step = max(1, _DIGEST_BYTES // max(1, d.nbytes // max(1, d.shape[0])))
                for start in range(0, d.shape[0], step):
                    h.update(np.ascontiguousarray(d[start:start + step]).tobytes())
    return h.hexdigest()


def _heap_reader(f: h5py.File, d: h5py.Dataset, name: str, where: str) -> "_HeapReader":
    """A :class:`_HeapReader` of the variable-length uint8 dataset ``d``, or :class:`StoreError` when it is not
    laid out as flowprep writes it (contiguous and unfiltered, in a file of the layout :class:`_HeapReader` reads)."""
    fd = f.id.get_vfd_handle()
    if d.ndim != 1 or h5py.check_vlen_dtype(d.dtype) != np.dtype(np.uint8):
        raise StoreError(f"{where}: dataset {name!r} of shape {d.shape} and dtype {d.dtype} is not a column of "
                         "variable-length uint8 items")
    if d.id.get_create_plist().get_nfilters():
        raise StoreError(f"{where}: dataset {name!r} is compressed or filtered, which flowprep never writes")
    base = _HeapReader.file_base(fd)
    offset = _HeapReader.locate_table(d.id) if base is not None else None
    if offset is None:
        raise StoreError(f"{where}: dataset {name!r} is not stored contiguously, as flowprep stores it")
    return _HeapReader(fd, offset, d.shape[0], name, os.fstat(fd).st_size, Path(where), base)


def _check_fixed(d: h5py.Dataset, name: str, where: str) -> None:
    """Refuse a fixed-size dataset that is not plain numbers, or whose stored bytes are not exactly those of its
    shape: the HDF5 library fills missing chunks with fill values, so a few stored bytes could declare gigabytes."""
    if d.dtype.kind not in "iuf":
        raise StoreError(f"{where}: dataset {name!r} has dtype {d.dtype}, which flowprep never writes")
    stored = d.id.get_storage_size()
    if stored != d.nbytes:
        raise StoreError(f"{where}: dataset {name!r} stores {stored} bytes, but its shape {d.shape} and dtype "
                         f"{d.dtype} need {d.nbytes} (damaged file)")


def _check_header(item, info: "VideoInfo", name: str, i: int, where: str) -> int:
    """Refuse item ``i`` of dataset ``name`` unless its header says it is an image of the file's format and size
    (and 1 channel for flow; 1 or 3 for frames, which decode to RGB either way). Returns where the part of the
    header that says so ends (see :func:`_image_header`)."""
    fmt = info.rgb_format if name == "rgb" else info.flow_format
    channels = (3, 1) if name == "rgb" else (1,)
    try:
        kind, h, w, c, end = _image_header(item)
    except ValueError as e:
        raise StoreError(f"{where}: {name}[{i}]: a stored image holds undecodable bytes ({e})") from None
    if kind != fmt or (h, w) != (info.height, info.width) or c not in channels:
        raise StoreError(f"{where}: {name}[{i}]: a stored image holds a {w}x{h} {kind} image with {c} channels, not a "
                         f"{fmt} image of {info.width}x{info.height} with {' or '.join(map(str, channels))} "
                         "(damaged or crafted file)")
    return end


# JPEG start-of-frame markers (baseline, progressive, lossless, ...): the ones that carry the image size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # PNG colour type -> channels


def image_header(buf) -> tuple[str, int, int, int]:
    """(format, height, width, channels) of a JPEG or PNG from its header, without decoding it.

    Reads the JPEG's start-of-frame segment or the PNG's IHDR chunk: a few dozen bytes. Raises
    ``ValueError`` for anything else (other image formats are never stored, so never decoded).
    """
    return _image_header(buf)[:4]


def _image_header(buf) -> tuple[str, int, int, int, int]:
    """:func:`image_header` and the offset where the bytes it read end: an image whose first that many bytes are
    the same has the same header (a video's JPEGs share everything up to their frame size)."""
    b = memoryview(np.ascontiguousarray(buf, np.uint8)).cast("B")
    n = len(b)
    if n >= 26 and bytes(b[:8]) == b"\x89PNG\r\n\x1a\n" and bytes(b[12:16]) == b"IHDR":
        w, h = int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
        return "png", h, w, _PNG_CHANNELS.get(b[25], 0), 26
    if n < 4 or b[0] != 0xFF or b[1] != 0xD8:
        raise ValueError("neither a JPEG nor a PNG")
    i = 2
    for _ in range(256):  # a real JPEG reaches its frame header within a handful of segments
        while i < n and b[i] == 0xFF and i + 1 < n and b[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 4 > n or b[i] != 0xFF:
            break
        marker = b[i + 1]
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            i += 2
            continue
        length = int.from_bytes(b[i + 2:i + 4], "big")
        if marker in _SOF:
            if length < 8 or i + 10 > n:
                break
            return ("jpeg", int.from_bytes(b[i + 5:i + 7], "big"), int.from_bytes(b[i + 7:i + 9], "big"), b[i + 9],
                    i + 10)
        if marker in (0xDA, 0xD9) or length < 2:  # scan data or the end before any frame header
            break
        i += 2 + length
    raise ValueError("a JPEG without a readable frame header")


def write_video(path, *, frames, frame_index, codes_or_flow, attrs: dict, rgb_format="jpeg", flow_format="jpeg",
                jpeg_quality=95) -> int:
    """Encode one video and write its file atomically (temporary name, then rename). Returns its size in bytes.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        frame_index: (T,) source frame indices.
        codes_or_flow: (T-1, H, W, 2) uint8 quantised codes, or float flow when ``flow_format="float16"``.
        attrs: attributes to store (see the module docstring).
    """
    contents = {"frame_index": np.asarray(frame_index, np.int32)}
    if rgb_format == "jpeg":
        contents["rgb"] = [_encode(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR), "jpeg", jpeg_quality) for fr in frames]
    else:
        contents["rgb"] = np.asarray(frames, np.uint8)
    if flow_format == "float16":
        contents["flow"] = np.asarray(codes_or_flow, np.float16)
    elif flow_format == "raw":
        for c, name in enumerate(("flow_x", "flow_y")):
            contents[name] = np.ascontiguousarray(codes_or_flow[..., c])
    else:
        for c, name in enumerate(("flow_x", "flow_y")):
            contents[name] = [_encode(codes_or_flow[i, ..., c], flow_format, jpeg_quality)
                              for i in range(len(codes_or_flow))]
    return write_encoded(path, contents, {**attrs, "rgb_format": rgb_format, "flow_format": flow_format})


def write_encoded(path, contents: dict, attrs: dict) -> int:
    """Write one video's file from already encoded contents, atomically. Returns its size in bytes.

    The one place that lays out a video file, for extraction (:func:`write_video`) and for imported frame
    folders (:mod:`flowprep.rawframes`, which keeps the source JPEG bytes as they are).

    Args:
        contents: ``{dataset name: value}`` in the schema of the module docstring; a list of encoded images
            (uint8 arrays or ``bytes``) becomes a variable-length uint8 dataset (encoded images), an array a fixed one (chunked per frame
            when it has frames).
        attrs: attributes to store, ``rgb_format`` and ``flow_format`` among them; ``sha256`` is added.
    """
    vlen = h5py.vlen_dtype(np.uint8)
    digested = {}  # {dataset name: [items]}, what the sha256 attribute covers
    with atomic_path(path) as tmp, h5py.File(tmp, "w", **NO_LOCKING) as f:
        for name, value in contents.items():
            if isinstance(value, list):
                items = [np.frombuffer(b, np.uint8) if isinstance(b, bytes) else np.asarray(b, np.uint8).reshape(-1)
                         for b in value]
                column = np.empty(len(items), dtype=object)
                for i, buf in enumerate(items):  # one by one: numpy would make equal-length items one 2D array
                    column[i] = buf
                # One write of the whole column: the same file bytes as item by item, 5-25x faster (h5py's
                # per-item overhead was most of an import's time). Low-level, because h5py's d[...] = column
                # takes equal-length items for a 2D array.
                f.create_dataset(name, (len(items),), dtype=vlen).id.write(h5py.h5s.ALL, h5py.h5s.ALL, column)
                digested[name] = items
            else:
                chunks = (1,) + value.shape[1:] if value.ndim > 1 else None
                f.create_dataset(name, data=value, chunks=chunks)
                digested[name] = [value]
        # Attributes after the datasets: their strings go to the global heap too, and after the items they leave
        # the items first in their heap collections, where the reader finds them from their entries alone.
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs["sha256"] = _digest(digested)
    return Path(path).stat().st_size


# --- reading -------------------------------------------------------------------------------------

@contextmanager
def _reading(where: str):
    """Turn what h5py raises on damaged data (OSError, ValueError, RuntimeError, ...) into a StoreError naming the
    file; StoreErrors and IndexErrors (an index out of range: the caller's mistake) pass unchanged."""
    try:
        yield
    except (StoreError, IndexError):
        raise
    except Exception as e:
        raise _unreadable(where, e) from None


def _unreadable(where: str, e: Exception) -> StoreError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return StoreError(f"{where}: unreadable data ({first})")


@dataclass(frozen=True)
class VideoInfo:
    """The attributes of one video file that reads depend on, checked against its datasets (see :func:`check_file`)."""

    num_frames: int
    height: int
    width: int
    rgb_format: str
    flow_format: str
    bound: float
    mapping: str


def _attr(f: h5py.File, name: str, where: str):
    try:  # a string attribute's heap collection is checked before the HDF5 library walks it
        attribute_table(f.id).check(name)
    except LayoutError as e:
        raise StoreError(f"{where}: {e} (damaged file)") from None
    if name not in f.attrs:
        raise StoreError(f"{where}: attribute {name!r} is missing")
    v = f.attrs[name]
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, np.generic):  # plain Python values, which also print plainly in messages
        v = v.item()
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _equal(a, b) -> bool:
    """``a == b`` for values read from a file, which may be arrays where a plain value belongs (no ambiguity)."""
    return not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray) and a == b


def _sha256_attr(f: h5py.File, where: str) -> str:
    """The file's ``sha256`` attribute: 64 hexadecimal digits, else :class:`StoreError`."""
    v = _attr(f, "sha256", where)
    if not isinstance(v, str) or len(v) != 64:
        raise StoreError(f"{where}: attribute sha256={v!r} is not a sha256 digest (damaged file)")
    return v


def _int_attr(f: h5py.File, name: str, lo: int, hi: int, where: str) -> int:
    v = _attr(f, name, where)
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or not lo <= int(v) <= hi:
        raise StoreError(f"{where}: attribute {name}={v!r} is not an integer in {lo}..{hi}")
    return int(v)


def _str_attr(f: h5py.File, name: str, choices, where: str) -> str:
    v = _attr(f, name, where)
    if not isinstance(v, str) or v not in choices:
        raise StoreError(f"{where}: attribute {name}={v!r} is not one of {', '.join(choices)}")
    return v


def _check_dataset(f: h5py.File, name: str, shape: tuple, dtype, where: str) -> None:
    """``f[name]`` must exist with exactly ``shape`` and ``dtype`` (``"vlen"``: variable-length uint8), unfiltered."""
    d = f.get(name)
    if not isinstance(d, h5py.Dataset):
        raise StoreError(f"{where}: dataset {name!r} is missing")
    _check_ds(d, name, shape, dtype, where)


def _check_ds(d: h5py.Dataset, name: str, shape: tuple, dtype, where: str) -> None:
    if d.shape != shape:
        raise StoreError(f"{where}: dataset {name!r} has shape {d.shape}, expected {shape} from the file's attributes")
    if dtype == "vlen":
        if h5py.check_vlen_dtype(d.dtype) != np.dtype(np.uint8):
            raise StoreError(f"{where}: dataset {name!r} has dtype {d.dtype}, expected variable-length uint8")
    elif dtype == "int":
        if d.dtype.kind not in "iu":
            raise StoreError(f"{where}: dataset {name!r} has dtype {d.dtype}, expected integers")
    elif d.dtype != np.dtype(dtype):
        raise StoreError(f"{where}: dataset {name!r} has dtype {d.dtype}, expected {np.dtype(dtype)}")
    # flowprep never compresses: a filter could expand a few stored bytes into gigabytes when read.
    if d.id.get_create_plist().get_nfilters():
        raise StoreError(f"{where}: dataset {name!r} is compressed or filtered, which flowprep never writes")
    if dtype == "vlen":  # read only by _HeapReader, which needs the entries contiguous: T of 16 bytes
        if d.id.get_offset() is None or d.id.get_storage_size() != 16 * d.shape[0]:
            raise StoreError(f"{where}: dataset {name!r} is not stored contiguously, as flowprep stores it")
    else:
        _check_fixed(d, name, where)


def check_file(f: h5py.File, where: str, *, settings: dict | None = None, vid: str | None = None) -> VideoInfo:
    """Check a video file's structure against its own attributes and, with ``settings``, against its store's.

    Checks, reading only metadata (no frame data; well under a millisecond per file): the attributes reads
    depend on are there, of the right types, with sizes within ``MAX_FRAMES`` / ``MAX_SIDE``; every dataset has
    the length the file's ``num_frames`` gives it (T frames, T-1 flow frames), the dtype and per-frame shape
    its format gives it, and no compression filter; the ``id`` attribute is ``vid``; the method, bound, mapping
    and formats (and the full ``settings`` attribute, where the file has one) are those of ``store.json``; and
    the frame size is the one ``store.json``'s decode settings make.

    Raises:
        StoreError: naming ``where`` (the file's path) and the first problem found.
    """
    info = check_attributes(f, where)
    t, h, w = info.num_frames, info.height, info.width
    rgb_format, flow_format = info.rgb_format, info.flow_format
    if "frame_index" in f:  # not needed to read the frames; checked where present
        _check_dataset(f, "frame_index", (t,), "int", where)
    if rgb_format == "jpeg":
        _check_dataset(f, "rgb", (t,), "vlen", where)
    else:
        _check_dataset(f, "rgb", (t, h, w, 3), np.uint8, where)
    if flow_format == "float16":
        _check_dataset(f, "flow", (t - 1, h, w, 2), np.float16, where)
    else:
        for name in ("flow_x", "flow_y"):
            if flow_format == "raw":
                _check_dataset(f, name, (t - 1, h, w), np.uint8, where)
            else:
                _check_dataset(f, name, (t - 1,), "vlen", where)
    if vid is not None and "id" in f.attrs and not _equal(_attr(f, "id", where), vid):
        raise StoreError(f"{where}: holds video {_attr(f, 'id', where)!r}, not {vid!r}")
    if settings is not None:
        _check_against_settings(f, info, settings, where)
    return info


def check_attributes(f: h5py.File, where: str) -> VideoInfo:
    """The :class:`VideoInfo` of a video file from its attributes, each checked: present, of the right type, and
    sizes within :data:`MAX_FRAMES` / :data:`MAX_SIDE` (the part of :func:`check_file` that reads no dataset)."""
    t = _int_attr(f, "num_frames", 2, MAX_FRAMES, where)
    h = _int_attr(f, "height", 1, MAX_SIDE, where)
    w = _int_attr(f, "width", 1, MAX_SIDE, where)
    rgb_format = _str_attr(f, "rgb_format", RGB_FORMATS, where)
    flow_format = _str_attr(f, "flow_format", FLOW_FORMATS, where)
    mapping = _str_attr(f, "mapping", MAPPINGS, where)
    bound = _attr(f, "bound", where)
    if isinstance(bound, (bool, np.bool_)) or not isinstance(bound, (int, float, np.number)) \
            or not math.isfinite(bound) or not bound > 0:
        raise StoreError(f"{where}: attribute bound={bound!r} is not a positive number")
    return VideoInfo(t, h, w, rgb_format, flow_format, float(bound), mapping)


def _check_against_settings(f: h5py.File, info: VideoInfo, settings: dict, where: str) -> None:
    mine = {"bound": info.bound, "mapping": info.mapping, "rgb_format": info.rgb_format,
            "flow_format": info.flow_format}
    if "method" in f.attrs:
        mine["method"] = _attr(f, "method", where)
    for k, v in mine.items():
        if k in settings and not _equal(settings[k], v):
            raise StoreError(f"{where}: made with {k} {v!r}, but store.json says {settings.get(k)!r} "
                             "(store.json edited, or the file comes from another store)")
    if "settings" in f.attrs:
        try:
            own = json.loads(_attr(f, "settings", where))
        except (TypeError, ValueError):
            raise StoreError(f"{where}: attribute 'settings' is not valid JSON") from None
        differ = settings_differences(own, comparable_settings(settings))
        if differ:
            k = differ[0]
            raise StoreError(f"{where}: made with {k} {own.get(k)!r}, but store.json says {settings.get(k)!r}")
    decode = settings.get("decode") or {}
    size, short = decode.get("size"), decode.get("short_side")
    if size and (info.width, info.height) != tuple(size):
        raise StoreError(f"{where}: frames are {info.width}x{info.height}, but store.json says {size[0]}x{size[1]}")
    if not size and short and min(info.width, info.height) != short:
        raise StoreError(f"{where}: frames are {info.width}x{info.height}, but store.json says short side {short}")


def recorded_settings(path) -> dict | None:
    """The settings a video file records (its ``settings`` attribute: :func:`comparable_settings` of its store's),
    or None when it is unreadable, has none, or they are not valid settings."""
    try:
        with open_h5(path) as f, _reading(str(path)):
            settings = json.loads(_attr(f, "settings", str(path)))
    except (StoreError, OSError, ValueError, TypeError):
        return None
    ok = isinstance(settings, dict) and not settings_problem({**settings, "schema": SCHEMA_VERSION})
    return settings if ok else None


def check_video_file(path, *, vid: str | None = None, settings: dict | None = None,
                     checksum: bool = True) -> tuple[str, VideoInfo | None]:
    """Check one finished video file: ``("", its VideoInfo)`` when it is sound, else ``(the problem, None)``.

    Runs :func:`check_file` (metadata: about a millisecond), and with ``checksum`` recomputes the ``sha256`` of
    the contents and checks every image's header: this reads the whole file once, without decoding (the cost of
    reading the store from disk; hashing runs at over 1 GB/s on one core). Never raises for a damaged file:
    this is what ``flowprep extract`` runs on the finished videos of a store it resumes, to extract the damaged
    ones again.
    """
    where = str(path)
    try:
        with open_h5(path) as f:
            info = check_file(f, where, settings=settings, vid=vid)
            if checksum:
                if "sha256" not in f.attrs:
                    return "no sha256 attribute to check the contents against", None
                if content_digest(f, check_images=info, where=where) != _sha256_attr(f, where):
                    return "contents do not match their sha256 (damaged file)", None
    except StoreError as e:
        return (str(e)[len(where) + 2:] if str(e).startswith(where + ": ") else str(e)), None
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError, ... on damaged files
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"unreadable HDF5 file ({first})", None
    return "", info




# One item of a variable-length dataset as stored: its length, then the global heap ID of its bytes
# (the address of a heap collection and the object's index in it). HDF5 File Format Specification 3.0,
# "Datatype Message", variable-length class, and "Global Heap".
_ENTRY = struct.Struct("<IQI")
_EMPTY = np.zeros(0, np.uint8)
_WALK_CHUNK = 1 << 16  # bytes of a heap collection read at once when walking its object headers
_READ_GAP = 8192  # items less than this apart are read with one pread of their range (cheaper than two calls)


class _Entries:
    """A dataset's entries, each ``(length, collection address, object index)``, unpacked when looked up (on an
    open that reads one item, unpacking all T of them cost more than the read)."""

    __slots__ = ("buf", "base")

    def __init__(self, buf: bytes, base: int = 0):
        self.buf, self.base = buf, base  # heap addresses are relative to the base address (a user block's size)

    def __len__(self) -> int:
        return len(self.buf) // _ENTRY.size

    def __getitem__(self, i: int) -> tuple[int, int, int]:
        length, address, index = _ENTRY.unpack_from(self.buf, _ENTRY.size * i)
        return length, address + self.base, index


class _HeapReader:
    """Reads items of a contiguous variable-length uint8 dataset with ``os.pread``: the cost of their bytes.

    h5py spends ~80 us of library work on each read of a variable-length dataset, more than decoding a
    small JPEG; the items' bytes are reachable directly. The dataset's T 16-byte entries (``_ENTRY``) are
    read once; each names a global heap collection (a 16-byte header ``GCOL``, version 1, size, then objects,
    each a 16-byte header and its bytes padded to 8) whose object headers are walked once, up to the object
    asked for, the first time one of its objects is read. Every offset and size is checked against the file
    size and the item's stored length, so damage gives a :class:`StoreError`, never an unbounded allocation.
    """

    def __init__(self, fd: int, table_offset: int, n: int, name: str, file_size: int, path: Path, base: int = 0):
        self.fd, self.file_size, self.path, self.name = fd, file_size, path, name
        self.table = _Entries(self._pread(n * _ENTRY.size, table_offset), base)
        # item -> offset of its bytes, predicted when first read (_predict); 0 (the superblock's place): not yet
        self._predicted = array("q", bytes(8 * n))
        self._collections: dict[int, list] = {}  # address -> [{index: offset}, next header offset, end]

    def nbytes(self) -> int:
        """About the memory this reader holds (see :meth:`VideoFile.nbytes`)."""
        return 24 * len(self.table) + 200

    @staticmethod
    def locate_table(dataset: h5py.h5d.DatasetID) -> int | None:
        """File offset of a variable-length uint8 dataset's entries if they lie contiguous in the file, else None
        (chunked or not yet written: h5py reads those)."""
        if dataset.get_type().get_class() != h5py.h5t.VLEN or h5py.check_vlen_dtype(dataset.dtype) != np.uint8:
            return None
        return dataset.get_offset()

    @staticmethod
    def file_base(fd: int) -> int | None:
        """The base address of the file's addresses (its user block's size) if its superblock says what the reader
        assumes (8-byte addresses and sizes; see :func:`flowprep.h5guard.superblock`), else None."""
        try:
            return superblock(fd)[0]
        except LayoutError:
            return None

    @staticmethod
    def file_supported(fd: int) -> bool:
        """Whether the file's superblock says what the reader assumes, without a user block (then the layout
        :func:`file_layout` records is all a reader needs)."""
        return _HeapReader.file_base(fd) == 0

    def _pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or offset + size > self.file_size:
            raise StoreError(f"{self.path}: {self.name} points past the end of the file (damaged file)")
        buf = os.pread(self.fd, size, offset)
        if len(buf) != size:
            raise StoreError(f"{self.path}: {self.name}: short read at byte {offset} (truncated file)")
        return buf

    def _walk(self, i: int) -> int:
        """File offset of item ``i``'s bytes, found by walking its collection's object headers (kept for later).
        The headers come from reads of up to :data:`_WALK_CHUNK` bytes, not one read per header."""
        length, address, index = self.table[i]
        c = self._collections.get(address)
        buf, buf_at = b"", 0
        if c is None:
            buf, buf_at = self._pread(max(16, min(_WALK_CHUNK, self.file_size - address)), address), address
            size = int.from_bytes(buf[8:16], "little")
            if buf[:5] != b"GCOL\x01" or address + size > self.file_size:
                raise StoreError(f"{self.path}: {self.name} item {i}: no heap collection at byte {address} (damaged file)")
            c = self._collections[address] = [{}, address + 16, address + size]
        objects, pos, end = c
        while index not in objects and pos + 16 <= end:
            if pos < buf_at or pos + 16 > buf_at + len(buf):
                buf, buf_at = self._pread(min(_WALK_CHUNK, end - pos), pos), pos
            obj, _, _, size = HEAP_OBJECT.unpack_from(buf, pos - buf_at)
            if obj == 0:  # free space fills the rest of the collection
                pos = end
                break
            objects[obj] = pos + 16, size
            pos += 16 + (size + 7) // 8 * 8
        c[1] = pos
        found = objects.get(index)
        if found is None or found[1] != length or found[0] + length > end:
            raise StoreError(f"{self.path}: {self.name} item {i} is not where its entry says (damaged file)")
        return found[0]

    def _locate(self, i: int) -> int:
        """File offset of item ``i``'s bytes: predicted (checked against its header when read), or walked."""
        predicted = self._predicted[i]  # a prediction found wrong was reset to 0
        if predicted:
            return predicted
        _, address, index = self.table[i]
        c = self._collections.get(address)
        if c is not None and index in c[0]:
            return c[0][index][0]
        predicted = self._predict(i)
        return predicted if predicted is not None else self._walk(i)

    def _predict(self, i: int) -> int | None:
        """Where item ``i``'s bytes lie, from the dataset's entries alone, or None.

        A heap collection lays its objects out in index order, each a 16-byte header and its bytes padded to 8
        (HDF5 File Format Specification, "Global Heap"). Written as one column, a dataset's items fill
        collections in order, so item ``i``, object k of its collection, usually follows items i-k+1 .. i-1 as
        objects 1 .. k-1; when the entries say so, its offset follows from their lengths. Costs k steps, no read;
        a wrong prediction is caught by the object header when the item is read.
        """
        length, address, index = self.table[i]
        first = i - index + 1
        if first < 0:
            return None
        offset = address + 32
        for j in range(first, i):
            n, a, k = self.table[j]
            if a != address or k != j - first + 1:
                return None
            offset += 16 + (n + 7) // 8 * 8
        self._predicted[i] = offset
        return offset

    def read(self, indices: list[int]) -> list[np.ndarray]:
        """The items ``indices`` as uint8 arrays; items lying near each other come from one read of their range,
        which includes each item's 16-byte object header, checked against the item's entry."""
        if len(indices) == 1:  # what a 2D spatial stream reads: no grouping
            return [self.read_one(indices[0])]
        out = [_EMPTY] * len(indices)
        spans = sorted((self._locate(i) - 16, self.table[i][0] + 16, k, i) for k, i in enumerate(indices)
                       if self.table[i][0])
        first = 0
        for j in range(1, len(spans) + 1):  # split ``spans`` into runs of items less than _READ_GAP apart
            if j < len(spans) and spans[j][0] - (spans[j - 1][0] + spans[j - 1][1]) <= _READ_GAP:
                continue
            run = spans[first:j]
            lo = run[0][0]
            buf = self._pread(max(o + n for o, n, _, _ in run) - lo, lo)
            for o, n, k, i in run:
                out[k] = self._item(buf, o - lo, i)
            first = j
        return out

    def read_one(self, i: int) -> np.ndarray:
        """Item ``i`` (what :meth:`read` does for one item, with nothing a single item does not need)."""
        length = self.table[i][0]
        if not length:
            return _EMPTY
        return self._item(self._pread(length + 16, self._locate(i) - 16), 0, i)

    def _item(self, buf: bytes, at: int, i: int) -> np.ndarray:
        """Item ``i`` from ``buf``, which holds its object header at ``at`` and its bytes after it, if the header
        agrees with the item's entry; else (a wrong prediction: objects of another dataset in between) walked
        to, and read alone."""
        length, _, index = self.table[i]
        obj, _, _, size = HEAP_OBJECT.unpack_from(buf, at)
        if obj == index and size == length:
            return np.frombuffer(buf, np.uint8, length, at + 16)
        self._predicted[i] = 0
        return np.frombuffer(self._pread(length, self._walk(i)), np.uint8)


class _ClosedFiles:
    """The :class:`VideoFile` objects a process has closed, with what they found (facts, where each dataset's items
    lie, the entries), so that opening a file again costs an ``open`` and an ``fstat``: what a dataset much larger
    than :class:`Store`'s open files needs, where nearly every read opens its file.

    :meth:`VideoFile.reopen` uses one only for a file of the same identity (device, inode, size and modification
    time): a file replaced or rewritten since is opened afresh. Least recently closed files go first when they hold
    more than ``max_bytes`` (:meth:`VideoFile.nbytes`: about 24 bytes per item read through its entries).
    """

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes = max_bytes, 0
        self._files: OrderedDict = OrderedDict()  # vid -> closed VideoFile

    def pop(self, vid: str) -> "VideoFile | None":
        v = self._files.pop(vid, None)
        if v is not None:
            self.nbytes -= v.nbytes()
        return v

    def put(self, vid: str, v: "VideoFile") -> None:
        self.pop(vid)
        n = v.nbytes()
        if n > self.max_bytes:
            return
        self._files[vid] = v
        self.nbytes += n
        while self.nbytes > self.max_bytes:
            self.nbytes -= self._files.popitem(last=False)[1].nbytes()

    def clear(self) -> None:
        self._files.clear()
        self.nbytes = 0


def file_layout(f: h5py.File) -> dict:
    """Where a video file's JPEG/PNG datasets lie: ``{name: [offset of its entries, length]}`` for each
    variable-length uint8 dataset stored contiguously, when :class:`_HeapReader` can read the file (else ``{}``).

    ``flowprep extract`` records it in ``index.json``, so that a process reading the store finds a file's items
    without opening it in HDF5 (about a millisecond per file, several disk reads on a cold cache: more than a
    read of an image). A reader uses it only for a file of the size the index records, with lengths that agree
    with the frame count it uses, and checks each item's heap object header against its entry, so a stale or
    edited index falls back to HDF5 or gives a :class:`StoreError`, never wrong bytes.
    """
    if not _HeapReader.file_supported(f.id.get_vfd_handle()):
        return {}
    out = {}
    for name in ("rgb", "flow_x", "flow_y"):
        if name in f:
            dsid = f[name].id
            offset = _HeapReader.locate_table(dsid)
            if offset is not None and len(dsid.shape) == 1:
                out[name] = [int(offset), int(dsid.shape[0])]
    return out


# What a reader needs to know of a video file: its attributes of these names (see the module docstring).
VIDEO_FACTS = ("num_frames", "height", "width", "rgb_format", "flow_format", "bound", "mapping")


class VideoFile:
    """One video file of a store, open for reading, with what every read needs.

    Everything that does not depend on the call is found once per open (per dataset, when it is first read:
    its length checked against ``num_frames``, where its items lie), so a read costs what its bytes cost.
    Checks of a file's integrity that must run before anything is read go in :meth:`_check_dataset`, which
    runs once per open and dataset. JPEG/PNG items are read without the HDF5 library (see :class:`_HeapReader`);
    the HDF5 file is opened only when something needs it (the facts, another format, :attr:`h5`), because
    opening it costs more than several reads.

    Args:
        path: the video file.
        facts: ``{name: value}`` for :data:`VIDEO_FACTS` when the store already knows them (:class:`Store` passes
            what :func:`check_file` found in the file when this process, or its parent, first opened it); then no
            attribute is read (each costs ~50 us in HDF5). Otherwise they are read from the file's attributes and
            checked (:func:`check_attributes`; each dataset is checked when it is first read).
        facts_from: where ``facts`` came from, for messages.
        layout: where the file's datasets lie, ``{"bytes": file size, name: (offset of the entries, length)}``,
            as ``index.json`` records it or an earlier open of the same file in this process found it; used for a
            file of that size only, and updated with what this open finds.
        headers: ``{(dataset, height, width): leading bytes}`` of image headers already checked, shared between
            files (a store's JPEGs of one size and quality share their headers); updated.

    Attributes:
        num_frames, height, width, rgb_format, flow_format, bound, mapping: see ``facts``.
    """

    def __init__(self, path: Path, facts: dict | None = None, layout: dict | None = None, *,
                 facts_from: str = "the store's index.json", headers: dict | None = None):
        self.path, self._h5, self._datasets = path, None, {}
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._open(facts, {} if layout is None else layout, facts_from, headers)
        except BaseException:
            self.close()
            raise

    def _open(self, facts: dict | None, layout: dict, facts_from: str, headers: dict | None) -> None:
        if facts is None:  # read and checked from the file itself (check_file)
            with _reading(str(self.path)):
                facts = asdict(check_attributes(self.h5, str(self.path)))
            self._source = "its attributes"
        else:
            self._source = facts_from
        self.num_frames, self.height, self.width = (int(facts[k]) for k in ("num_frames", "height", "width"))
        self.rgb_format, self.flow_format = str(facts["rgb_format"]), str(facts["flow_format"])
        self.bound, self.mapping = float(facts["bound"]), str(facts["mapping"])
        st = os.fstat(self._fd)
        self._size, self._ident = st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if layout.get("bytes", self._size) != self._size:  # not the file it was recorded for: find it all again
            layout.clear()
        layout["bytes"] = self._size
        self._layout = layout
        self._datasets: dict[str, tuple] = {}  # name -> (h5py.Dataset or None, _HeapReader or None)
        self._lut = None
        # (dataset, height, width) -> the leading bytes of an image whose header was checked against them
        self._headers: dict[tuple, bytes] = {} if headers is None else headers

    @property
    def h5(self) -> h5py.File:
        """The h5py handle (opened on first use)."""
        if self._h5 is None:
            try:
                self._h5 = open_h5(self.path)
            except (OSError, ValueError) as e:
                raise StoreError(f"{self.path}: unreadable HDF5 file ({e})") from None
        return self._h5

    def dataset(self, name: str) -> h5py.Dataset:
        """The h5py dataset ``name``, its length checked against ``num_frames``."""
        d = self._dataset(name)[0]
        return d if d is not None else self._open_dataset(name)[0]

    def _dataset(self, name: str) -> tuple:
        got = self._datasets.get(name)
        if got is not None:
            return got
        known = self._layout.get(name)
        if known is not None and known[1] == self._length(name) and self._format(name) in ("jpeg", "png"):
            # recorded by extraction (index.json) or found by an earlier open of this file: no HDF5 needed
            got = self._datasets[name] = None, _HeapReader(self._fd, known[0], known[1], name, self._size, self.path)
        else:
            got = self._open_dataset(name)
        return got

    def _open_dataset(self, name: str) -> tuple:
        try:
            dsid = h5py.h5d.open(self.h5.id, name.encode())
        except KeyError:
            raise StoreError(f"{self.path}: dataset {name!r} missing (damaged file)") from None
        self._check_dataset(name, dsid)
        heap = None
        base = _HeapReader.file_base(self._fd)
        offset = _HeapReader.locate_table(dsid) if base is not None else None
        if offset is not None:
            heap = _HeapReader(self._fd, offset, dsid.shape[0], name, self._size, self.path, base)
            if base == 0:  # what a later open of this file reads without HDF5
                self._layout[name] = offset, dsid.shape[0]
        elif dsid.dtype == object:  # never read by the HDF5 library (see flowprep.h5guard)
            raise StoreError(f"{self.path}: dataset {name!r} is not stored as flowprep stores it (damaged file)")
        got = self._datasets[name] = h5py.Dataset(dsid), heap
        return got

    def _length(self, name: str) -> int:
        """How many items dataset ``name`` holds, as ``num_frames`` says."""
        return self.num_frames if name == "rgb" else self.num_frames - 1

    def _format(self, name: str) -> str:
        return self.rgb_format if name == "rgb" else self.flow_format

    def _check_dataset(self, name: str, dsid: h5py.h5d.DatasetID) -> None:
        """Refuse a dataset whose length disagrees with ``num_frames``, or whose dtype, frame shape or filters are
        not what the format gives it (before any read allocates)."""
        want = self._length(name)
        if self.num_frames < 1 or dsid.shape[:1] != (want,):
            raise StoreError(f"{self.path}: {name} holds {dsid.shape[0] if dsid.shape else 0} items but num_frames "
                             f"{self.num_frames} (from {self._source}) says {want} (damaged file)")
        fmt = self._format(name)
        frame = {"rgb": (self.height, self.width, 3), "flow": (self.height, self.width, 2)}.get(name, (self.height, self.width))
        shape, dtype = ((want,), "vlen") if fmt in ("jpeg", "png") else ((want, *frame), np.float16 if fmt == "float16" else np.uint8)
        with _reading(str(self.path)):
            _check_ds(h5py.Dataset(dsid), name, shape, dtype, str(self.path))

    def stored_bytes(self, name: str) -> int:
        """Bytes the items of dataset ``name`` take in the file (their entries' lengths, for encoded images)."""
        d, heap = self._dataset(name)
        return sum(heap.table[i][0] for i in range(len(heap.table))) if heap is not None else d.id.get_storage_size()

    def items(self, name: str, idx: list[int]) -> list[np.ndarray]:
        """Items ``idx`` of dataset ``name`` as stored (encoded bytes, or arrays in the raw formats)."""
        d, heap = self._dataset(name)
        if heap is not None:
            return heap.read(idx)
        if idx == list(range(idx[0], idx[-1] + 1)):  # one read of a contiguous range
            return list(d[idx[0]:idx[-1] + 1])
        return [d[i] for i in idx]

    def frames(self, idx: list[int]) -> np.ndarray:
        """(K, H, W, 3) uint8 RGB."""
        if len(idx) == 1:  # a 2D spatial stream's read: no copy, nothing one item does not need
            heap = (self._datasets.get("rgb") or self._dataset("rgb"))[1]
            if heap is not None:
                return self._image(heap.read_one(idx[0]), cv2.IMREAD_COLOR_RGB, "rgb", idx[0])[None]
        items = self.items("rgb", idx)
        if self.rgb_format == "raw":
            return np.stack(items)
        out = np.empty((len(items), self.height, self.width, 3), np.uint8)
        for k, b in enumerate(items):
            out[k] = self._image(b, cv2.IMREAD_COLOR_RGB, "rgb", idx[k])
        return out

    def flow(self, idx: list[int]) -> np.ndarray:
        """(K, H, W, 2) float32 pixels."""
        if self.flow_format == "float16":
            flow = np.stack(self.items("flow", idx)).astype(np.float32)
            if not np.isfinite(flow).all():
                raise StoreError(f"{self.path}: non-finite values in flow frames {idx} (damaged file)")
            return flow
        codes = self.flow_codes(idx)
        if self._lut is None:  # cv2.LUT's table: 256 entries, float32 out
            self._lut = dequantize(np.arange(256, dtype=np.uint8), self.bound, self.mapping).reshape(256, 1)
        return cv2.LUT(codes.reshape(len(idx), -1), self._lut).reshape(codes.shape)

    def flow_codes(self, idx: list[int]) -> np.ndarray:
        """(K, H, W, 2) uint8 codes (not for ``flow_format="float16"``)."""
        xs, ys = self.items("flow_x", idx), self.items("flow_y", idx)
        out = np.empty((len(idx), self.height, self.width, 2), np.uint8)
        for k, (x, y) in enumerate(zip(xs, ys)):
            if self.flow_format == "raw":
                out[k, ..., 0], out[k, ..., 1] = x, y
            else:
                out[k, ..., 0] = self._image(x, cv2.IMREAD_GRAYSCALE, "flow_x", idx[k])
                out[k, ..., 1] = self._image(y, cv2.IMREAD_GRAYSCALE, "flow_y", idx[k])
        return out

    def _image(self, buf: np.ndarray, flags: int, name: str, i: int) -> np.ndarray:
        """Decode item ``i`` of dataset ``name``, a stored JPEG/PNG, after checking from its header that it has the
        file's format and frame size: a crafted image declaring a huge size is refused before the decoder
        allocates it, so memory stays within one image of the size the file's attributes state."""
        key = name, self.height, self.width
        known = self._headers.get(key)
        if known is None or buf[:len(known)].tobytes() != known:  # else the same header as one checked before
            end = _check_header(buf, self, name, i, str(self.path))
            self._headers[key] = buf[:end].tobytes()
        img = cv2.imdecode(buf, flags) if len(buf) else None
        if img is None or img.shape[:2] != (self.height, self.width):
            got = "undecodable bytes" if img is None else f"a {img.shape[1]}x{img.shape[0]} image"
            raise StoreError(f"{self.path}: {name}[{i}]: a stored image holds {got}, not {self.width}x{self.height} "
                             "(damaged file)")
        return img

    def close(self) -> None:
        """Close the file; what was found in it stays, for :meth:`reopen`."""
        if self._h5 is not None:
            self._h5.close()
        self._release()

    def abandon(self) -> None:
        """In a process forked from the one that opened this file: close this process's copy of the descriptor
        (the parent's stays open) and drop the HDF5 handle without using it; what was found stays."""
        self._release()

    def _release(self) -> None:
        self._h5 = None
        # h5py datasets die with their file; the items' readers need only a descriptor (reopen gives one)
        self._datasets = {name: (None, heap) for name, (_, heap) in self._datasets.items() if heap is not None}
        self._nbytes = 1000 + sum(heap.nbytes() for _, heap in self._datasets.values())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def reopen(self) -> bool:
        """Open the closed file again, keeping what was found in it, if it is the same file (device, inode, size,
        modification time); False (and still closed) if it is not, or is gone."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != self._ident:
            os.close(fd)
            return False
        self._fd = fd
        for _, heap in self._datasets.values():
            heap.fd = fd
        return True

    def nbytes(self) -> int:
        """About the memory this object holds while closed (what :class:`_ClosedFiles` counts; found on closing)."""
        return self._nbytes


def settings_problem(config) -> str:
    """What is wrong with the contents of a ``store.json`` as read, or "": the schema, and the type or range of
    each setting that is there (a store made by hand for a test may hold only a few)."""
    if not isinstance(config, dict) or config.get("schema") != SCHEMA_VERSION:
        schema = config.get("schema") if isinstance(config, dict) else None
        return f"store schema {schema!r} is not {SCHEMA_VERSION}"
    for key, ok in (("bound", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                     and math.isfinite(v)), ("mapping", lambda v: v in MAPPINGS),
                    ("rgb_format", lambda v: v in RGB_FORMATS), ("flow_format", lambda v: v in FLOW_FORMATS),
                    ("method", lambda v: isinstance(v, str)), ("params", lambda v: isinstance(v, dict)),
                    ("decode", _decode_settings_ok)):
        if key in config and not ok(config[key]):
            return f"{key} is {config.get(key)!r}, not a valid setting"
    return ""


def _decode_settings_ok(d) -> bool:
    """Whether ``store.json``'s ``decode`` is what :meth:`flowprep.decode.DecodeConfig.from_dict` takes."""
    from .decode import DecodeConfig

    try:
        DecodeConfig.from_dict(d)
        return True
    except (TypeError, ValueError, AttributeError):  # ConfigError is a ValueError
        return False


def _manifest_problem(m) -> str:
    """What is wrong with a ``manifest.json``'s contents as read, or "" (see :func:`flowprep.extract.prepare_store`,
    which writes it: ``problems`` and ``split_source`` may be missing from older stores)."""
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(m, dict):
        return "not a JSON object"
    classes, videos, splits = m.get("classes"), m.get("videos"), m.get("splits")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return "'classes' is not a list of names"
    if not isinstance(videos, list) or not all(isinstance(v, dict) and isinstance(v.get("id"), str)
                                               and is_int(v.get("label")) for v in videos):
        return "'videos' is not a list of videos with an id and an integer label"
    if not isinstance(splits, dict) or not all(
            isinstance(k, str) and k.lstrip("-").isdigit() and isinstance(sp, dict)
            and all(isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in sp.values())
            for k, sp in splits.items()):
        return "'splits' is not {split number: {subset: [video ids]}}"
    if not isinstance(m.get("root", ""), str):
        return "'root' is not a path"
    if not isinstance(m.get("problems", []), list):
        return "'problems' is not a list"
    if not isinstance(m.get("split_source"), (str, type(None))):
        return "'split_source' is not a name"
    return ""


class Store:
    """Read access to a store made by ``flowprep extract``.

    Each video file is checked the first time a process (or the parent it was forked from) opens it:
    :func:`check_file` against ``store.json`` and ``index.json``, metadata only, about a millisecond; later
    opens use what that check found and read no attribute. Each image's header is checked before it is
    decoded. A file that fails raises :class:`StoreError` naming it. The full checksum is :meth:`check`'s
    (``flowprep verify``); :meth:`check_videos` checks a list of videos up front (training does).

    Args:
        root: the store directory.
        max_open: how many video files each process keeps open.
        heap_cache_bytes: memory each process may keep, beyond its open files, for what it found in the files it
            closed (:class:`_ClosedFiles`: where their items lie, 24 bytes per frame and dataset read, e.g. 59 MB for
            all of UCF101's RGB), so that opening a file again costs an ``open`` and an ``fstat``; 0 keeps none.
    """

    def __init__(self, root, *, max_open: int = 64, heap_cache_bytes: int = 64 << 20):
        self.root = Path(root)
        if not (self.root / "store.json").is_file():
            raise StoreError(f"{self.root}: not a flowprep store (no store.json); make one with 'flowprep extract'")
        self.config = read_json(self.root / "store.json")
        problem = settings_problem(self.config)
        if problem:
            raise StoreError(f"{self.root / 'store.json'}: {problem}")
        if not (self.root / "manifest.json").is_file():
            raise StoreError(f"{self.root / 'manifest.json'}: missing; rerun 'flowprep extract' to rewrite it")
        self.manifest = read_json(self.root / "manifest.json")
        problem = _manifest_problem(self.manifest)
        if problem:
            raise StoreError(f"{self.root / 'manifest.json'}: not a flowprep manifest ({problem}); rerun 'flowprep "
                             "extract' to rewrite it")
        self.manifest.setdefault("problems", [])
        self.manifest.setdefault("split_source", None)
        self.classes: list[str] = list(self.manifest["classes"])
        self._entries = {v["id"]: v for v in self.manifest["videos"]}
        index = self.root / "index.json"
        self._index: dict = read_json(index) if index.is_file() else {}
        if not isinstance(self._index, dict):
            raise StoreError(f"{index}: not a flowprep index (a JSON object of videos)")
        self._settings = {k: self.config[k] for k in VIDEO_FACTS if k in self.config}
        self._layouts: dict[str, dict] = {}  # vid -> where its datasets lie (plain data: kept across forks)
        self._opening: dict[str, tuple] = {}  # vid -> what video() opens it with (_what_to_open)
        self._headers: dict[tuple, bytes] = {}  # image headers checked, shared by the files (see VideoFile._image)
        self._checked: dict[str, dict] = {}  # vid -> the facts check_file found (plain data: kept across forks)
        self.max_open = max_open
        self._files: OrderedDict = OrderedDict()  # {vid: VideoFile}
        self._closed = _ClosedFiles(heap_cache_bytes)  # kept across forks (each reopen gets its own descriptor)
        self._pid = os.getpid()

    # metadata

    @property
    def splits(self) -> dict[int, dict[str, list[str]]]:
        return {int(k): v for k, v in self.manifest["splits"].items()}

    def video_ids(self, split: int | None = None, subset: str | None = None) -> list[str]:
        """Ids of the finished videos, optionally those of ``subset`` ('train'/'test', or 'val') of split ``split``."""
        if split is None:
            ids = list(self._entries)
        else:
            if split not in self.splits:
                raise StoreError(f"{self.root}: no split {split}; the store has splits {sorted(self.splits)}")
            if subset not in ("train", "val", "test"):
                raise ConfigError(f"subset must be 'train', 'val' or 'test', got {subset!r}")
            if subset not in self.splits[split]:  # 'val' only where a store was made from a val and a test list
                raise StoreError(f"{self.root}: split {split} has no {subset} subset, only "
                                 f"{', '.join(sorted(self.splits[split]))}")
            ids = self.splits[split][subset]
        return [v for v in ids if video_path(self.root, v).is_file()]

    def label(self, vid: str) -> int:
        return self._entries[vid]["label"]

    def num_frames(self, vid: str) -> int:
        """Stored RGB frames T of a video; it has T - 1 flow frames."""
        entry = self._index.get(vid)
        if isinstance(entry, dict) and isinstance(entry.get("num_frames"), int):
            return entry["num_frames"]  # checked against the file when the file is opened
        return self.info(vid).num_frames

    def info(self, vid: str) -> VideoInfo:
        """The attributes of a video's file, checked (see :func:`check_file`)."""
        return VideoInfo(**self._facts(vid))

    def attrs(self, vid: str) -> dict:
        return dict(self._file(vid).attrs)

    def frame_index(self, vid: str) -> np.ndarray:
        """(T,) int32: the index in the source video of each stored frame of ``vid``."""
        return self._file(vid)["frame_index"][:]

    def check(self, vid: str) -> None:
        """Raise :class:`StoreError` if the file of ``vid`` fails :func:`check_file` or its stored bytes differ from
        those written (``sha256``, which reads the whole file), or an image's header disagrees with the file."""
        v = self.video(vid)
        f, info, where = v.h5, self.info(vid), str(v.path)
        with _reading(where):
            digest = content_digest(f, check_images=info, where=where)
        if "sha256" not in f.attrs:
            raise StoreError(f"{where}: no sha256 attribute to check the contents against")
        if digest != _sha256_attr(f, where):
            raise StoreError(f"{where}: contents do not match their sha256 (damaged file)")

    def verify_video(self, vid: str, *, chunk_bytes: int = 64 << 20) -> None:
        """Everything :meth:`check` does, then decode every frame and flow frame and check their shapes and values.

        Reads in chunks of at most ``chunk_bytes`` of decoded data (at least one frame), so memory stays bounded
        whatever the video's length. Raises :class:`StoreError` naming the file and the first problem.
        """
        self.check(vid)
        info = self.info(vid)
        where = str(video_path(self.root, vid))
        n, h, w = info.num_frames, info.height, info.width
        step = max(1, chunk_bytes // (h * w * 11))  # RGB uint8 and float32 flow, with their codes
        for start in range(0, n, step):
            rgb = self.frames(vid, range(start, min(start + step, n)))
            if rgb.shape[1:] != (h, w, 3):
                raise StoreError(f"{where}: frames of shape {rgb.shape[1:]}, the file says {(h, w, 3)}")
        for start in range(0, n - 1, step):
            flow = self.flow(vid, range(start, min(start + step, n - 1)))
            if flow.shape[1:] != (h, w, 2):
                raise StoreError(f"{where}: flow of shape {flow.shape[1:]}, the file says {(h, w, 2)}")
            if not np.isfinite(flow).all():
                raise StoreError(f"{where}: non-finite flow values")

    def check_videos(self, ids) -> None:
        """Check (:func:`check_file`, against ``store.json`` and ``index.json``) the file of every video in ``ids``:
        metadata only, about a millisecond per file. Later reads in this process and in processes forked from it
        (DataLoader workers) use the checked attributes. Raises :class:`StoreError` naming the first file that
        fails and how many fail."""
        bad = []
        for vid in ids:
            try:
                self._facts(vid)
            except StoreError as e:
                bad.append(str(e))
        if bad:
            more = f" (and {len(bad) - 1} more files fail their checks)" if len(bad) > 1 else ""
            raise StoreError(f"{bad[0]}{more}; 'flowprep verify --repair {self.root}' extracts them again")

    def failures(self) -> dict[str, dict]:
        out = {}
        for p in sorted((self.root / "failed").rglob("*.json")):
            try:
                rec = read_json(p)
                out[rec["id"]] = rec
            except (OSError, StoreError, KeyError, TypeError):
                continue
        return out

    def summary(self, *, size_sample: int = 20) -> dict:
        """What ``flowprep info`` prints, as data.

        Returns:
            ``{"root", "settings"`` (``store.json``), ``"videos": {"found", "done", "failed", "pending",
            "problems"}, "frames", "flow_frames", "damaged"`` (problems of files whose frame count cannot be read),
            ``"classes", "splits": {n: {subset: count}}, "split_source", "bytes_per_frame": {"rgb", "flow"}``
            (mean stored bytes over the first ``size_sample`` finished videos whose files pass their checks; None
            without any), ``"failures": {id: reason}}``.
        """
        done, failures = self.video_ids(), self.failures()
        videos = self.manifest["videos"]
        failed = sum(1 for v in videos if v["id"] in failures)  # the other failure records are dataset problems
        frames, damaged = 0, []
        for vid in done:
            try:
                frames += self.num_frames(vid)
            except StoreError as e:
                damaged.append(str(e))
        return {
            "root": str(self.root), "settings": self.config,
            "videos": {"found": len(videos), "done": len(done), "failed": failed,
                       "pending": max(len(videos) - len(done) - failed, 0), "problems": len(self.manifest["problems"])},
            "frames": frames, "flow_frames": frames - len(done), "damaged": damaged, "classes": list(self.classes),
            "splits": {n: {k: len(v) for k, v in sp.items()} for n, sp in sorted(self.splits.items())},
            "split_source": self.manifest["split_source"],
            "bytes_per_frame": self._stored_bytes(done[:size_sample]) if done else None,
            "failures": {vid: rec["error"] for vid, rec in sorted(failures.items())},
        }

    def _stored_bytes(self, ids: list[str]) -> dict:
        """Mean stored bytes per RGB frame and per flow frame (x and y) of those of ``ids`` whose files pass
        their checks."""
        rgb = flow = frames = flows = 0
        for vid in ids:
            try:
                v = self.video(vid)
                sizes = {}
                for name in ("rgb", "flow") if v.flow_format == "float16" else ("rgb", "flow_x", "flow_y"):
                    sizes[name] = v.stored_bytes(name)
            except (StoreError, OSError):
                continue
            rgb += sizes.pop("rgb")
            flow += sum(sizes.values())
            frames += v.num_frames
            flows += v.num_frames - 1
        return {"rgb": rgb / max(frames, 1), "flow": flow / max(flows, 1)}

    def verify(self, ids=None, *, progress: bool = False) -> dict[str, str]:
        """:meth:`verify_video` for each video of ``ids`` (default: every video of the manifest without a failure
        record); returns ``{video id: problem}`` of those whose files fail. Every video is checked, whatever the
        others hold."""
        from tqdm.auto import tqdm

        if ids is None:
            failures = self.failures()
            ids = [v["id"] for v in self.manifest["videos"] if v["id"] not in failures]
        problems = {}
        for vid in tqdm(ids, unit="video", disable=not progress, desc="verify"):
            try:
                self.verify_video(vid)
            except (StoreError, IndexError) as e:  # report every kind of damage, then go on
                problems[vid] = str(e)
            finally:
                self.close()  # a repair may replace the file
        return problems

    # data

    def frames(self, vid: str, indices) -> np.ndarray:
        """RGB frames ``indices`` of video ``vid`` -> (K, H, W, 3) uint8."""
        v = self.video(vid)
        if type(indices) is list and len(indices) == 1 and type(indices[0]) is int and 0 <= indices[0] < v.num_frames:
            idx = indices  # one frame, as a spatial stream draws it: nothing more to check
        else:
            idx = self._indices(vid, indices, v.num_frames, "frame")
        try:  # what _reading does, without a context manager's cost on every read
            return v.frames(idx)
        except (StoreError, IndexError):
            raise
        except Exception as e:
            raise _unreadable(str(v.path), e) from None

    def flow(self, vid: str, indices) -> np.ndarray:
        """Flow frames ``indices`` (flow t goes from frame t to t+1) -> (K, H, W, 2) float32 pixels."""
        v = self.video(vid)
        idx = self._indices(vid, indices, v.num_frames - 1, "flow frame")
        try:
            return v.flow(idx)
        except (StoreError, IndexError):
            raise
        except Exception as e:
            raise _unreadable(str(v.path), e) from None

    def _indices(self, vid, indices, n, what) -> list[int]:
        if type(indices) is range or (type(indices) is list and all(type(i) is int for i in indices)):
            idx = list(indices)  # what loaders pass: no numpy round trip
        else:
            idx = [int(i) for i in np.atleast_1d(indices)]
        if not idx:
            raise IndexError(f"{vid}: no {what} indices given")
        if min(idx) < 0 or max(idx) >= n:
            bad = next(i for i in idx if not 0 <= i < n)
            raise IndexError(f"{vid}: {what} index {bad} out of range (it has {n})")
        return idx

    def video(self, vid: str) -> VideoFile:
        """The open :class:`VideoFile` of ``vid`` in this process (opened, and checked, once)."""
        if os.getpid() != self._pid:  # inherited by a forked worker: never share HDF5 handles across processes
            for name, v in self._files.items():
                v.abandon()
                self._closed.put(name, v)
            self._files = OrderedDict()
            self._pid = os.getpid()
        v = self._files.get(vid)
        if v is not None:
            self._files.move_to_end(vid)
            return v
        v = self._closed.pop(vid)
        if v is None or not v.reopen():
            v = self._open_video(vid)
        self._files[vid] = v
        if len(self._files) > self.max_open:
            name, old = self._files.popitem(last=False)
            old.close()
            self._closed.put(name, old)
        return v

    def _open_video(self, vid: str) -> VideoFile:
        known = self._opening.get(vid)
        if known is None:
            known = self._opening[vid] = self._what_to_open(vid)
        path, facts, source, layout = known
        try:
            return VideoFile(path, facts, layout, facts_from=source, headers=self._headers)
        except StoreError:
            raise
        except (OSError, ValueError) as e:
            if not path.is_file():
                raise StoreError(f"{path}: video {vid!r} is not in the store") from None
            raise StoreError(f"{path}: unreadable HDF5 file ({e})") from None

    def _what_to_open(self, vid: str) -> tuple:
        """(file, facts, where they came from, layout) of ``vid``: what :meth:`video` passes to :class:`VideoFile`,
        found once per video (plain data: kept across forks)."""
        path = video_path(self.root, vid)
        facts, source = self._checked.get(vid), "its attributes"
        if facts is None:
            facts, source = self._index_facts(vid), "the store's index.json"
        if facts is None:  # nothing known: read and check the file's attributes
            facts, source = self._facts(vid), "its attributes"
        layout = self._layouts.get(vid)
        if layout is None:
            layout = self._layouts[vid] = self._index_layout(vid)
        return path, facts, source, layout

    def _file(self, vid: str) -> h5py.File:
        return self.video(vid).h5

    def _index_facts(self, vid: str) -> dict | None:
        """:data:`VIDEO_FACTS` of ``vid`` from ``index.json`` and ``store.json`` if they hold sane values, else None.
        (Each dataset's length is checked against them when it is opened, each image's size when decoded.)"""
        entry = self._index.get(vid)
        if not isinstance(entry, dict):
            return None
        facts = {**self._settings, **{k: entry.get(k) for k in ("num_frames", "height", "width")}}
        sane = (all(isinstance(facts.get(k), int) and not isinstance(facts.get(k), bool) for k in ("num_frames", "height", "width"))
                and 2 <= facts["num_frames"] <= MAX_FRAMES and 1 <= facts["height"] <= MAX_SIDE
                and 1 <= facts["width"] <= MAX_SIDE and facts.get("rgb_format") in RGB_FORMATS
                and facts.get("flow_format") in FLOW_FORMATS and facts.get("mapping") in MAPPINGS
                and isinstance(facts.get("bound"), (int, float)))
        return facts if sane else None

    def _index_layout(self, vid: str) -> dict:
        """Where ``vid``'s datasets lie as ``index.json`` records it (:func:`file_layout`), in :class:`VideoFile`'s
        form, or ``{}``. VideoFile uses an entry only for a file of the recorded size and a length that agrees
        with its frame count, and checks every item against its heap object header."""
        entry = self._index.get(vid)
        if not isinstance(entry, dict) or not isinstance(entry.get("layout"), dict):
            return {}
        size = entry.get("bytes")
        if type(size) is not int:
            return {}
        out = {}
        for name, value in entry["layout"].items():
            if (name in ("rgb", "flow_x", "flow_y") and isinstance(value, list) and len(value) == 2
                    and all(type(x) is int for x in value) and 0 <= value[0] < size and 0 <= value[1] <= MAX_FRAMES):
                out[name] = (value[0], value[1])
        return {"bytes": size, **out} if out else {}

    def _facts(self, vid: str) -> dict:
        """The :data:`VIDEO_FACTS` of ``vid``'s file, from :func:`check_file` run once per process (or parent)."""
        facts = self._checked.get(vid)
        if facts is not None:
            return facts
        path = video_path(self.root, vid)
        try:
            with open_h5(path) as f, _reading(str(path)):
                info = check_file(f, str(path), settings=self.config, vid=vid)
                layout = file_layout(f) if vid not in self._layouts else None
                if layout:  # kept for this process and those forked from it: no HDF5 open there
                    self._layouts[vid] = {"bytes": path.stat().st_size,
                                          **{name: tuple(v) for name, v in layout.items()}}
        except (OSError, ValueError) as e:
            if not path.is_file():
                raise StoreError(f"{path}: video {vid!r} is not in the store") from None
            raise StoreError(f"{path}: unreadable HDF5 file ({e})") from None
        self._check_index(vid, info, path)
        facts = self._checked[vid] = asdict(info)
        self._opening.pop(vid, None)  # opened with these facts from now on
        self._closed.pop(vid)
        return facts

    def _check_index(self, vid: str, info: VideoInfo, path: Path) -> None:
        entry = self._index.get(vid)
        if entry is None:
            return
        n = entry.get("num_frames") if isinstance(entry, dict) else None
        if n != info.num_frames:
            raise StoreError(f"{self.root / 'index.json'}: video {vid!r} has num_frames {n!r} there, but {path} "
                             f"holds {info.num_frames}; rerun 'flowprep extract' to rebuild the index")

    def close(self) -> None:
        if os.getpid() == self._pid:
            for f in self._files.values():
                f.close()
        self._files = OrderedDict()
        self._closed.clear()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        state["_closed"] = _ClosedFiles(self._closed.max_bytes)  # not worth pickling: rebuilt as the copy reads
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
