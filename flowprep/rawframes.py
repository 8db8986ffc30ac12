"""Frame folders ("rawframes") in and out: import what denseflow, mmaction2 or TSN's dense_flow made, export to them.

Three layouts, each a folder of JPEGs per video (``LAYOUTS``):

* ``denseflow`` (open-mmlab/denseflow, as mmaction2's ``build_rawframes.py`` runs it): ``ROOT/<class>/<video>/``
  with ``img_00000.jpg`` ... (T frames) and ``flow_x_00000.jpg`` / ``flow_y_00000.jpg`` ... (T-1 flows), 0-based;
  flow k goes from frame k to frame k+1.
* ``mmaction2`` (its CPU tool ``tools/misc/flow_extraction.py``): the same with ``x_00001.jpg`` / ``y_00001.jpg``,
  1-based (the tool's ``--start-idx`` default). It truncates instead of rounding (``astype(uint8)``), so its flow
  reads back up to one code step low, half a step on average.
* ``tsn`` (yjxiong/dense_flow, TSN's): flat ``ROOT/<video>/``, 1-based, T-1 images and T-1 flows: dense_flow keeps
  no image of the first frame, and its image k is the *second* frame of flow k.

Flow images are grey JPEGs of the codes ``round(255 (f + b) / 2b)`` of flow ``f`` clipped to the bound ``b`` (TSN's
mapping, :mod:`flowprep.quantize` ``"tsn"``); mmaction2 passes b = 20 to denseflow, whose own default is 32.

**Import** (:func:`import_dataset`, ``flowprep import-frames``) keeps every JPEG byte as it is: the store
(``rgb_format="jpeg"``, ``flow_format="jpeg"``, ``mapping="tsn"``) holds the source files' bytes, so its frames and
flow are exactly the source's. Each folder's naming, start index and frame/flow pairing are detected from its
files (or stated); a folder whose counts fit none is refused and recorded, naming it. From a ``tsn`` folder the
store keeps the T-1 images as frames and the T-2 flows between them (the first flow starts at a frame dense_flow
did not keep). Labels and splits come from :func:`flowprep.dataset.discover` with ``frame_folders``. The store
machinery is extraction's (:func:`flowprep.extract.fill_store`): parallel, resumable, crash safe, failures recorded.

**Export** (:func:`export_store`, ``flowprep export``) writes a store as one of the layouts, with annotation lists
(see :func:`write_annotations`). A store made with ``--mapping tsn --flow-format jpeg`` (or imported) is exported
byte for byte; any other store's flow is re-quantised with the TSN mapping and JPEG-encoded, and the export
measures what that costs against the store's flow.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .dataset import VIDEO_EXTENSIONS, DatasetSource, VideoEntry, discover
from .decode import DecodeConfig, VideoError
from .errors import ConfigError
from .extract import Summary, fill_store
from .flow import get_method, resolve_params
from .quantize import dequantize, quantize
from .store import Store, StoreError, atomic_path, video_path, write_encoded
from .unit import VideoResult, failure_result

PAIRINGS = ("denseflow", "tsn")  # T images and T-1 flows; or T-1 of each, image k the second frame of flow k
JPEG_QUALITY = 95  # of what export encodes (frames of a raw store, re-quantised flow): cv2.imwrite's default


@dataclass(frozen=True)
class RawLayout:
    """One tool's way of writing frame folders.

    Attributes:
        name: ``denseflow``, ``mmaction2`` or ``tsn``.
        folders: ``nested`` (``ROOT/<class>/<video>/``) or ``flat`` (``ROOT/<video>/``).
        flow_prefixes: file name prefixes of the x and y flow images.
        start_index: number of the first file.
        pairing: ``denseflow`` (T images, T-1 flows) or ``tsn`` (T-1 images, T-1 flows).
        rgb_prefix: file name prefix of the frames.
        digits: zero-padded width of the numbers.
    """

    name: str
    folders: str
    flow_prefixes: tuple[str, str]
    start_index: int
    pairing: str
    rgb_prefix: str = "img_"
    digits: int = 5

    def file_name(self, prefix: str, index: int) -> str:
        return f"{prefix}{index:0{self.digits}d}.jpg"


LAYOUTS = {
    "denseflow": RawLayout("denseflow", "nested", ("flow_x_", "flow_y_"), 0, "denseflow"),
    "mmaction2": RawLayout("mmaction2", "nested", ("x_", "y_"), 1, "denseflow"),
    "tsn": RawLayout("tsn", "flat", ("flow_x_", "flow_y_"), 1, "tsn"),
}


@dataclass
class ImportConfig:
    """How to read frame folders into a store (recorded in ``store.json``).

    Attributes:
        bound: the flow bound ``b`` the source tool quantised with (mmaction2: 20; denseflow's default: 32).
        layout: a name of :data:`LAYOUTS`, or ``auto``: detect each folder's naming, start index and pairing
            from its files, and flat or nested folders from the root.
        start_index: number of the first file, when it is not the layout's (``None``: the layout's; detected
            with ``auto``).
        method: the flow method the source tool used (default ``tvl1``, the denseflow and mmaction2 default),
            recorded so that ``twostream predict`` computes a new video's flow with our version of it.
        params: overrides of that method's parameters (recorded alike).
        decode: how the source tool sized its frames (recorded for ``twostream predict``; default: source size).
    """

    bound: float
    layout: str = "auto"
    start_index: int | None = None
    method: str = "tvl1"
    params: dict = field(default_factory=dict)
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(short_side=None))

    def __post_init__(self):
        if not self.bound > 0:
            raise ConfigError(f"bound must be positive, got {self.bound}")
        if self.layout != "auto" and self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; choose auto or one of {', '.join(LAYOUTS)}")
        if self.start_index is not None and self.start_index < 0:
            raise ConfigError(f"start index must be 0 or more, got {self.start_index}")
        get_method(self.method)
        self.params = resolve_params(self.method, self.params)

    def to_json(self) -> dict:
        """The settings as ``store.json`` holds them: the keys of an extracted store's, and ``imported``."""
        decode = asdict(self.decode)
        decode["size"] = list(self.decode.size) if self.decode.size else None
        return {"method": self.method, "params": self.params, "decode": decode, "bound": self.bound,
                "mapping": "tsn", "rgb_format": "jpeg", "flow_format": "jpeg", "jpeg_quality": None,
                "imported": {"layout": self.layout, "start_index": self.start_index}}


