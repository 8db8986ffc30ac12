"""Parallel, resumable extraction of frames and flow for a whole dataset.

Each video is one unit of work (:mod:`flowprep.unit`): decode -> flow -> quantise -> encode -> write its own HDF5
file under a temporary name -> rename. A *backend* runs the units and yields one :class:`VideoResult` per video;
all three have the shape ``backend(todo, root, store_dir, cfg) -> Iterator[VideoResult]``:

* :func:`extract_local`: joblib worker processes on this machine, one video each (the default);
* :func:`flowprep.batched.extract_batched`: CPU workers decode and write, one device solves flow in batches
  across videos (a batched method such as ``tvl1-torch`` on CUDA);
* :func:`flowprep.cluster.extract_on_cluster`: one Dask task per video on a cluster.

:func:`extract_dataset` picks a backend; :func:`fill_store` owns the store (lock, settings, failure records,
index) and the progress bar, and records what the backend yields (the rawframes importer fills a store through
it too). Rerunning the same command skips the finished videos, retries the failed ones and removes temporary
files left by a killed run.
"""
from __future__ import annotations

import fcntl
import functools
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from . import __version__
from .dataset import Dataset, DatasetSource, VideoEntry, discover
from .errors import ConfigError, FlowprepError
from .store import (SCHEMA_VERSION, StoreError, check_video_file, comparable_settings, failure_path, file_layout,
                    open_h5, read_json, recorded_settings, settings_differences, settings_problem, video_path,
                    write_json_atomic)
# The unit of work; ExtractConfig, VideoResult and extract_video are part of this module's API too.
from .unit import ExtractConfig, VideoResult, extract_video  # noqa: F401

# What extract_dataset runs: (todo, root, store_dir, cfg) -> one VideoResult per video, in any order.
Backend = Callable[[list, Path, Path, ExtractConfig], Iterator[VideoResult]]


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


class StoreLocked(FlowprepError):
    """Another ``flowprep extract`` holds the store's lock."""


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
        problem = settings_problem(old)  # what Store refuses to read
        if problem:
            raise StoreError(f"{existing}: {problem}; restore it, or delete it to recover the settings from the "
                             "store's files")
    else:
        old, source = _settings_from_files(store_dir)
        source = f"{source}, the store.json being missing"
    if old is not None:
        old_c, new_c = comparable_settings(old), comparable_settings(settings)
        differ = settings_differences(old_c, new_c)
        if differ:
            raise ConfigError(
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
        settings = recorded_settings(path)
        if settings is not None:
            return settings, f"in {path}"
    if any((store_dir / "videos").rglob("*.h5")):
        raise StoreError(f"{store_dir / 'store.json'}: missing, and no video file of the store records its settings "
                         "(made by an older flowprep); restore store.json, or choose another -o")
    return None, ""


def write_index(store_dir: Path, ds: Dataset, new: dict[str, VideoResult], known: dict | None = None) -> dict:
    """Rewrite ``index.json`` from the finished videos on disk: per video its frames, frame size, file size
    (``bytes``) and where its JPEG/PNG datasets lie (``layout``, see :func:`flowprep.store.file_layout`).

    ``known`` maps video ids to the :class:`flowprep.store.VideoInfo` of files already checked in this run.
    Each file is opened once (about a millisecond) for its layout.
    """
    known = known or {}
    index = {}
    for v in ds.videos:
        path = video_path(store_dir, v.id)
        if not path.is_file():
            continue
        r, info = new.get(v.id), known.get(v.id)
        with open_h5(path) as f:
            if r is not None and r.ok:
                n, h, w = r.num_frames, r.height, r.width
            elif info is not None:
                n, h, w = info.num_frames, info.height, info.width
            else:
                n, h, w = (int(f.attrs[k]) for k in ("num_frames", "height", "width"))
            layout = file_layout(f)
        index[v.id] = {"num_frames": n, "height": h, "width": w, "bytes": path.stat().st_size, "layout": layout}
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


def extract_local(todo: list[VideoEntry], root: Path, store_dir: Path, cfg: ExtractConfig, *, jobs: int = -1,
                  threads: int = 1) -> Iterator[VideoResult]:
    """The joblib backend: :func:`extract_video` for each video of ``todo`` in ``jobs`` worker processes.

    Yields one :class:`VideoResult` per video, in the order they finish.
    """
    tasks = (delayed(extract_video)(root / v.id, v, store_dir, cfg, threads) for v in todo)
    return Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)


