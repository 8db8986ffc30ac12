"""Throughput of the Predictor on the CPU: videos/s with the demo checkpoints, and where the time goes.

Runs ``Predictor(spatial=..., temporal=...)`` (models loaded once) over demo videos and, in the same
run and interleaved (A B A B ...), the one-call ``twostream.predict.predict`` (which loads both checkpoints for
every video, as one ``twostream predict VIDEO`` command per video does). Prints videos/s of each, their ratio,
and the Predictor's share of time in decoding, flow, the store round trip (quantising and JPEG), the views
(cropping, normalising) and the networks.

    bash data/run_demo.sh /tmp/demo                       # the demo checkpoints (a few minutes)
    python bench/predictor_bench.py /tmp/demo [--videos 24] [--rounds 2] [--clips 10 --crops 5]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from twostream.predict import Predictor, predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo", type=Path, help="output folder of data/run_demo.sh (videos/, spatial/, temporal/)")
    ap.add_argument("--videos", type=int, default=24, help="test videos per round (default: 24)")
    ap.add_argument("--rounds", type=int, default=2, help="A B rounds (default: 2)")
    ap.add_argument("--clips", type=int, default=10, help="clips per video (default: 10, as the demo evaluates)")
    ap.add_argument("--crops", type=int, default=5, help="crops per clip (default: 5, as the demo evaluates)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ckpts = {s: a.demo / s / "last.pt" for s in ("spatial", "temporal")}
    for p in ckpts.values():
        if not p.is_file():
            raise SystemExit(f"{p}: no such checkpoint; run 'bash data/run_demo.sh {a.demo}' first")
    videos = sorted((a.demo / "videos").rglob("*.avi"))[: a.videos]
    if not videos:
        raise SystemExit(f"{a.demo / 'videos'}: no .avi videos")
    kw = dict(num_clips=a.clips, num_crops=a.crops, device="cpu")

    times = {"Predictor (load once)": [], "predict() per video": []}
    shares = None
    for r in range(a.rounds):
        t0 = time.perf_counter()
        pred = Predictor(spatial=ckpts["spatial"], temporal=ckpts["temporal"], **kw)
        results = pred.predict_many(videos, progress=False)
        times["Predictor (load once)"].append(time.perf_counter() - t0)
        assert not any(p.error for p in results), [p.error for p in results if p.error]
        shares = dict(pred.seconds) if shares is None else {k: shares[k] + v for k, v in pred.seconds.items()}
        t0 = time.perf_counter()
        for v in videos:
            predict(v, spatial=ckpts["spatial"], temporal=ckpts["temporal"], **kw)
        times["predict() per video"].append(time.perf_counter() - t0)

    print(f"{len(videos)} demo videos x {a.rounds} rounds, {a.clips} clips x {a.crops} crops, "
          f"{torch.get_num_threads()} torch threads, CPU")
    rates = {k: len(videos) * len(v) / sum(v) for k, v in times.items()}
    for k, v in rates.items():
        print(f"  {k:24s} {v:6.2f} videos/s")
    print(f"  ratio Predictor / per-video predict(): {rates['Predictor (load once)'] / rates['predict() per video']:.2f}")
    total = sum(shares.values())
    print("  Predictor's time: " + ", ".join(f"{k} {100 * v / total:.0f} %" for k, v in shares.items()))


if __name__ == "__main__":
    main()