# --- reading one folder --------------------------------------------------------------------------

def jpeg_header(buf: bytes) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's frame header, without decoding it.

    Raises:
        ValueError: not a JPEG, or cut short (no end-of-image marker, no frame header).
    """
    if buf[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG (no start-of-image marker)")
    if buf.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        raise ValueError("truncated JPEG (no end-of-image marker)")
    i = 2
    while i + 4 <= len(buf):
        if buf[i] != 0xFF:
            raise ValueError(f"damaged JPEG (no marker at byte {i})")
        m = buf[i + 1]
        if m == 0xFF:  # fill byte
            i += 1
            continue
        if m == 0x01 or 0xD0 <= m <= 0xD8:  # markers without a length
            i += 2
            continue
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):  # SOFn: precision, height, width, components
            h, w = int.from_bytes(buf[i + 5:i + 7], "big"), int.from_bytes(buf[i + 7:i + 9], "big")
            return h, w, buf[i + 9]
        i += 2 + int.from_bytes(buf[i + 2:i + 4], "big")
    raise ValueError("damaged JPEG (no frame header)")


@dataclass
class FolderPlan:
    """The files of one video folder, in order, and how they pair."""

    rgb: list[Path]
    flow_x: list[Path]
    flow_y: list[Path]
    pairing: str
    start_index: int


def _numbered(names: list[str], prefix: str) -> dict[int, str]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.jpg")
    out = {}
    for n in names:
        m = pattern.fullmatch(n)
        if m:
            out[int(m.group(1))] = n
    return out


def plan_folder(folder: Path, cfg: ImportConfig) -> FolderPlan:
    """Find and check the frame and flow files of ``folder`` as ``cfg`` says.

    Raises:
        VideoError: the folder's files do not make a video of this layout (the message says what is there).
    """
    layout = LAYOUTS.get(cfg.layout)
    try:
        names = os.listdir(folder)
    except OSError as e:
        raise VideoError(folder, f"unreadable folder ({e.strerror})") from None
    if layout is not None:
        prefixes = layout.flow_prefixes
    elif any(n.startswith("flow_x_") for n in names):
        prefixes = ("flow_x_", "flow_y_")
    else:
        prefixes = ("x_", "y_")
    rgb, fx, fy = (_numbered(names, p) for p in ("img_",) + prefixes)
    if not fx and not fy:
        raise VideoError(folder, f"no flow images (flow_x_NNNNN.jpg or x_NNNNN.jpg){_named(layout)}")
    if not rgb:
        raise VideoError(folder, "no frame images (img_NNNNN.jpg)")
    found = min(min(rgb), min(fx or fy), min(fy or fx))
    start = cfg.start_index if cfg.start_index is not None else (layout.start_index if layout else found)
    what = (f"{len(rgb)} img_, {len(fx)} {prefixes[0]} and {len(fy)} {prefixes[1]} images")
    for kind, files in (("img_", rgb), (prefixes[0], fx), (prefixes[1], fy)):
        if sorted(files) != list(range(start, start + len(files))):
            missing = sorted(set(range(start, start + len(files))) - set(files))
            where = f"the first missing is {kind}{missing[0]:05d}.jpg" if missing else f"numbers start at {min(files)}"
            raise VideoError(folder, f"{what}, not numbered {start}, {start + 1}, ... without gaps ({where}); "
                             "give the start index if it is not the layout's")
    if len(fx) != len(fy):
        raise VideoError(folder, f"{what}: the x and y flows differ in number")
    pairing = layout.pairing if layout else {1: "denseflow", 0: "tsn"}.get(len(rgb) - len(fx))
    need = {"denseflow": len(fx) + 1, "tsn": len(fx)}.get(pairing)
    if pairing is None or len(rgb) != need:
        raise VideoError(folder, f"{what}: counts do not fit {_expected(layout)}")
    if len(fx) < (1 if pairing == "denseflow" else 2):
        raise VideoError(folder, f"{what}: too short to hold a flow between two kept frames")
    return FolderPlan([folder / rgb[i] for i in sorted(rgb)], [folder / fx[i] for i in sorted(fx)],
                      [folder / fy[i] for i in sorted(fy)], pairing, start)


def _named(layout: RawLayout | None) -> str:
    return f" named as the {layout.name} layout does ({layout.flow_prefixes[0]}NNNNN.jpg)" if layout else ""


def _expected(layout: RawLayout | None) -> str:
    if layout is None or layout.pairing == "denseflow":
        both = "T frames and T-1 flows (denseflow, mmaction2)"
        return both if layout else both + " or T-1 of each (TSN's dense_flow)"
    return "T-1 frames and T-1 flows (TSN's dense_flow)"


def _read_checked(paths: list[Path], what: str, components: tuple[int, ...], size=None) -> tuple[list[bytes], tuple]:
    """The bytes of each JPEG, checked from their headers: whole, all of one size, grey or colour as asked."""
    out = []
    for p in paths:
        try:
            b = p.read_bytes()
            h, w, c = jpeg_header(b)
        except (OSError, ValueError) as e:
            why = str(e) if isinstance(e, ValueError) else f"unreadable ({e.strerror})"
            raise VideoError(p.parent, f"{p.name}: {why}") from None
        if size is None:
            size = (h, w)
        if (h, w) != size:
            raise VideoError(p.parent, f"{p.name}: {what} is {w}x{h}, the video's frames are {size[1]}x{size[0]}")
        if c not in components:
            raise VideoError(p.parent, f"{p.name}: {what} has {c} colour components; expected "
                             f"{' or '.join(map(str, components))}")
        out.append(b)
    return out, size


def import_video(src: Path, entry: VideoEntry, store_dir: Path, cfg: ImportConfig) -> VideoResult:
    """Import one frame folder into its store file, keeping the JPEG bytes. Never raises: failures come back."""
    t0 = time.perf_counter()
    try:
        plan = plan_folder(src, cfg)
        rgb, size = _read_checked(plan.rgb, "frame", (1, 3))
        fx, _ = _read_checked(plan.flow_x, "flow image", (1,), size)
        fy, _ = _read_checked(plan.flow_y, "flow image", (1,), size)
        frame_index = np.arange(len(rgb), dtype=np.int32)
        if plan.pairing == "tsn":  # images are source frames 1..T-1; flow k ends at image k: keep flows 2..T-1
            frame_index += 1
            fx, fy = fx[1:], fy[1:]
        h, w = size
        attrs = dict(id=entry.id, label=entry.label, class_name=entry.class_name, num_frames=len(rgb), height=h,
                     width=w, source_fps=0.0, fps=0.0, source_frames=int(frame_index[-1]) + 1, method=cfg.method,
                     mapping="tsn", bound=cfg.bound, source_pairing=plan.pairing, source_start_index=plan.start_index)
        contents = {"frame_index": frame_index, "rgb": rgb, "flow_x": fx, "flow_y": fy}
        nbytes = write_encoded(video_path(store_dir, entry.id), contents,
                               {**attrs, "rgb_format": "jpeg", "flow_format": "jpeg"})
        return VideoResult(entry.id, True, len(fx), time.perf_counter() - t0, nbytes, len(rgb), h, w)
    except Exception as e:  # any failure of one folder must not stop the batch
        return failure_result(entry.id, e, time.perf_counter() - t0)


def detect_folders(root: Path, layout: str) -> str:
    """``nested`` or ``flat``: the layout's, or with ``auto`` flat when a folder under ``root`` holds frames itself."""
    if layout != "auto":
        return LAYOUTS[layout].folders
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and any(d.glob("img_*.jpg")):
            return "flat"
    return "nested"