def _check_dask_device(cfg: ExtractConfig) -> None:
    """Refuse a GPU method on a Dask cluster unless it is pinned to the CPU.

    On a cluster each worker process solves its videos alone (the per-video path), so on GPU workers every process
    would hold its own CUDA context and a batch of 64 pairs (16 worker processes sharing a GPU: ~38 GB), with none
    of the batched pipeline's out-of-memory backoff. ``device=auto`` is refused too: it picks the GPU on whichever
    worker has one.
    """
    from .flow import get_method

    method = get_method(cfg.method)
    if "cuda" not in method.devices:
        return
    device = str(cfg.params.get("device", method.defaults.get("device", "auto")))
    if device != "cpu":
        raise ConfigError(
            f"--dask with {cfg.method} on device {device!r}: each worker process would solve on its own with a CUDA "
            "context and a full batch of its own, and no out-of-memory backoff. On GPU machines run the batched "
            "pipeline instead (flowprep extract --device cuda, without --dask, one run per GPU machine on a share "
            "of the dataset given as list files); on CPU workers pass --device cpu")


def _check_run_args(cfg: ExtractConfig, jobs, threads: int, dask, pipeline) -> tuple[int, bool]:
    """Argument checks made before the store is touched. Returns (jobs, whether the batched pipeline runs)."""
    if dask is not None and jobs is not None:
        raise ConfigError("jobs and dask exclude each other: on a cluster the workers' threads set the parallelism")
    jobs = -1 if jobs is None else jobs
    if jobs == 0:
        raise ConfigError("jobs must be a number of processes, or negative as in joblib (-1: one per core), got 0")
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, got {threads}")
    if dask is not None:
        if pipeline is not None:
            raise ConfigError("the batched pipeline runs on this machine's device; it does not combine with dask")
        _check_dask_device(cfg)
        return jobs, False
    from . import batched  # a bad device or pipeline setting is refused here, before anything is written

    return jobs, batched.use_pipeline(cfg, pipeline)


def _open_backend(cleanup: ExitStack, root: Path, *, jobs: int, threads: int, dask, use_pipeline: bool,
                  pipeline) -> tuple[Backend, Path]:
    """The backend to run, bound to its settings; with ``dask``, connected and checked (before the store is
    touched: a bad cluster leaves nothing). Returns (backend, root as the backend must see it). The batched
    pipeline's backend also takes ``log=``, for the lines it prints while the progress bar runs."""
    if use_pipeline:
        from .batched import extract_batched

        return functools.partial(extract_batched, jobs=jobs, threads=threads, pipeline=pipeline), root
    if dask is None:
        return functools.partial(extract_local, jobs=jobs, threads=threads), root
    from . import cluster

    client, owned = cluster.connect(dask)
    if owned:
        cleanup.callback(client.close)
    # Workers read the sources by absolute path: a relative root means the client's working directory.
    root = root.absolute()
    cluster.check_workers(client, root)
    # The workers return file bytes and this process writes them: it stays the store's only writer.
    return functools.partial(cluster.extract_on_cluster, client=client, threads=threads), root


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
    jobs, use_pipeline = _check_run_args(cfg, jobs, threads, dask, pipeline)
    if check not in ("full", "quick"):
        raise ConfigError(f"check must be full or quick, got {check!r}")
    root, store_dir = Path(root), Path(store_dir)
    ds = discover(root, source or DatasetSource(splits_dir=splits_dir, list_file=list_file))
    with ExitStack() as cleanup:
        backend, root = _open_backend(cleanup, root, jobs=jobs, threads=threads, dask=dask,
                                      use_pipeline=use_pipeline, pipeline=pipeline)

        def start(todo: list[VideoEntry], log_line) -> Iterator[VideoResult]:
            run = functools.partial(backend, log=log_line) if use_pipeline else backend
            return run(todo, root, store_dir, cfg)

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
