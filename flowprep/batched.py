"""Batched flow extraction: CPU workers decode and write, one device solves flow in batches across videos.

The per-video path of :mod:`flowprep.extract` gives each video to one process, which decodes it, computes its
flow pair by pair and writes it. A GPU method such as ``tvl1-torch`` (Zach, Pock & Bischof 2007, see
:mod:`flowprep.tvl1_torch`) wants the opposite: one process owning the device and feeding it large batches of
frame pairs, whichever videos they come from, while the CPU work happens elsewhere. This module is that
pipeline, three stages that overlap:

1. **decode** (CPU, ``jobs`` processes): ``read_video`` and the gray conversion, in a pool of loky worker
   processes (joblib's: started afresh, not forked, so safe next to CUDA and threads, and unlike ``spawn`` they
   do not import the caller's ``__main__``; a pool broken by a killed worker is replaced). At most
   ``max_videos`` videos are between their submission and the end of their write, which bounds memory: a video
   in flight holds its RGB frames, its gray frames and its float flow, about ``T * H * W * 12`` bytes (190 MB
   for 190 frames at 340x256).
2. **flow** (the device, one thread): the main thread keeps a queue of frame pairs per frame size, from all
   decoded videos, and cuts it into batches of ``batch_pairs`` pairs; a single device thread solves them with
   ``tvl1`` while the main thread collects decoded videos, builds the next batch and scatters the previous
   one's flow. Up to two batches are queued on the device thread, so the next one is ready when the current
   one ends. On CUDA a batch is uploaded from pinned memory with ``non_blocking`` copies. A batch is cut short
   only when no video is being decoded (end of the dataset, or ``max_videos`` reached); with ``compile=True``
   a short batch is padded to the full size, since compiled graphs have fixed shapes.
3. **write** (CPU, ``writers`` threads): once every pair of a video is solved, a thread quantises, encodes and
   writes its file with :func:`flowprep.unit.write_extracted` (atomic, as in the per-video path); OpenCV's
   encoders and hashing release the GIL, so the device thread does not wait for the disk.

Results equal the per-video path's bit for bit: ``tvl1`` stops each pair on its own (a converged pair is frozen
while the rest of its batch iterates), so a pair's flow does not depend on its batch, and the quantisation and
file writing are the same functions. Failures are per video, as elsewhere: a video that does not decode is
recorded with its reason; a CUDA out-of-memory error frees the failed batch's tensors and the allocator's cache,
halves ``batch_pairs`` for the rest of the run and solves the same pairs again; any other error on a CUDA device
(illegal address, device-side assert, launch failure: ``torch.AcceleratorError``) may have left the device
unusable for the process, so the run stops with :class:`DeviceError` after reporting the finished videos, and a
rerun resumes; on the CPU an error of a batch fails the videos with pairs in it (with the error as reason) and
the run goes on. Crash safety is the store's: a ``kill -9`` leaves at worst temporary files,
which the next run removes, and finished videos are skipped.

When it runs: :func:`flowprep.extract.extract_dataset` uses it for a batched method (one whose registry entry
has a ``device_solver``, see :mod:`flowprep.registry`) whose device resolves to CUDA, or on any device when given
a :class:`PipelineConfig` (``--batch-pairs`` or ``--writers``); on the CPU the per-video path, one process per
core, is the faster one. The store records the method and all its parameters in ``store.json``; the method's
runtime-only ones (``device``, ``batch_size``, ``compile``) neither block a resume with other values nor reach
``twostream predict``, which computes a new video's flow with the others on its own machine's device.

Knobs that matter on a GPU (``flowprep extract --method tvl1-torch --device cuda``):

* ``--batch-pairs`` (default: the method's ``batch_size`` parameter, 64 on CUDA): pairs per batch. Larger
  batches amortise kernel launches and host syncs until memory bandwidth is saturated; at 340x256 a batch of 64
  peaks at 0.86 GB of tensors (float32, ``bench/tvl1_memory.py``), plus the CUDA context and allocator slack. It does not change the results, so it is not recorded in the store.
* ``--jobs`` (decoding processes) and ``--writers`` (threads): the CPU side must keep up with the device,
  i.e. decode and write as many frames per second as the device solves pairs; ``flowprep`` shows pairs/s.
* ``--param precision=float16`` (see :mod:`flowprep.tvl1_torch`): the device side; it changes the flow
  slightly, so a store made with it is not resumed with another. ``--param compile=true`` compiles the
  iteration (the same operations, so a runtime-only parameter).
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .dataset import VideoEntry
from .decode import Video
from .errors import ConfigError, FlowprepError
from .flow import get_method, method_names, to_gray
from .options import opt
from .registry import DeviceSolver
from .unit import ExtractConfig, VideoResult, decode_for_flow, failure_result, write_extracted

# Batches queued on the device thread: one being solved and the next one ready behind it.
DEVICE_QUEUE = 2


@dataclass
class PipelineConfig:
    """Settings of the batched pipeline that do not change what is stored (so not recorded in the store).

    Attributes:
        batch_pairs: frame pairs solved at once; 0 takes the method's own choice (``tvl1-torch``: its
            ``batch_size`` parameter, whose 0 means 64 on CUDA and 1 on the CPU).
        writers: threads that quantise, encode and write finished videos; 0: half the cores, 2 to 8.
        max_videos: videos decoded or being decoded and not yet written, which bounds memory; 0: decoding
            processes + writers + 2.
    """

    batch_pairs: int = opt(0, "batched methods (tvl1-torch): solve N frame pairs at once across videos, decoding and "
                           "writing on --jobs processes and --writers threads meanwhile. This pipeline is the default "
                           "on cuda (N: the method's batch_size, 64 on cuda); giving --batch-pairs or --writers uses "
                           "it on any device", metavar="N", default_help="")
    writers: int = opt(0, "with the batched pipeline: threads that encode and write finished videos", metavar="N",
                       default_help="half the cores, 2 to 8")
    max_videos: int = 0

    def __post_init__(self):
        for name in ("batch_pairs", "writers", "max_videos"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 1, or 0 to choose automatically, got {getattr(self, name)}")


def use_pipeline(cfg: ExtractConfig, pipeline: PipelineConfig | None) -> bool:
    """Whether ``extract_dataset`` runs ``cfg`` through this pipeline: given ``pipeline``, or a batched method on CUDA.

    Raises:
        ValueError: ``pipeline`` given for a method that is not batched, or the method's device is unusable
            (e.g. ``cuda`` without a GPU).
    """
    method = get_method(cfg.method)
    if not method.batched:
        if pipeline is not None:
            batched = [n for n in method_names() if get_method(n).batched]
            raise ConfigError(f"the batched pipeline (batch_pairs, writers) needs a batched flow method "
                              f"({', '.join(batched)}), not {cfg.method!r}")
        return False
    solver = method.device_solver(cfg.params)
    if solver.per_video:
        # e.g. a warm-started pair needs its video's previous pair's flow first: the pairs of a video are solved
        # one after another, which the per-video path does; batching them across videos would be a new scheduler.
        if pipeline is not None:
            raise ConfigError(f"{solver.per_video}: it runs on the per-video path; leave out the batched pipeline "
                              "(--batch-pairs, --writers)")
        return False
    return pipeline is not None or solver.device.type == "cuda"


# --- stage 1: decoding, in worker processes ---------------------------------------------------------

def _init_decoder(threads: int) -> None:
    import cv2

    cv2.setNumThreads(threads)


@dataclass
class Decoded:
    """What a decoding worker sends back: the video and its gray frames (T, H, W) uint8, or why it failed.

    The reason travels as a string: a ``VideoError`` does not survive pickling (its constructor takes two args).
    """

    video: Video | None = None
    gray: np.ndarray | None = None
    error: str = ""


def _decode(src: Path, cfg: ExtractConfig) -> Decoded:
    """Worker task: decode ``src`` as ``cfg`` says (never raises)."""
    try:
        video = decode_for_flow(src, cfg)
        return Decoded(video, to_gray(video.frames))
    except Exception as e:
        return Decoded(error=failure_result("", e, 0.0).error)


# --- the pipeline ----------------------------------------------------------------------------------

class _Video:
    """A video between its decoding and its write."""

    __slots__ = ("entry", "seq", "t0", "video", "gray", "flow", "left", "failed")

    def __init__(self, entry: VideoEntry, seq: int, t0: float):
        self.entry, self.seq, self.t0 = entry, seq, t0
        self.video = self.gray = self.flow = None
        self.left = 0  # pairs not solved yet
        self.failed = False


class DeviceError(FlowprepError):
    """The device failed in a way that may leave it unusable for this process: the run stops (and resumes)."""


class _OutOfMemory(RuntimeError):
    """A batch ran out of device memory; raised without the traceback that held the batch's device tensors."""