def import_dataset(root, store_dir, cfg: ImportConfig, *, jobs: int | None = None, splits_dir=None, list_file=None,
                   source: DatasetSource | None = None, progress: bool = True, log=print) -> Summary:
    """Build (or resume) the store ``store_dir`` from the frame folders under ``root``, computing nothing.

    Args:
        root: ``ROOT/<class>/<video>/`` or flat ``ROOT/<video>/`` frame folders (see the module docstring).
        store_dir: the store directory; created, or resumed when it exists.
        cfg: the layout and the flow bound.
        jobs: worker processes (default -1: one per core).
        splits_dir, list_file, source: labels and splits as for ``extract`` (:func:`flowprep.dataset.discover`):
            UCF101 / HMDB51 split files, whose ``Class/v_X.avi`` entries name the folders ``Class/v_X`` or flat
            ``v_X``, or list files of any format (mmaction2 rawframe lists ``Class/v_X 40 3`` among them).
        progress: show a progress bar.
        log: called with one line per failure.

    Returns:
        A :class:`flowprep.extract.Summary`; ``pairs`` counts the imported flow frames.
    """
    jobs = -1 if jobs is None else jobs
    if jobs == 0:
        raise ConfigError("jobs must be a number of processes, or negative as in joblib (-1: one per core), got 0")
    root, store_dir = Path(root), Path(store_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: not a directory of frame folders")
    source = source or DatasetSource(splits_dir=splits_dir, list_file=list_file)
    ds = discover(root, source, frame_folders=detect_folders(root, cfg.layout))

    def start(todo: list[VideoEntry], log_line):
        tasks = (delayed(import_video)(root / v.id, v, store_dir, cfg) for v in todo)
        return Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)

    return fill_store(root, store_dir, ds, cfg, start, progress=progress, log=log, desc="flowprep import")


