"""Parallel, resumable extraction of frames and flow for a whole dataset.

Each video is one unit of work: decode -> flow -> quantise -> encode -> write its own HDF5 file under a
temporary name -> rename. Units run in joblib workers, or as tasks on a dask cluster (:mod:`flowprep.cluster`);
each returns a status, and the parent records failures and updates the progress bar. Rerunning the same
command skips the finished videos, retries the failed ones and removes temporary files left by a killed run.
"""
from __future__ import annotations

import fcntl
import json
import time
import traceback
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from . import __version__
from .dataset import Dataset, DatasetSource, VideoEntry, discover
from .decode import DecodeConfig, VideoError, read_video
from .flow import get_method, resolve_params, video_flow
from .quantize import MAPPINGS, quantize
from .store import (FLOW_FORMATS, RGB_FORMATS, SCHEMA_VERSION, StoreError, check_video_file, comparable_settings,
                    failure_path, open_h5, read_json, settings_differences, video_path, write_json_atomic,
                    write_video)


@dataclass
class ExtractConfig:
    """Everything that decides what the store holds (recorded in ``store.json``).

    Attributes:
        method: flow method name (see ``flowprep.flow.method_names()``).
        params: overrides of the method's default parameters.
        decode: frame size and rate.
        bound: flow is clipped to [-bound, bound] pixels before quantisation (TSN uses 20).
        mapping: ``symmetric`` (zero exact) or ``tsn`` (see :mod:`flowprep.quantize`).
        rgb_format: ``jpeg`` or ``raw``.
        flow_format: ``jpeg``, ``png`` (lossless codes), ``raw`` (uncompressed codes) or ``float16`` (no quantisation).
        jpeg_quality: JPEG quality for RGB and flow.
    """

    method: str = "tvl1"
    params: dict = field(default_factory=dict)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    bound: float = 20.0
    mapping: str = "symmetric"
    rgb_format: str = "jpeg"
    flow_format: str = "jpeg"
    jpeg_quality: int = 95

    def __post_init__(self):
        get_method(self.method)
        self.params = resolve_params(self.method, self.params)
        if self.mapping not in MAPPINGS:
            raise ValueError(f"unknown mapping {self.mapping!r}; choose one of {', '.join(MAPPINGS)}")
        if not self.bound > 0:
            raise ValueError(f"bound must be positive, got {self.bound}")
        if self.rgb_format not in RGB_FORMATS:
            raise ValueError(f"unknown rgb format {self.rgb_format!r}; choose one of {', '.join(RGB_FORMATS)}")
        if self.flow_format not in FLOW_FORMATS:
            raise ValueError(f"unknown flow format {self.flow_format!r}; choose one of {', '.join(FLOW_FORMATS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg quality must be in 1..100, got {self.jpeg_quality}")

    def to_json(self) -> dict:
        d = asdict(self)
        d["decode"]["size"] = list(self.decode.size) if self.decode.size else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ExtractConfig":
        """The config recorded in a store's ``store.json`` (extra keys such as ``schema`` are ignored)."""
        names = {f for f in cls.__dataclass_fields__ if f != "decode"}
        return cls(**{k: v for k, v in d.items() if k in names}, decode=DecodeConfig.from_dict(d["decode"]))


@dataclass
class VideoResult:
    id: str
    ok: bool
    pairs: int = 0
    seconds: float = 0.0
    bytes: int = 0
    num_frames: int = 0
    height: int = 0
    width: int = 0
    error: str = ""


@dataclass
class Summary:
    total: int
    done: int
    skipped: int
    failed: dict  # {video id: reason}
    seconds: float
    pairs: int
    damaged: dict = field(default_factory=dict)  # {video id: problem} of finished files found damaged, extracted again

    @property
    def ok(self) -> bool:
        return not self.failed


