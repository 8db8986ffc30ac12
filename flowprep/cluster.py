"""Per-video extraction on a ``dask.distributed`` cluster (``flowprep extract --dask ADDRESS``).

The unit of work is the one of the local path (:func:`flowprep.unit.extract_video`), run as one dask task
per video. Only the client process writes into the store: a worker computes a video's file in its own scratch
directory and returns the file's bytes, and the client writes them under a temporary name and renames it, as
:func:`flowprep.store.write_video` does locally. So:

* the store need not be reachable from the workers (it can sit on the client's local disk), but every worker
  must read the source videos at the client's path of the dataset root (a shared or replicated file system);
* a worker killed mid-video leaves nothing in the store; the scheduler gives its in-flight tasks to other
  workers (a task whose workers die ``distributed.scheduler.allowed-failures`` times, 3 by default, fails with
  ``KilledWorker`` and is recorded as a failure of that video: it is retried on the next run);
* dask may run a task twice (a worker lost after finishing it), but the client receives one result per
  video and writes each file once.

Tasks are submitted in a window of a few per worker thread rather than all at once, so a dataset of
hundreds of thousands of videos neither floods the scheduler nor holds finished files in worker memory.

``dask[distributed]`` is an optional extra: ``pip install "twostream[dask]"``, on the client and the workers.
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from . import __version__
from .dataset import VideoEntry
from .errors import ConfigError, FlowprepError
from .unit import ExtractConfig, VideoResult, extract_video
from .store import atomic_path, video_path

INSTALL_HINT = 'pip install "twostream[dask]"'
# Cancelled tasks (``client.restart()``, a task cancelled on the dashboard) are submitted again this many times.
MAX_RESUBMITS = 3


class ClusterError(FlowprepError):
    """The dask cluster cannot be used (extra not installed, scheduler unreachable, workers not set up)."""


def require_distributed():
    """Import and return the ``distributed`` module, or raise :class:`ClusterError` naming the extra."""
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"--dask needs dask.distributed, which is not installed: {INSTALL_HINT}") from None
    return distributed


def connect(dask) -> tuple[object, bool]:
    """A ``distributed.Client`` for ``dask`` (a scheduler address, or a client to use as is).

    Returns:
        ``(client, owned)``; ``owned`` is True when the client was opened here and must be closed by the caller.
    """
    distributed = require_distributed()
    if isinstance(dask, distributed.Client):
        return dask, False
    if not isinstance(dask, str) or not dask:
        raise ConfigError(f"dask must be a scheduler address such as tcp://host:8786 or a distributed.Client, "
                         f"got {dask!r}")
    try:
        # Not the default client: a program that calls extract_dataset may use dask for other work.
        return distributed.Client(dask, set_as_default=False), True
    except Exception as e:  # OSError (timeout, refused), ValueError (bad address): all mean the same to a user
        raise ClusterError(f"cannot connect to the dask scheduler at {dask}: {e}") from None


def _probe(root: str) -> tuple[str, bool]:
    return __version__, os.path.isdir(root)


def check_workers(client, root: Path) -> None:
    """Fail early when a connected worker cannot run flowprep or does not see the dataset root.

    Workers that join later are not checked; their videos fail one by one with "no such file" if they cannot
    read them, and are retried on the next run.
    """
    try:
        found = client.run(_probe, str(root))
    except Exception as e:  # the worker could not unpickle the function: flowprep is not installed there
        raise ClusterError(f"the dask workers cannot run flowprep ({type(e).__name__}: {e}); install this "
                           f"version ({__version__}) on every worker: {INSTALL_HINT}") from None
    other = sorted(f"{w} has {v}" for w, (v, _) in found.items() if v != __version__)
    if other:
        raise ClusterError(f"dask workers run another flowprep version than the client ({__version__}): "
                           f"{', '.join(other)}; install the same version everywhere")
    blind = sorted(w for w, (_, ok) in found.items() if not ok)
    if blind:
        raise ClusterError(f"dataset root {root} is not a directory on dask worker(s) {', '.join(blind)}: workers "
                           f"read the source videos at the client's path; mount or copy the dataset there")


def extract_remote(src: Path, entry: VideoEntry, cfg: ExtractConfig,
                   threads: int = 1) -> tuple[VideoResult, bytes | None]:
    """The dask task: :func:`extract_video` into a scratch directory of the worker, returning the file's bytes.

    The scratch directory is inside the worker's dask local directory, which dask removes when the worker
    stops, and purges at the next worker start after a crash.
    """
    from distributed import get_worker

    try:
        scratch = get_worker().local_directory
    except ValueError:  # not inside a worker (called directly, e.g. in a test)
        scratch = tempfile.gettempdir()
    with tempfile.TemporaryDirectory(prefix="flowprep-", dir=scratch) as tmp:
        r = extract_video(src, entry, Path(tmp), cfg, threads)
        data = video_path(tmp, entry.id).read_bytes() if r.ok else None
    return r, data


def _write_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def extract_on_cluster(todo: list[VideoEntry], root: Path, store_dir: Path, cfg: ExtractConfig, *, client,
                       threads: int = 1) -> Iterator[VideoResult]:
    """Run :func:`extract_remote` for every video of ``todo`` on the cluster; write each finished file into the
    store (in this process) and yield one :class:`VideoResult` per video, in order of completion.

    Raises:
        ClusterError: a task was lost in a way that is not one video's fault (the scheduler went away, a task
            was cancelled repeatedly, a task raised, which ``extract_video`` never does unless the worker
            cannot run it). Finished videos are in the store; rerunning resumes.
    """
    from distributed import CancelledError, KilledWorker, as_completed

    queue = iter(todo)
    inflight: dict[str, tuple[object, VideoEntry]] = {}  # task key -> (future, video)
    resubmits: dict[str, int] = {}
    done = as_completed(loop=client.loop)  # not the default client: there may be none

    def submit(v: VideoEntry) -> None:
        # The key names the video (for the dashboard and `client.processing()`), and is new for each submission:
        # a key that was just cancelled, or that an earlier run left on the scheduler, is not safe to reuse.
        key = f"flowprep-{uuid.uuid4().hex[:12]}-{v.id}"
        f = client.submit(extract_remote, root / v.id, v, cfg, threads, key=key, pure=False)
        inflight[f.key] = (f, v)
        done.add(f)

    def fill() -> None:
        # Re-read the worker count each time: workers may join (adaptive clusters) or leave during the run.
        window = max(8, 2 * sum(client.nthreads().values()))
        while len(inflight) < window:
            v = next(queue, None)
            if v is None:
                return
            submit(v)

    try:
        fill()
        for f in done:
            _, v = inflight.pop(f.key)
            try:
                r, data = f.result()
            except KilledWorker as e:
                r, data = VideoResult(v.id, False, error=f"every dask worker that ran it died (out of memory? see "
                                      f"the worker logs): {e}"), None
            except CancelledError:  # also when the cancellation races with fetching a finished result
                if client.status != "running" or resubmits.get(v.id, 0) >= MAX_RESUBMITS:
                    raise ClusterError(f"dask cancelled the task of {v.id} (client {client.status}; scheduler "
                                       f"gone?); the videos finished so far are in the store: rerun the same "
                                       f"command to resume") from None
                resubmits[v.id] = resubmits.get(v.id, 0) + 1
                submit(v)
                continue
            except Exception as e:  # extract_video never raises: the worker could not run it at all
                raise ClusterError(f"the dask task of {v.id} failed ({type(e).__name__}: {e}); the videos "
                                   f"finished so far are in the store: rerun the same command to resume") from e
            f.release()
            if r.ok:
                _write_atomic(video_path(store_dir, v.id), data)
            fill()
            yield r
    finally:
        if inflight:  # an error, or the consumer stopped early: do not leave work running for nobody
            client.cancel([f for f, _ in inflight.values()])