# --- export --------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    """What exporting one video did: ``error`` empty when it worked; re-quantisation error sums when it re-quantised."""

    id: str
    folder: str
    num_frames: int = 0
    num_flows: int = 0
    error: str = ""
    abs_error_sum: float = 0.0
    max_error: float = 0.0
    values: int = 0
    clipped: int = 0


@dataclass
class ExportSummary:
    """The whole export: folders written, failures, and for a re-quantised store the measured flow error."""

    layout: str
    out_dir: Path
    exported: int
    skipped: int
    failed: dict
    byte_exact: bool
    bound: float
    mean_error: float = 0.0
    max_error: float = 0.0
    clipped_fraction: float = 0.0
    annotation_files: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def export_folder(vid: str, layout: RawLayout) -> str:
    """The folder, relative to the export root, that video ``vid`` goes to (its id without a video extension)."""
    stem, ext = os.path.splitext(vid)
    rel = stem if ext.lower() in VIDEO_EXTENSIONS else vid
    return rel if layout.folders == "nested" else rel.rsplit("/", 1)[-1]


def byte_exact(config: dict) -> bool:
    """Whether a store's flow exports unchanged: TSN codes in JPEG, the bytes the other tools write."""
    return config["mapping"] == "tsn" and config["flow_format"] == "jpeg"