def decode_for_flow(src: Path, cfg: ExtractConfig):
    """Decode ``src`` as ``cfg`` says; raises :class:`VideoError` when it has fewer than the 2 frames flow needs."""
    video = read_video(src, cfg.decode)
    if len(video.frames) < 2:
        raise VideoError(src, f"only {len(video.frames)} frame after subsampling; flow needs at least 2")
    return video


def write_extracted(store_dir: Path, entry: VideoEntry, video, flow: np.ndarray, cfg: ExtractConfig) -> int:
    """Quantise ``flow`` (T-1, H, W, 2) float32 as ``cfg`` says and write the video's store file; returns its bytes.

    The one writer of video files for every extraction path, so that they all make the same bytes.
    """
    data = flow if cfg.flow_format == "float16" else quantize(flow, cfg.bound, cfg.mapping)
    h, w = video.frames.shape[1:3]
    attrs = dict(
        id=entry.id, label=entry.label, class_name=entry.class_name, num_frames=len(video.frames), height=h,
        width=w, source_fps=video.source_fps, fps=video.fps, source_frames=video.source_frames,
        method=cfg.method, mapping=cfg.mapping, bound=cfg.bound,
        # All the settings, so that the files say what they were made with if store.json is lost or edited.
        settings=json.dumps(comparable_settings(cfg.to_json()), sort_keys=True),
    )
    return write_video(video_path(store_dir, entry.id), frames=video.frames, frame_index=video.frame_index,
                       codes_or_flow=data, attrs=attrs, rgb_format=cfg.rgb_format, flow_format=cfg.flow_format,
                       jpeg_quality=cfg.jpeg_quality)


def failure_result(vid: str, error: BaseException, seconds: float) -> VideoResult:
    """The failed :class:`VideoResult` of ``vid``: a :class:`VideoError`'s problem, or any other error as internal."""
    if isinstance(error, VideoError):
        return VideoResult(vid, False, seconds=seconds, error=error.problem)
    tb = traceback.format_exception_only(type(error), error)[-1].strip()
    return VideoResult(vid, False, seconds=seconds, error=f"internal error: {tb}")


def extract_video(src: Path, entry: VideoEntry, store_dir: Path, cfg: ExtractConfig, threads: int = 1) -> VideoResult:
    """Decode one video, compute its flow and write its store file. Never raises: failures come back as a result."""
    import sys

    import cv2

    cv2.setNumThreads(threads)
    get_method(cfg.method)  # imports the method's module (torch for tvl1-torch) before its threads are set
    if "torch" in sys.modules:
        # tvl1-torch on the CPU: torch's own threads too, or every process runs one per core. Measured on the loaded
        # 2-core machine: 2 torch threads took 7-10x the CPU time of 1 (threads spin while their partner waits).
        sys.modules["torch"].set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        video = decode_for_flow(src, cfg)
        flow = video_flow(video.frames, cfg.method, cfg.params)  # (T-1, H, W, 2)
        size = write_extracted(store_dir, entry, video, flow, cfg)
        h, w = video.frames.shape[1:3]
        return VideoResult(entry.id, True, len(flow), time.perf_counter() - t0, size, len(video.frames), h, w)
    except Exception as e:  # any failure of one video must not stop the batch
        return failure_result(entry.id, e, time.perf_counter() - t0)


class StoreLocked(Exception):
    pass


