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
:class:`VideoFile` that reads and checks what every read needs once, when it opens. JPEG and PNG items are
read straight from the file with ``os.pread`` (h5py's per-read overhead was larger than decoding them; see
``bench/store_bench.py`` and the README's performance section).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import cv2
import h5py
import numpy as np

from .quantize import dequantize

SCHEMA_VERSION = 1
RGB_FORMATS = ("jpeg", "raw")
FLOW_FORMATS = ("jpeg", "png", "raw", "float16")


class StoreError(Exception):
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
    except BaseException:  # a failed write leaves the old file and no temporary behind
        tmp.unlink(missing_ok=True)
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
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    """Open a store's HDF5 file without HDF5 file locking (see :data:`NO_LOCKING`)."""
    return h5py.File(path, mode, **NO_LOCKING)


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


def content_digest(f: h5py.File) -> str:
    """The ``sha256`` attribute a video file should carry, recomputed from what is stored in ``f``."""
    return _digest({name: (list(d[:]) if d.dtype == object else [d[()]]) for name, d in f.items()})


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
        for k, v in attrs.items():
            f.attrs[k] = v
        for name, value in contents.items():
            if isinstance(value, list):
                items = [np.frombuffer(b, np.uint8) if isinstance(b, bytes) else np.asarray(b, np.uint8).reshape(-1)
                         for b in value]
                d = f.create_dataset(name, (len(items),), dtype=vlen)
                for i, buf in enumerate(items):
                    d[i] = buf
                digested[name] = items
            else:
                chunks = (1,) + value.shape[1:] if value.ndim > 1 else None
                f.create_dataset(name, data=value, chunks=chunks)
                digested[name] = [value]
        f.attrs["sha256"] = _digest(digested)
    return Path(path).stat().st_size


# --- reading -------------------------------------------------------------------------------------

# One item of a variable-length dataset as stored: its length, then the global heap ID of its bytes
# (the address of a heap collection and the object's index in it). HDF5 File Format Specification 3.0,
# "Datatype Message", variable-length class, and "Global Heap".
_VLEN_ITEM = np.dtype([("length", "<u4"), ("collection", "<u8"), ("index", "<u4")])
_HEAP_OBJECT = struct.Struct("<HHIQ")  # object index, reference count, reserved, size
_EMPTY = np.zeros(0, np.uint8)
_READ_GAP = 8192  # items less than this apart are read with one pread of their range (cheaper than two calls)


class _HeapReader:
    """Reads items of a contiguous variable-length uint8 dataset with ``os.pread``: the cost of their bytes.

    h5py spends ~80 us of library work on each read of a variable-length dataset, more than decoding a
    small JPEG; the items' bytes are reachable directly. The dataset's T 16-byte entries (``_VLEN_ITEM``) are
    read once; each names a global heap collection (a 16-byte header ``GCOL``, version 1, size, then objects,
    each a 16-byte header and its bytes padded to 8) whose object headers are walked once, up to the object
    asked for, the first time one of its objects is read. Every offset and size is checked against the file
    size and the item's stored length, so damage gives a :class:`StoreError`, never an unbounded allocation.
    """

    def __init__(self, fd: int, table_offset: int, n: int, name: str, file_size: int, path: Path):
        self.fd, self.file_size, self.path, self.name = fd, file_size, path, name
        table = np.frombuffer(self._pread(n * _VLEN_ITEM.itemsize, table_offset), _VLEN_ITEM)
        self.table = table.tolist()  # [(length, collection address, object index)] * n: Python ints look up fastest
        self._predicted = _predict_offsets(table)
        self._collections: dict[int, list] = {}  # address -> [{index: offset}, next header offset, end]

    @staticmethod
    def locate_table(dataset: h5py.h5d.DatasetID) -> int | None:
        """File offset of a variable-length uint8 dataset's entries if they lie contiguous in the file, else None
        (chunked or not yet written: h5py reads those)."""
        if dataset.get_type().get_class() != h5py.h5t.VLEN or h5py.check_vlen_dtype(dataset.dtype) != np.uint8:
            return None
        return dataset.get_offset()

    @staticmethod
    def file_supported(fd: int) -> bool:
        """Whether the file's superblock says what the reader assumes: no user block, 8-byte addresses and sizes."""
        head = os.pread(fd, 16, 0)
        if len(head) < 16 or head[:8] != b"\x89HDF\r\n\x1a\n":
            return False
        sizes = (head[13], head[14]) if head[8] < 2 else (head[9], head[10])  # superblock version 0/1 or 2/3
        return sizes == (8, 8)

    def _pread(self, size: int, offset: int) -> bytes:
        if offset < 0 or offset + size > self.file_size:
            raise StoreError(f"{self.path}: {self.name} points past the end of the file (damaged file)")
        buf = os.pread(self.fd, size, offset)
        if len(buf) != size:
            raise StoreError(f"{self.path}: {self.name}: short read at byte {offset} (truncated file)")
        return buf

    def _walk(self, i: int) -> int:
        """File offset of item ``i``'s bytes, found by walking its collection's object headers (kept for later)."""
        length, address, index = self.table[i]
        c = self._collections.get(address)
        if c is None:
            head = self._pread(16, address)
            size = int.from_bytes(head[8:16], "little")
            if head[:5] != b"GCOL\x01" or address + size > self.file_size:
                raise StoreError(f"{self.path}: {self.name} item {i}: no heap collection at byte {address} (damaged file)")
            c = self._collections[address] = [{}, address + 16, address + size]
        objects, pos, end = c
        while index not in objects and pos + 16 <= end:
            obj, _, _, size = _HEAP_OBJECT.unpack(self._pread(16, pos))
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
        """File offset of item ``i``'s bytes: walked, or predicted (checked against its header when read)."""
        _, address, index = self.table[i]
        c = self._collections.get(address)
        if c is not None and index in c[0]:
            return c[0][index][0]
        predicted = self._predicted.get(i)
        return predicted if predicted is not None else self._walk(i)

    def read(self, indices: list[int]) -> list[np.ndarray]:
        """The items ``indices`` as uint8 arrays; items lying near each other come from one read of their range,
        which includes each item's 16-byte object header, checked against the item's entry."""
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
                obj, _, _, size = _HEAP_OBJECT.unpack_from(buf, o - lo)
                if (obj, size) == self.table[i][2::-2]:
                    out[k] = np.frombuffer(buf, np.uint8, n - 16, o - lo + 16)
                else:  # a wrong prediction (objects of another dataset in between): walk, and read it alone
                    self._predicted.pop(i, None)
                    out[k] = np.frombuffer(self._pread(n - 16, self._walk(i)), np.uint8)
            first = j
        return out


def _predict_offsets(table: np.ndarray) -> dict[int, int]:
    """{item: file offset of its bytes} where the dataset's entries alone say where the bytes are.

    A heap collection lays its objects out in index order, each a 16-byte header and its bytes padded to 8
    (HDF5 File Format Specification, "Global Heap"), so when a dataset's items in a collection are objects
    1..m of it, their offsets follow from their lengths. Collections that also hold other objects (attribute
    strings, another dataset's items) are not predicted; a wrong prediction is caught by the object header.
    """
    live = np.flatnonzero(table["length"] > 0)
    if not len(live):
        return {}
    order = live[np.lexsort((table["index"][live], table["collection"][live]))]
    coll, index = table["collection"][order].astype(np.int64), table["index"][order].astype(np.int64)
    size = 16 + (table["length"][order].astype(np.int64) + 7) // 8 * 8
    starts = np.r_[True, coll[1:] != coll[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    rank = np.arange(len(order)) - first[group]
    bad = np.cumsum(index != rank + 1)  # an item is predictable if it and all before it in its group are 1, 2, ...
    bad_before = bad[first] - (index[first] != 1)
    ok = bad - bad_before[group] == 0
    before = np.cumsum(size) - size
    offset = coll + 16 + (before - before[first][group]) + 16
    return dict(zip(order[ok].tolist(), offset[ok].tolist()))


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
        facts: ``{name: value}`` for :data:`VIDEO_FACTS` when the store already knows them (its ``index.json``
            and ``store.json``); then no attribute is read (each costs ~50 us in HDF5). Otherwise they are read
            from the file's attributes.
        layout: where the file's datasets lie, ``{name: (offset of the entries, length)}``, as an earlier open of
            the same file in this process found and recorded it here; updated with what this open finds.

    Attributes:
        num_frames, height, width, rgb_format, flow_format, bound, mapping: see ``facts``.
    """

    def __init__(self, path: Path, facts: dict | None = None, layout: dict | None = None):
        self.path, self._h5 = path, None
        self._fd = os.open(path, os.O_RDONLY)
        try:
            self._open(facts, {} if layout is None else layout)
        except BaseException:
            self.close()
            raise

    def _open(self, facts: dict | None, layout: dict) -> None:
        if facts is None:
            try:
                facts = {k: self.h5.attrs[k] for k in VIDEO_FACTS}
            except KeyError as e:
                raise StoreError(f"{self.path}: attribute {e} missing (damaged or not a flowprep video file)") from None
            self._source = "its attributes"
        else:
            self._source = "the store's index.json"
        self.num_frames, self.height, self.width = (int(facts[k]) for k in ("num_frames", "height", "width"))
        self.rgb_format, self.flow_format = str(facts["rgb_format"]), str(facts["flow_format"])
        self.bound, self.mapping = float(facts["bound"]), str(facts["mapping"])
        self._size = os.fstat(self._fd).st_size
        self._layout = layout
        self._datasets: dict[str, tuple] = {}  # name -> (h5py.Dataset or None, _HeapReader or None)
        self._lut = None

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
        if got is None:
            known = self._layout.get(name)
            if known is not None:  # found by an earlier open of this file: no HDF5 needed
                got = None, _HeapReader(self._fd, known[0], known[1], name, self._size, self.path)
                self._datasets[name] = got
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
        if "direct" not in self._layout:
            self._layout["direct"] = _HeapReader.file_supported(self._fd)
        offset = _HeapReader.locate_table(dsid) if self._layout["direct"] else None
        if offset is not None:
            heap = _HeapReader(self._fd, offset, dsid.shape[0], name, self._size, self.path)
            self._layout[name] = offset, dsid.shape[0]
        got = self._datasets[name] = h5py.Dataset(dsid), heap
        return got

    def _check_dataset(self, name: str, dsid: h5py.h5d.DatasetID) -> None:
        """Refuse a dataset whose length disagrees with ``num_frames`` (before any read allocates)."""
        want = self.num_frames if name == "rgb" else self.num_frames - 1
        if self.num_frames < 1 or dsid.shape[:1] != (want,):
            raise StoreError(f"{self.path}: {name} holds {dsid.shape[0] if dsid.shape else 0} items but num_frames "
                             f"{self.num_frames} (from {self._source}) says {want} (damaged file)")

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
        items = self.items("rgb", idx)
        if self.rgb_format == "raw":
            return np.stack(items)
        if len(items) == 1:  # a 2D spatial stream's read: no copy
            return self._image(items[0], cv2.IMREAD_COLOR_RGB)[None]
        out = np.empty((len(items), self.height, self.width, 3), np.uint8)
        for k, b in enumerate(items):
            out[k] = self._image(b, cv2.IMREAD_COLOR_RGB)
        return out

    def flow(self, idx: list[int]) -> np.ndarray:
        """(K, H, W, 2) float32 pixels."""
        if self.flow_format == "float16":
            return np.stack(self.items("flow", idx)).astype(np.float32)
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
                out[k, ..., 0], out[k, ..., 1] = self._image(x, cv2.IMREAD_GRAYSCALE), self._image(y, cv2.IMREAD_GRAYSCALE)
        return out

    def _image(self, buf: np.ndarray, flags: int) -> np.ndarray:
        """Decode one stored JPEG/PNG, which must have the file's frame size."""
        img = cv2.imdecode(buf, flags) if len(buf) else None
        if img is None or img.shape[:2] != (self.height, self.width):
            got = "undecodable bytes" if img is None else f"a {img.shape[1]}x{img.shape[0]} image"
            raise StoreError(f"{self.path}: a stored image holds {got}, not {self.width}x{self.height} (damaged file)")
        return img

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Store:
    """Read access to a store made by ``flowprep extract``.

    Args:
        root: the store directory.
        max_open: how many video files each process keeps open.
    """

    def __init__(self, root, *, max_open: int = 64):
        self.root = Path(root)
        if not (self.root / "store.json").is_file():
            raise StoreError(f"{self.root}: not a flowprep store (no store.json); make one with 'flowprep extract'")
        try:
            self.config = read_json(self.root / "store.json")
            self.manifest = read_json(self.root / "manifest.json")
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.root}: store metadata unreadable ({e})") from None
        if self.config.get("schema") != SCHEMA_VERSION:
            raise StoreError(f"{self.root}: store schema {self.config.get('schema')} is not {SCHEMA_VERSION}")
        self.classes: list[str] = self.manifest["classes"]
        self._entries = {v["id"]: v for v in self.manifest["videos"]}
        index = self.root / "index.json"
        self._index: dict = read_json(index) if index.is_file() else {}
        self._settings = {k: self.config[k] for k in VIDEO_FACTS if k in self.config}
        self._layouts: dict[str, dict] = {}  # vid -> where its datasets lie (plain data: kept across forks)
        self.max_open = max_open
        self._files: OrderedDict = OrderedDict()
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
                raise ValueError(f"subset must be 'train', 'val' or 'test', got {subset!r}")
            if subset not in self.splits[split]:  # 'val' only where a store was made from a val and a test list
                raise StoreError(f"{self.root}: split {split} has no {subset} subset, only "
                                 f"{', '.join(sorted(self.splits[split]))}")
            ids = self.splits[split][subset]
        return [v for v in ids if video_path(self.root, v).is_file()]

    def label(self, vid: str) -> int:
        return self._entries[vid]["label"]

    def num_frames(self, vid: str) -> int:
        """Stored RGB frames T of a video; it has T - 1 flow frames."""
        if vid in self._index:
            return self._index[vid]["num_frames"]
        return self.video(vid).num_frames

    def attrs(self, vid: str) -> dict:
        return dict(self._file(vid).attrs)

    def check(self, vid: str) -> None:
        """Raise :class:`StoreError` if the stored bytes of ``vid`` differ from those written (``sha256``)."""
        f = self._file(vid)
        if "sha256" in f.attrs and content_digest(f) != f.attrs["sha256"]:
            raise StoreError(f"{video_path(self.root, vid)}: contents do not match their sha256 (damaged file)")

    def failures(self) -> dict[str, dict]:
        out = {}
        for p in sorted((self.root / "failed").rglob("*.json")):
            try:
                rec = read_json(p)
            except (OSError, ValueError):
                continue
            out[rec["id"]] = rec
        return out

    # data

    def frames(self, vid: str, indices) -> np.ndarray:
        """RGB frames ``indices`` of video ``vid`` -> (K, H, W, 3) uint8."""
        v = self.video(vid)
        return v.frames(self._check(vid, indices, v.num_frames, "frame"))

    def flow(self, vid: str, indices) -> np.ndarray:
        """Flow frames ``indices`` (flow t goes from frame t to t+1) -> (K, H, W, 2) float32 pixels."""
        v = self.video(vid)
        return v.flow(self._check(vid, indices, v.num_frames - 1, "flow frame"))

    def _check(self, vid, indices, n, what) -> list[int]:
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
            self._files = OrderedDict()
            self._pid = os.getpid()
        v = self._files.get(vid)
        if v is not None:
            self._files.move_to_end(vid)
            return v
        path = video_path(self.root, vid)
        entry = self._index.get(vid)
        facts = {**self._settings, **entry} if entry is not None else None
        if facts is not None and any(k not in facts for k in VIDEO_FACTS):
            facts = None  # an older store.json or index entry: read the file's attributes
        try:
            v = VideoFile(path, facts, self._layouts.setdefault(vid, {}))
        except (OSError, ValueError) as e:
            if not path.is_file():
                raise StoreError(f"{path}: video {vid!r} is not in the store") from None
            raise StoreError(f"{path}: unreadable HDF5 file ({e})") from None
        self._files[vid] = v
        if len(self._files) > self.max_open:
            self._files.popitem(last=False)[1].close()
        return v

    def _file(self, vid: str) -> h5py.File:
        return self.video(vid).h5

    def close(self) -> None:
        if os.getpid() == self._pid:
            for f in self._files.values():
                f.close()
        self._files = OrderedDict()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = OrderedDict()
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