def export_video(store: Store, vid: str, out_dir: Path, layout: RawLayout, bound: float) -> ExportResult:
    """Write one video's folder (under a temporary name, then renamed: a folder is there only when complete)."""
    folder = export_folder(vid, layout)
    res = ExportResult(vid, folder)
    try:
        n = store.num_frames(vid)
        v = store.video(vid)  # its file checked; items read by flowprep's checked reader, not the HDF5 library
        rgb = v.items("rgb", list(range(n))) if v.rgb_format == "jpeg" else None
        exact = byte_exact(store.config) and v.bound == bound
        flows = (v.items("flow_x", list(range(n - 1))), v.items("flow_y", list(range(n - 1)))) if exact else None
        if rgb is None:
            frames = store.frames(vid, range(n))
            rgb = [_jpeg(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR)) for fr in frames]
        if flows is None:
            flows = _requantise(store.flow(vid, range(n - 1)), bound, res)
        first = 1 if layout.pairing == "tsn" else 0  # dense_flow keeps no image of the first frame
        final = out_dir / folder
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for k, buf in enumerate(rgb[first:]):
            (tmp / layout.file_name(layout.rgb_prefix, layout.start_index + k)).write_bytes(np.asarray(buf).tobytes())
        for prefix, items in zip(layout.flow_prefixes, flows):
            for k, buf in enumerate(items):
                (tmp / layout.file_name(prefix, layout.start_index + k)).write_bytes(np.asarray(buf).tobytes())
        os.replace(tmp, final)
        res.num_frames, res.num_flows = n - first, n - 1
    except Exception as e:  # one bad video must not stop the export
        res.error = str(e) if isinstance(e, (StoreError, OSError, ValueError)) else f"internal error: {e!r}"
    return res