def _run_batch(solver: DeviceSolver, prev: np.ndarray, nxt: np.ndarray, pad_to: int) -> np.ndarray:
    """Device-thread task: (n, H, W) uint8 pairs -> (n, H, W, 2) float32 flow on the host.

    Raises:
        _OutOfMemory: the device ran out of memory. By then the failed batch's tensors are released and the
            allocator's cache emptied, so that the retry with a halved batch finds the memory free (the original
            error's traceback, kept until the retry, would hold them alive).
    """
    try:
        return _solve_batch(solver, prev, nxt, pad_to)
    except Exception as e:
        if not _is_out_of_memory(e):
            raise
        message = f"{type(e).__name__}: {e}"
    # Outside the except block the error and its frames are gone, and with them the batch's tensors.
    if solver.device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
    raise _OutOfMemory(message)


def _solve_batch(solver: DeviceSolver, prev: np.ndarray, nxt: np.ndarray, pad_to: int) -> np.ndarray:
    import torch

    n = len(prev)
    a, b = torch.from_numpy(prev), torch.from_numpy(nxt)
    if pad_to > n:  # copies of the last pair: each pair stops on its own, so padding changes no other pair
        a = torch.cat((a, a[-1:].expand(pad_to - n, -1, -1)))
        b = torch.cat((b, b[-1:].expand(pad_to - n, -1, -1)))
    if solver.device.type == "cuda":
        # From pinned memory the copies are asynchronous DMA; the solver's kernels queue behind them.
        a = a.pin_memory().to(solver.device, non_blocking=True)
        b = b.pin_memory().to(solver.device, non_blocking=True)
    else:
        a, b = a.to(solver.device), b.to(solver.device)
    flow = solver.solve(a, b)[:n]  # (n, 2, H, W)
    return flow.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _is_out_of_memory(e: BaseException) -> bool:
    import torch

    return isinstance(e, (torch.cuda.OutOfMemoryError, _OutOfMemory))


