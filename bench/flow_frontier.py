"""Accuracy against speed for every flow method and its useful settings: the choice a user makes.

For each setting: mean end-point error on flowprep.groundtruth's sequences (exact ground truth; photographs
moved by known motions) and on the Middlebury motorcycle pair, against pairs/s per core at 340x256 on bikes.mp4
videos (one single-threaded process per core, CPU time, settings interleaved: see bench/tvl1_bench.py, whose
functions this uses). Prints a markdown table and writes a PNG plot.

    python bench/flow_frontier.py                                    # a few minutes on 2 quiet cores
    python bench/flow_frontier.py --pairs 8 --bench-frames 4 --bench-size 128 96      # a quick look
    python bench/flow_frontier.py --out frontier.png
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tvl1_bench import CPU_SETTINGS, accuracy, bench_settings, bikes_pairs  # noqa: E402

# Names without spaces, for --only; the tvl1-torch ones are bench/tvl1_bench.py's.
SETTINGS = {
    **CPU_SETTINGS,
    "farneback": ("farneback", {}),
    "dis-medium": ("dis", {"preset": "medium"}),
    "dis-fast": ("dis", {"preset": "fast"}),
    "dis-ultrafast": ("dis", {"preset": "ultrafast"}),
}
WHAT = {
    "opencv": "OpenCV TV-L1, OpenCV's defaults (`tvl1`)",
    "tvl1-torch": "ours, OpenCV's parameters",
    "warm": "ours, warm start, all levels",
    "warm-l2": "ours, warm start, 2 levels",
    "warm-l2-w2": "ours, warm start, 2 levels, 2 warps",
    "warm-l1-w2": "ours, warm start, 1 level, 2 warps",
    "farneback": "OpenCV Farneback, OpenCV's defaults",
    "dis-medium": "OpenCV DIS, preset medium",
    "dis-fast": "OpenCV DIS, preset fast",
    "dis-ultrafast": "OpenCV DIS, preset ultrafast",
}


def params_text(method: str, params: dict) -> str:
    def text(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    return f"`{method}`" + (" " + " ".join(f"`{k}={text(v)}`" for k, v in params.items()) if params else "")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, label in ((axes[0], "epe_seq", "EPE, ground-truth sequences (px)"),
                           (axes[1], "epe_mid", "EPE, Middlebury motorcycle (px)")):
        for r in rows:
            colour = "C0" if r["method"] == "tvl1-torch" else "C3" if r["method"] == "tvl1" else "C2"
            ax.scatter(r["per_core"], r[key], color=colour)
            if key == "epe_mid" and r["params"].get("warm_start"):
                continue  # one pair, solved cold: tvl1-torch's point, at other speeds
            ax.annotate(r["name"], (r["per_core"], r[key]), textcoords="offset points", xytext=(4, 3), fontsize=8)
        if key == "epe_mid":
            ax.annotate("warm settings: one pair, solved cold", (0.02, 0.55), xycoords="axes fraction", fontsize=8,
                        color="C0")
        ax.set_xscale("log")
        ax.set_xlabel("pairs/s per core at 340x256 (log)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=16, help="bikes.mp4 pairs per setting for the speed")
    ap.add_argument("--video-pairs", type=int, default=16, help="consecutive pairs per video")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all settings")
    ap.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes (one thread each)")
    ap.add_argument("--bench-size", type=int, nargs=2, default=(256, 192), metavar=("W", "H"))
    ap.add_argument("--bench-frames", type=int, default=8, help="frames per ground-truth sequence (2..8)")
    ap.add_argument("--only", nargs="+", choices=list(SETTINGS), help="a subset of the settings")
    ap.add_argument("--out", type=Path, default=Path("flow_frontier.png"), help="the plot (PNG)")
    args = ap.parse_args(argv)
    from flowprep.groundtruth import benchmark_sequences, middlebury_motorcycle

    names = args.only or list(SETTINGS)
    settings = {n: SETTINGS[n] for n in ["opencv"] + [n for n in names if n != "opencv"]}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    prev, nxt = bikes_pairs(args.pairs)
    res = bench_settings(settings, prev, nxt, jobs=args.jobs, video_pairs=args.video_pairs, rounds=args.rounds,
                         log=lambda s: print(s, file=sys.stderr))
    w, h = args.bench_size
    sequences = benchmark_sequences((w, h), args.bench_frames)
    motorcycle = middlebury_motorcycle()
    rows = []
    for name, (method, params) in settings.items():
        epe_seq, epe_mid = accuracy(method, params, sequences, motorcycle)
        per_core = float(np.median(res[name]["per_core"]))
        ratio = float(np.median(np.array(res[name]["per_core"]) / np.array(res["opencv"]["per_core"])))
        rows.append(dict(name=name, method=method, params=params, per_core=per_core, ratio=ratio,
                         epe_seq=epe_seq, epe_mid=epe_mid))
        print(f"{name}: {per_core:.2f} pairs/s per core, EPE {epe_seq:.3f} / {epe_mid:.3f}", file=sys.stderr)
    load_end = " ".join(f"{x:.1f}" for x in os.getloadavg())
    processes = min(args.jobs, -(-args.pairs // args.video_pairs))  # one video is one task
    caption = (f"{os.cpu_count()} cores, load average {load} at the start, {load_end} at the end; speed: "
               f"{args.pairs} bikes.mp4 pairs at 340x256 in videos of {args.video_pairs}, {processes} processes x "
               f"1 thread, CPU time; EPE: {len(sequences)} sequences of {args.bench_frames} frames at {w}x{h}, "
               f"Middlebury motorcycle at 185x125")
    print(f"| setting | parameters | pairs/s per core | vs OpenCV TV-L1 | EPE sequences (px) | EPE Middlebury (px) |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {WHAT.get(r['name'], r['name'])} | {params_text(r['method'], r['params'])} | {r['per_core']:.2f} | "
              f"x{r['ratio']:.2f} | {r['epe_seq']:.3f} | {r['epe_mid']:.2f} |")
    print(f"\n{caption}")
    plot(rows, args.out, "flowprep: EPE against speed (" + caption.split(";")[0] + ")")
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
