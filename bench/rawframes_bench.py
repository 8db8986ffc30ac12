"""Importing frame folders against extracting from the videos, and a store against the folders on disk.

    python bench/rawframes_bench.py [--videos-per-class 4] [--size 128x128] [--methods farneback tvl1] [--rounds 2]

Renders demo videos (``data/make_demo.py``), extracts them with each method (``--mapping tsn``, JPEG: what
denseflow writes), exports that store as denseflow frame folders (the "rawframes" a user already has), then
times, interleaved A B A B in this process:

* A: ``flowprep extract`` of the videos (decode, flow, quantise, encode, write), one job;
* B: ``flowprep import-frames`` of the folders (read, check the JPEG headers, write the same bytes), one job;

and prints frames/s of each and their ratio. Then the bytes on disk (allocated blocks and apparent size) and
the number of files of the folders against the store.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.rawframes import ImportConfig, export_store, import_dataset

HERE = Path(__file__).resolve().parent


def _make_demo():
    spec = importlib.util.spec_from_file_location("make_demo", HERE.parent / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_demo


def disk_usage(path: Path) -> tuple[int, int, int]:
    """(allocated bytes, apparent bytes, files) under ``path``."""
    alloc = apparent = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            st = os.stat(os.path.join(dirpath, n))
            alloc += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return alloc, apparent, files


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--videos-per-class", type=int, default=4)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", default="128x128", help="WxH of the rendered videos (default: 128x128)")
    p.add_argument("--methods", nargs="+", default=["farneback", "tvl1"])
    p.add_argument("--rounds", type=int, default=2, help="A B rounds per method (default: 2)")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawframes_bench_"))
    try:
        videos = _make_demo()(tmp / "videos", videos_per_class=a.videos_per_class, num_frames=a.frames, size=(w, h))
        print(f"{6 * a.videos_per_class} demo videos of {a.frames} frames at {w}x{h}; one job each; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for method in a.methods:
            cfg = ExtractConfig(method=method, decode=DecodeConfig(short_side=None), mapping="tsn")
            ref = tmp / f"ref-{method}"
            assert extract_dataset(videos, ref, cfg, jobs=1, progress=False).ok
            folders = tmp / f"rawframes-{method}"
            assert export_store(ref, folders, "denseflow", jobs=1, progress=False).ok
            frames = {"extract": [], "import": []}
            for r in range(a.rounds):
                for kind in ("extract", "import"):
                    out = tmp / f"{kind}-{method}-{r}"
                    t0 = time.perf_counter()
                    if kind == "extract":
                        s = extract_dataset(videos, out, cfg, jobs=1, progress=False)
                    else:
                        s = import_dataset(folders, out, ImportConfig(bound=20.0, layout="denseflow"), jobs=1,
                                           progress=False, splits_dir=folders / "annotations")
                    dt = time.perf_counter() - t0
                    assert s.ok
                    frames[kind].append((s.pairs + s.done) / dt)  # video frames (T per video, each with its flow)
                    shutil.rmtree(out) if r < a.rounds - 1 else None
            ex, im = (max(frames[k]) for k in ("extract", "import"))
            print(f"{method:10s} extract {ex:8.0f} frames/s   import {im:8.0f} frames/s   import/extract {im / ex:6.1f}x"
                  f"   (frames of the videos, each with its flow; best of {a.rounds})")
            st_alloc, st_app, st_files = disk_usage(tmp / f"import-{method}-{a.rounds - 1}")
            fo_alloc, fo_app, fo_files = disk_usage(folders)
            print(f"{'':10s} rawframes: {fo_files} files, {fo_alloc / 1e6:.2f} MB on disk ({fo_app / 1e6:.2f} MB of "
                  f"data); store: {st_files} files, {st_alloc / 1e6:.2f} MB on disk ({st_app / 1e6:.2f} MB); "
                  f"store/rawframes on disk {st_alloc / fo_alloc:.2f}, files {st_files / fo_files:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