def _jpeg(img: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {img.shape} image as JPEG")
    return buf.reshape(-1)


def _requantise(flow: np.ndarray, bound: float, res: ExportResult) -> tuple[list, list]:
    """(T-1, H, W, 2) float flow -> TSN-coded grey JPEGs (x list, y list); adds the measured error to ``res``.

    The error is that of the decoded JPEG against the store's flow, over the values within the bound (clipping
    is counted apart: no uint8 format keeps a flow beyond its bound).
    """
    codes = quantize(flow, bound, "tsn")
    xs, ys = [], []
    for t in range(len(codes)):
        bx, by = _jpeg(codes[t, ..., 0]), _jpeg(codes[t, ..., 1])
        back = np.stack([cv2.imdecode(bx, cv2.IMREAD_GRAYSCALE), cv2.imdecode(by, cv2.IMREAD_GRAYSCALE)], -1)
        inside = np.abs(flow[t]) <= bound
        err = np.abs(dequantize(back, bound, "tsn") - flow[t])[inside]
        res.abs_error_sum += float(err.sum(dtype=np.float64))
        res.max_error = max(res.max_error, float(err.max(initial=0.0)))
        res.values += int(inside.sum())
        res.clipped += int(inside.size - inside.sum())
        xs.append(bx)
        ys.append(by)
    return xs, ys


def export_store(store_dir, out_dir, layout: str, *, bound: float | None = None, jobs: int | None = None,
                 progress: bool = True, log=print) -> ExportSummary:
    """Write the finished videos of a store as frame folders of ``layout``, with annotation lists.

    Rerunning resumes: folders already there are kept (each is written under a temporary name and renamed).

    Args:
        store_dir: the store.
        out_dir: the root of the frame folders (created).
        layout: ``denseflow``, ``mmaction2`` or ``tsn`` (see the module docstring).
        bound: the TSN bound of the exported flow codes (default: the store's). Another bound than the store's,
            or a store whose flow is not TSN-coded JPEG, means re-quantising.
        jobs: worker processes (default -1: one per core).
        progress: show a progress bar.
        log: called with one line per failure.
    """
    if layout not in LAYOUTS:
        raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    jobs = -1 if jobs is None else jobs
    if jobs == 0:
        raise ConfigError("jobs must be a number of processes, or negative as in joblib (-1: one per core), got 0")
    store, lay, out_dir = Store(store_dir), LAYOUTS[layout], Path(out_dir)
    bound = float(store.config["bound"]) if bound is None else float(bound)
    if not bound > 0:
        raise ConfigError(f"bound must be positive, got {bound}")
    ids = store.video_ids()
    folders: dict[str, str] = {}
    failed: dict[str, str] = {}
    for vid in ids:
        folder = export_folder(vid, lay)
        if folder in folders:
            failed[vid] = f"would go to the folder {folder} of {folders[folder]} in the {layout} layout"
        else:
            folders[folder] = vid
    for stale in out_dir.glob("**/*.tmp-*") if out_dir.is_dir() else ():
        if stale.is_dir() and stale.name.rsplit(".tmp-", 1)[1].isdigit():
            shutil.rmtree(stale, ignore_errors=True)
    todo = [vid for f, vid in folders.items() if not (out_dir / f).is_dir()]
    skipped = len(folders) - len(todo)
    results = Parallel(n_jobs=jobs, return_as="generator_unordered")(
        delayed(export_video)(store, vid, out_dir, lay, bound) for vid in todo)
    total = ExportResult("", "")
    done = 0
    for r in tqdm(results, total=len(todo), unit="video", disable=not progress, desc=f"export {layout}"):
        if r.error:
            failed[r.id] = r.error
            log(f"FAILED {r.id}: {r.error}")
            continue
        done += 1
        total.abs_error_sum += r.abs_error_sum
        total.max_error = max(total.max_error, r.max_error)
        total.values += r.values
        total.clipped += r.clipped
    exported = [vid for vid in ids if vid not in failed]
    files = write_annotations(store, exported, out_dir, lay)
    exact = byte_exact(store.config) and float(store.config["bound"]) == bound
    n = total.values + total.clipped
    return ExportSummary(layout, out_dir, done, skipped, failed, exact, bound,
                         mean_error=total.abs_error_sum / max(total.values, 1), max_error=total.max_error,
                         clipped_fraction=total.clipped / max(n, 1), annotation_files=files)


def write_annotations(store: Store, ids: list[str], out_dir: Path, layout: RawLayout) -> list[Path]:
    """Write the annotation lists of the exported videos under ``out_dir/annotations``. Returns the files.

    Per split N and subset (``train``, ``test``), mmaction2 rawframe lists of ``<folder> <num_frames> <label>``
    lines: ``{subset}_split{N}_rawframes.txt`` counting the frame images and ``{subset}_split{N}_rawframes_flow.txt``
    counting the flow images (labels 0-based). And UCF101-style split files (``classInd.txt``,
    ``trainlist0N.txt``, ``testlist0N.txt``, whose entries name the folders) that ``flowprep import-frames
    --splits OUT/annotations`` reads back with the same classes, labels and splits.
    """
    ann = out_dir / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    first = 1 if layout.pairing == "tsn" else 0
    keep = set(ids)
    written = []

    def write(name: str, lines: list[str]) -> None:
        with atomic_path(ann / name) as tmp:
            tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written.append(ann / name)

    def entry(vid: str) -> str:  # a flat folder is named by its class in UCF101 entries, as TSN's lists do
        folder = export_folder(vid, layout)
        return folder if layout.folders == "nested" else f"{store.classes[store.label(vid)]}/{folder}"

    write("classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(store.classes)])
    for n, split in sorted(store.splits.items()):
        for subset in ("train", "test"):
            vids = [v for v in split[subset] if v in keep]
            for suffix, count in (("", lambda v: store.num_frames(v) - first), ("_flow", lambda v: store.num_frames(v) - 1)):
                write(f"{subset}_split{n}_rawframes{suffix}.txt",
                      [f"{export_folder(v, layout)} {count(v)} {store.label(v)}" for v in vids])
            write(f"{subset}list{n:02d}.txt",
                  [f"{entry(v)} {store.label(v) + 1}" if subset == "train" else entry(v) for v in vids])
    return written