def _lock(store_dir: Path):
    fh = open(store_dir / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise StoreLocked(f"{store_dir}: another flowprep extract is writing this store") from None
    return fh


def _remove_stale_temporaries(store_dir: Path) -> int:
    n = 0
    for p in store_dir.rglob("*.tmp-*"):
        # <name>.tmp-<pid>; a video may have ".tmp-" in its own name, and a class folder too (not a temporary)
        if p.name.rsplit(".tmp-", 1)[1].isdigit() and not p.is_dir():
            p.unlink(missing_ok=True)
            n += 1
    return n


def _manifest(ds: Dataset) -> dict:
    return {
        "root": str(ds.root.resolve()),
        "classes": ds.classes,
        "videos": [asdict(v) for v in ds.videos],
        "splits": {str(k): v for k, v in ds.splits.items()},
        "split_source": ds.split_source,
        "problems": ds.problems,
    }


def prepare_store(store_dir: Path, ds: Dataset, cfg: ExtractConfig) -> None:
    """Create or reopen a store for ``cfg``; refuses a store made with other settings.

    When ``store.json`` is missing but finished video files are there, the settings are recovered from the
    files' own ``settings`` attribute; a file without one (made by an older flowprep) makes this refuse.
    """
    store_dir.mkdir(parents=True, exist_ok=True)
    settings = {"schema": SCHEMA_VERSION, "flowprep_version": __version__, **cfg.to_json()}
    existing = store_dir / "store.json"
    if existing.is_file():
        old, source = read_json(existing), "there"
        if not isinstance(old, dict):
            raise StoreError(f"{existing}: not a flowprep store.json (a JSON object of settings)")
    else:
        old, source = _settings_from_files(store_dir)
        source = f"{source}, the store.json being missing"
    if old is not None:
        old_c, new_c = comparable_settings(old), comparable_settings(settings)
        differ = settings_differences(old_c, new_c)
        if differ:
            raise ValueError(
                f"{store_dir}: this store was made with other settings ({', '.join(differ)}: "
                f"{old_c.get(differ[0])!r} {source}, {new_c.get(differ[0])!r} now); choose another -o or delete "
                "the store"
            )
    if not existing.is_file():
        write_json_atomic(existing, settings)
    write_json_atomic(store_dir / "manifest.json", _manifest(ds))


def _settings_from_files(store_dir: Path) -> tuple[dict | None, str]:
    """(settings, the file they came from) of a store whose ``store.json`` is missing; (None, "") if it has no
    video files. Raises :class:`StoreError` when the files do not record their settings."""
    for path in sorted((store_dir / "videos").rglob("*.h5")):
        try:
            with open_h5(path) as f:
                recorded = f.attrs.get("settings")
            settings = json.loads(recorded.decode() if isinstance(recorded, bytes) else recorded)
        except Exception:  # unreadable or without settings: try the next file
            continue
        if isinstance(settings, dict):
            return settings, f"in {path}"
    if any((store_dir / "videos").rglob("*.h5")):
        raise StoreError(f"{store_dir / 'store.json'}: missing, and no video file of the store records its settings "
                         "(made by an older flowprep); restore store.json, or choose another -o")
    return None, ""


def write_index(store_dir: Path, ds: Dataset, new: dict[str, VideoResult], known: dict | None = None) -> dict:
    """Rewrite ``index.json`` (per-video frames, size, bytes) from the finished videos on disk.

    ``known`` maps video ids to the :class:`flowprep.store.VideoInfo` of files already checked in this run.
    """
    known = known or {}
    index = {}
    for v in ds.videos:
        path = video_path(store_dir, v.id)
        if not path.is_file():
            continue
        r = new.get(v.id)
        if r is not None and r.ok:
            index[v.id] = {"num_frames": r.num_frames, "height": r.height, "width": r.width, "bytes": r.bytes}
            continue
        info = known.get(v.id)
        if info is not None:
            n, h, w = info.num_frames, info.height, info.width
        else:
            with open_h5(path) as f:
                n, h, w = (int(f.attrs[k]) for k in ("num_frames", "height", "width"))
        index[v.id] = {"num_frames": n, "height": h, "width": w, "bytes": path.stat().st_size}
    write_json_atomic(store_dir / "index.json", index)
    return index


def check_finished(store_dir: Path, videos: list[VideoEntry], cfg: ExtractConfig, *, checksum: bool = True,
                   jobs: int = -1) -> tuple[dict, dict]:
    """Check the finished files of ``videos`` (:func:`flowprep.store.check_video_file`), in ``jobs`` processes.

    Returns ``({video id: VideoInfo} of the sound files, {video id: problem} of the damaged ones)``.
    """
    settings = cfg.to_json()
    done = [v for v in videos if video_path(store_dir, v.id).is_file()]
    tasks = (delayed(check_video_file)(video_path(store_dir, v.id), vid=v.id, settings=settings, checksum=checksum)
             for v in done)
    sound, damaged = {}, {}
    for v, (problem, info) in zip(done, Parallel(n_jobs=jobs if len(done) > 8 else 1)(tasks)):
        if problem:
            damaged[v.id] = problem
        else:
            sound[v.id] = info
    return sound, damaged


def record_failure(store_dir: Path, vid: str, source: str, reason: str) -> None:
    write_json_atomic(failure_path(store_dir, vid), {"id": vid, "source": source, "error": reason,
                                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _drop_stale_failures(store_dir: Path, ds: Dataset, pending: set[str]) -> None:
    """Remove failure records of videos that are done by now or no longer in the dataset."""
    keep = pending | {p["id"] for p in ds.problems}
    for p in (store_dir / "failed").rglob("*.json"):
        try:
            vid = read_json(p)["id"]
        except (OSError, StoreError, KeyError, TypeError):
            vid = None
        if vid not in keep:
            p.unlink(missing_ok=True)


def extract_dataset(root, store_dir, cfg: ExtractConfig = None, *, jobs: int | None = None, threads: int = 1,
                    splits_dir=None, list_file=None, source: DatasetSource | None = None, progress: bool = True,
                    log=print, dask=None, pipeline=None, check: str = "full") -> Summary:
    """Extract every video of the dataset at ``root`` into the store ``store_dir``.

    Args:
        root: dataset root (see :mod:`flowprep.dataset` for layouts).
        store_dir: the store directory; created, or resumed when it exists.
        cfg: what to extract.
        jobs: joblib worker processes (default -1: one per core). Not with ``dask``.
        threads: OpenCV threads inside each worker (or each dask task).
        splits_dir, list_file: where the splits or the list of videos are, if not in the usual places.
        source: the list files (one per subset, in any format of :func:`flowprep.dataset.read_list`), split folder
            and class file to use instead; it replaces ``splits_dir`` and ``list_file``.
        progress: show a progress bar (videos, frame pairs/s, ETA).
        log: called with one line per failure.
        dask: run the videos on a ``dask.distributed`` cluster instead of local processes: the scheduler's
            address (``tcp://host:8786``) or a ``distributed.Client``. Workers must read the dataset at the path
            ``root`` has here; only this process writes the store (see :mod:`flowprep.cluster`).
        pipeline: a :class:`flowprep.batched.PipelineConfig` to run a batched method (``tvl1-torch``) through the
            batched pipeline of :mod:`flowprep.batched` (decoding and writing on CPU workers, flow in batches across
            videos on the method's device); ``jobs`` are then its decoding processes. By default that pipeline
            runs when the method is batched and its device resolves to CUDA; giving ``pipeline`` runs it on any
            device. Not with ``dask``.
        check: how the finished files of a resumed store are checked before they are trusted; a file that
            fails is reported (``log``), removed and extracted again. ``full``: structure, settings and the
            sha256 of the contents with every image header (reads the whole store once, in ``jobs``
            processes); ``quick``: structure and settings only (metadata, about a millisecond per file).
            See :func:`flowprep.store.check_video_file`.

    Returns:
        A :class:`Summary`; ``summary.ok`` is False when any video or dataset entry failed.

    Raises:
        flowprep.cluster.ClusterError: with ``dask``, when the cluster cannot be used or a task is lost for a
            reason that is not one video's.
    """
    cfg = cfg or ExtractConfig()
    # Checked before the store is touched: joblib would only complain after the store was made.
    if dask is not None and jobs is not None:
        raise ValueError("jobs and dask exclude each other: on a cluster the workers' threads set the parallelism")
    jobs = -1 if jobs is None else jobs
    if jobs == 0:
        raise ValueError("jobs must be a number of processes, or negative as in joblib (-1: one per core), got 0")
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if check not in ("full", "quick"):
        raise ValueError(f"check must be full or quick, got {check!r}")
    use_pipeline = False
    if dask is None:  # decided before the store is touched: a bad device or pipeline setting leaves nothing
        from . import batched

        use_pipeline = batched.use_pipeline(cfg, pipeline)
    elif pipeline is not None:
        raise ValueError("the batched pipeline runs on this machine's device; it does not combine with dask")
    root, store_dir = Path(root), Path(store_dir)
    ds = discover(root, source or DatasetSource(splits_dir=splits_dir, list_file=list_file))
    with ExitStack() as cleanup:
        client = None
        if dask is not None:  # connected and checked before the store is touched: a bad cluster leaves nothing
            from . import cluster

            client, owned = cluster.connect(dask)
            if owned:
                cleanup.callback(client.close)
            # Workers read the sources by absolute path: a relative root means the client's working directory.
            root = root.absolute()
            cluster.check_workers(client, root)

        def start(todo: list[VideoEntry], log_line) -> Iterator[VideoResult]:
            if use_pipeline:
                return batched.extract_batched(todo, root, store_dir, cfg, jobs=jobs, threads=threads,
                                               pipeline=pipeline, log=log_line)
            if client is None:
                tasks = (delayed(extract_video)(root / v.id, v, store_dir, cfg, threads) for v in todo)
                return Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)
            # The workers return file bytes and this process writes them: it stays the store's only writer.
            return cluster.extract_on_cluster(client, todo, root, store_dir, cfg, threads)

        return fill_store(root, store_dir, ds, cfg, start, progress=progress, log=log, desc=f"flowprep {cfg.method}",
                          check=check, check_jobs=jobs)


def fill_store(root: Path, store_dir: Path, ds: Dataset, cfg, start: Callable, *, progress: bool = True, log=print,
               desc: str = "flowprep", check: str = "full", check_jobs: int = -1) -> Summary:
    """Fill ``store_dir`` with the videos of ``ds``: the store-side machinery every way of making a store shares.

    Locks the store, records the settings (``cfg.to_json()``; a store made with other settings is refused) and
    the dataset, removes temporary files of a killed run, records the dataset's problems, then calls
    ``start(todo, log_line)`` with the videos not yet in the store and consumes the :class:`VideoResult` s it
    yields (in any order; each unit of work writes its own file atomically): failure records, progress bar,
    ``index.json``. Rerunning resumes: finished videos are checked (:func:`check_finished`; a damaged one is
    logged as ``DAMAGED``, removed and done again), the others skipped, failed ones retried.

    Args:
        root: dataset root (failure records name the source under it).
        store_dir: the store directory, created when missing.
        ds: the videos and splits to store.
        cfg: the settings, with ``to_json()`` (:class:`ExtractConfig`, or
            :class:`flowprep.rawframes.ImportConfig`).
        start: ``start(todo, log_line) -> iterable of VideoResult``; an iterable with ``close()`` is closed on exit.
        progress: show a progress bar; desc is its label.
        log: called with one line per failure or damaged file.
        check: ``full`` or ``quick``: how finished files are checked (see :func:`extract_dataset`), in
            ``check_jobs`` processes.
    """
    with ExitStack() as cleanup:
        store_dir.mkdir(parents=True, exist_ok=True)
        cleanup.enter_context(_lock(store_dir))
        prepare_store(store_dir, ds, cfg)
        _remove_stale_temporaries(store_dir)
        failed = {}
        for p in ds.problems:
            record_failure(store_dir, p["id"], str(root / p["id"]), p["problem"])
            failed[p["id"]] = p["problem"]
            log(f"FAILED {p['id']}: {p['problem']}")
        known, damaged = check_finished(store_dir, ds.videos, cfg, checksum=check == "full", jobs=check_jobs)
        for vid, problem in damaged.items():
            log(f"DAMAGED {vid}: {problem}; extracting it again")
            video_path(store_dir, vid).unlink(missing_ok=True)
        todo = [v for v in ds.videos if not video_path(store_dir, v.id).is_file()]
        _drop_stale_failures(store_dir, ds, {v.id for v in todo})
        skipped = len(ds.videos) - len(todo)
        t0 = time.perf_counter()
        results: dict[str, VideoResult] = {}
        pairs = 0
        bar = tqdm(total=len(todo), unit="video", disable=not progress, dynamic_ncols=True, desc=desc)
        finished = start(todo, bar.write if progress else log)
        if hasattr(finished, "close"):
            cleanup.callback(finished.close)  # on an error here, stop the workers (or cancel the cluster's work)
        for r in finished:
            results[r.id] = r
            if r.ok:
                pairs += r.pairs
                failure_path(store_dir, r.id).unlink(missing_ok=True)
            else:
                failed[r.id] = r.error
                record_failure(store_dir, r.id, str(root / r.id), r.error)
                bar.write(f"FAILED {r.id}: {r.error}") if progress else log(f"FAILED {r.id}: {r.error}")
            bar.update(1)
            bar.set_postfix_str(f"{pairs / max(time.perf_counter() - t0, 1e-9):.1f} pairs/s, {len(failed)} failed")
        bar.close()
        write_index(store_dir, ds, results, known)
        return Summary(len(ds.videos) + len(ds.problems), len(results) - sum(not r.ok for r in results.values()),
                       skipped, failed, time.perf_counter() - t0, pairs, damaged)



def repair_videos(store_dir, video_ids, *, jobs: int = -1, threads: int = 1, log=print) -> Summary:
    """Extract the videos ``video_ids`` of a store again, from the dataset root its manifest records and with
    the settings its ``store.json`` records (``flowprep verify --repair``). Their old files are removed first.

    Runs the per-video path (:func:`extract_video` in ``jobs`` processes), so the repaired files are the ones a
    clean run makes. Returns a :class:`Summary` of the repaired videos.
    """
    store_dir = Path(store_dir)
    with _lock(store_dir):
        settings = read_json(store_dir / "store.json")
        if "imported" in settings:
            raise StoreError(f"{store_dir}: an imported store is repaired by running 'flowprep import-frames' again "
                             "(its damaged files are found and imported again)")
        cfg = ExtractConfig.from_json(settings)
        manifest = read_json(store_dir / "manifest.json")
        root = Path(manifest["root"])
        entries = [VideoEntry(**v) for v in manifest["videos"]]
        by_id = {v.id: v for v in entries}
        unknown = [v for v in video_ids if v not in by_id]
        if unknown:
            raise StoreError(f"{store_dir / 'manifest.json'}: no video {unknown[0]!r} to repair")
        todo = [by_id[v] for v in video_ids]
        for v in todo:
            video_path(store_dir, v.id).unlink(missing_ok=True)
        t0 = time.perf_counter()
        tasks = (delayed(extract_video)(root / v.id, v, store_dir, cfg, threads) for v in todo)
        results = {r.id: r for r in Parallel(n_jobs=jobs if len(todo) > 1 else 1)(tasks)}
        failed = {}
        for r in results.values():
            if r.ok:
                failure_path(store_dir, r.id).unlink(missing_ok=True)
            else:
                failed[r.id] = r.error
                record_failure(store_dir, r.id, str(root / r.id), r.error)
                log(f"FAILED {r.id}: {r.error}")
        ds = Dataset(root, list(manifest["classes"]), entries)
        write_index(store_dir, ds, results)
        return Summary(len(todo), len(todo) - len(failed), 0, failed, time.perf_counter() - t0,
                       sum(r.pairs for r in results.values()))