def _is_sticky(e: BaseException, device) -> bool:
    """Whether a (non out-of-memory) batch error may have left the device unusable for this process.

    A CUDA error such as an illegal address, a device-side assert or a launch failure (``torch.AcceleratorError``)
    poisons the CUDA context: every later batch would fail too. Any error on a CUDA device is taken as such; on
    the CPU an error stays with its batch.
    """
    import torch

    return isinstance(e, torch.AcceleratorError) or getattr(device, "type", None) == "cuda"


def _write(state: _Video, store_dir: Path, cfg: ExtractConfig) -> VideoResult:
    """Writer-thread task: the video's store file, as the per-video path writes it. Never raises."""
    try:
        size = write_extracted(store_dir, state.entry, state.video, state.flow, cfg)
        t, h, w = state.gray.shape
        return VideoResult(state.entry.id, True, t - 1, time.perf_counter() - state.t0, size, t, h, w)
    except Exception as e:
        return failure_result(state.entry.id, e, time.perf_counter() - state.t0)


def extract_batched(todo: list[VideoEntry], root: Path, store_dir: Path, cfg: ExtractConfig, *, jobs: int = -1,
                    threads: int = 1, pipeline: PipelineConfig | None = None, log=print) -> Iterator[VideoResult]:
    """Extract the videos ``todo`` into ``store_dir`` through the batched pipeline; yields a result per video.

    Called by :func:`flowprep.extract.extract_dataset`, which owns the store (lock, settings, failure records,
    index, progress); see the module docstring for the stages.

    Args:
        todo: the videos to extract, read at ``root / entry.id``.
        store_dir: the store's directory.
        cfg: what to extract; ``cfg.method`` must be a batched method (its registry entry has a ``device_solver``).
        jobs: decoding processes, as in joblib (-1: one per core).
        threads: OpenCV threads in each decoding process.
        pipeline: batch size, writer threads and the bound on videos in flight.
        log: called with a line when the batch size is halved after running out of device memory.

    Yields:
        One :class:`VideoResult` per video of ``todo``, in the order they finish. Closing the generator stops
        the decoders and the device thread and lets running writes finish.
    """
    pipe = BatchedPipeline(root, store_dir, cfg, jobs=jobs, threads=threads, pipeline=pipeline, log=log)
    try:
        yield from pipe.run(todo)
    finally:
        pipe.close()


def _default_writers() -> int:
    # Half the cores: the other half decode. At least 2, so one slow write does not stall the device; at most 8,
    # beyond which the HDF5 writes contend for the disk rather than for the CPU.
    return min(8, max(2, (os.cpu_count() or 2) // 2))


class BatchedPipeline:
    """The three stages of the module docstring, one method each; :meth:`run` drives them and yields results.

    Args: as :func:`extract_batched`'s. Every method but :meth:`run` and :meth:`close` does one step without
    waiting, so each can be driven and checked on its own (on the CPU, with a small ``batch_pairs``).
    """

    def __init__(self, root: Path, store_dir: Path, cfg: ExtractConfig, *, jobs: int = -1, threads: int = 1,
                 pipeline: PipelineConfig | None = None, log=print):
        from joblib import effective_n_jobs

        pipeline = pipeline or PipelineConfig()
        self.root, self.store_dir, self.cfg, self.threads, self.log = root, store_dir, cfg, threads, log
        self.solver: DeviceSolver = get_method(cfg.method).device_solver(cfg.params)
        self.batch_pairs = pipeline.batch_pairs or self.solver.batch_pairs
        self.decoders = max(1, effective_n_jobs(jobs))
        writers = pipeline.writers or _default_writers()
        self.max_videos = pipeline.max_videos or self.decoders + writers + 2
        self.decode_pool = self._decode_executor()
        self.device_pool = cf.ThreadPoolExecutor(1, thread_name_prefix="flowprep-device")
        self.write_pool = cf.ThreadPoolExecutor(writers, thread_name_prefix="flowprep-write")
        self.decoding: dict[cf.Future, _Video] = {}
        self.solving: dict[cf.Future, tuple[list, int]] = {}  # batch -> ([(video, pair index)], pairs on the device)
        self.writing: set[cf.Future] = set()
        self.queues: dict[tuple[int, int], collections.deque] = {}  # (H, W) -> deque of (video, pair index)
        self.submitted = 0  # videos submitted to the decoders
        self.in_flight = 0  # videos submitted and not yet yielded
        self.stop: DeviceError | None = None  # set by a batch error that leaves the device unusable

    def _decode_executor(self):
        from joblib.externals.loky import ProcessPoolExecutor

        return ProcessPoolExecutor(self.decoders, initializer=_init_decoder, initargs=(self.threads,))

    def run(self, todo: list[VideoEntry]) -> Iterator[VideoResult]:
        """Yield one :class:`VideoResult` per video of ``todo``, in the order they finish."""
        entries = iter(todo)
        while True:
            self.submit_decodes(entries)
            done = self.collect_decoded() + self.collect_solved() + self.collect_writes()
            self.submit_batches()
            self.in_flight -= len(done)
            yield from done
            if self.stop is not None:  # what finished is reported; what is in flight is done again on a rerun
                raise self.stop
            if self.in_flight == 0 and self.submitted == len(todo):
                return
            if not done:  # nothing moved on this pass: sleep until a decode, a batch or a write ends
                cf.wait(set(self.decoding) | set(self.solving) | self.writing, return_when=cf.FIRST_COMPLETED)

    # stage 1: decoding

    def submit_decodes(self, entries: Iterator[VideoEntry]) -> None:
        """Keep the decoders busy, within the bound on videos in memory."""
        from joblib.externals.loky import BrokenProcessPool

        while self.in_flight < self.max_videos:
            entry = next(entries, None)
            if entry is None:
                return
            state = _Video(entry, self.submitted, time.perf_counter())
            self.submitted += 1
            try:
                fut = self.decode_pool.submit(_decode, self.root / entry.id, self.cfg)
            except BrokenProcessPool:  # a worker died: its videos failed (collect_decoded), the others go on
                self.decode_pool.shutdown(wait=True, kill_workers=True)
                self.decode_pool = self._decode_executor()
                fut = self.decode_pool.submit(_decode, self.root / entry.id, self.cfg)
            self.decoding[fut] = state
            self.in_flight += 1

    def collect_decoded(self) -> list[VideoResult]:
        """Queue the pairs of each decoded video; return the results of the videos that failed to decode."""
        failed = []
        for fut in [f for f in self.decoding if f.done()]:
            state = self.decoding.pop(fut)
            try:
                out = fut.result()
            except Exception as e:  # the worker died (e.g. killed for memory): this video fails, not the run
                out = Decoded(error=f"internal error: decoding process lost ({type(e).__name__}: {e})")
            if out.error:
                failed.append(VideoResult(state.entry.id, False, seconds=time.perf_counter() - state.t0,
                                          error=out.error))
                continue
            state.video, state.gray = out.video, out.gray
            t, h, w = state.gray.shape
            state.flow = np.empty((t - 1, h, w, 2), np.float32)
            state.left = t - 1
            self.queues.setdefault((h, w), collections.deque()).extend((state, i) for i in range(t - 1))
        return failed

    # stage 2: flow on the device

    def next_batch(self) -> list | None:
        """Cut the next batch of (video, pair index) from the queues: full, or short once no decoding can add
        pairs; from the frame size whose oldest pair waits longest, which finishes videos in order."""
        ready = [(q[0][0].seq, key) for key, q in self.queues.items() if len(q) >= self.batch_pairs]
        if not ready and not self.decoding:
            ready = [(q[0][0].seq, key) for key, q in self.queues.items() if q]
        if not ready:
            return None
        q = self.queues[min(ready)[1]]
        return [q.popleft() for _ in range(min(self.batch_pairs, len(q)))]

    def submit_batches(self) -> None:
        """Keep up to :data:`DEVICE_QUEUE` batches queued on the device thread."""
        while len(self.solving) < DEVICE_QUEUE:
            items = self.next_batch()
            if items is None:
                break
            prev = np.stack([s.gray[i] for s, i in items])  # (n, H, W) uint8
            nxt = np.stack([s.gray[i + 1] for s, i in items])
            pad_to = self.batch_pairs if self.solver.fixed_shape else 0
            fut = self.device_pool.submit(_run_batch, self.solver, prev, nxt, pad_to)
            self.solving[fut] = (items, max(pad_to, len(items)))
        for key in [k for k, q in self.queues.items() if not q]:
            del self.queues[key]

    def collect_solved(self) -> list[VideoResult]:
        """Scatter each finished batch into its videos' flow; a video whose pairs are all solved goes to a writer.
        Returns the results of videos failed by a batch error."""
        failed = []
        for fut in [f for f in self.solving if f.done()]:
            items, size = self.solving.pop(fut)
            try:
                flow = fut.result()  # (n, H, W, 2)
            except Exception as e:
                failed += self.on_batch_error(items, size, e)
                continue
            for (state, i), f in zip(items, flow):
                if state.failed:
                    continue
                state.flow[i] = f
                state.left -= 1
                if state.left == 0:
                    self.writing.add(self.write_pool.submit(_write, state, self.store_dir, self.cfg))
        return failed

    def on_batch_error(self, items: list, size: int, e: BaseException) -> list[VideoResult]:
        """Out of device memory: halve the batch size and queue the same pairs again. An error that may leave the
        device unusable (:func:`_is_sticky`): stop the run after reporting what finished. Any other error: fail the
        videos with pairs in the batch (with the error as reason) and drop their other pairs."""
        if _is_out_of_memory(e) and size > 1:
            if size // 2 < self.batch_pairs:  # (another batch in flight may have halved it already)
                self.batch_pairs = size // 2
                self.log(f"device out of memory on a batch of {size} pairs; going on with batches of {self.batch_pairs}")
            retry = [it for it in items if not it[0].failed]
            if retry:
                shape = retry[0][0].gray.shape[1:]
                self.queues.setdefault(shape, collections.deque()).extendleft(reversed(retry))
            return []
        if not _is_out_of_memory(e) and _is_sticky(e, self.solver.device):
            self.stop = DeviceError(" ".join(
                f"device error on a batch of {len(items)} pairs ({type(e).__name__}: {e}); such an error can leave the "
                "GPU unusable for this process, so the run stops here: the videos finished so far are kept, run the "
                "same command again to resume".split()))
            return []
        reason = " ".join(f"device error on a batch of {len(items)} pairs: {type(e).__name__}: {e}".split())
        failed = []
        for state in {id(s): s for s, _ in items}.values():
            if not state.failed:
                state.failed = True
                failed.append(VideoResult(state.entry.id, False, seconds=time.perf_counter() - state.t0,
                                          error=reason))
                state.video = state.gray = state.flow = None  # free its memory now
        for key, q in self.queues.items():  # their other pairs need not be solved
            self.queues[key] = collections.deque(it for it in q if not it[0].failed)
        return failed

    # stage 3: writing

    def collect_writes(self) -> list[VideoResult]:
        """The results of the finished writes."""
        done = [f for f in self.writing if f.done()]
        self.writing.difference_update(done)
        return [f.result() for f in done]

    def close(self) -> None:
        """Stop the decoders and the device thread; let running writes finish."""
        for fut in self.decoding:
            fut.cancel()
        self.decode_pool.shutdown(wait=True, kill_workers=True)  # decoding in progress is of no use any more
        self.device_pool.shutdown(wait=True, cancel_futures=True)
        self.write_pool.shutdown(wait=True, cancel_futures=True)
