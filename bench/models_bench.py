"""Train every model choice briefly on the demo data on this machine and print a comparison table.

    python bench/models_bench.py [--epochs 4] [--archs single_frame c3d ...] [--markdown]

For each model: parameters (at the demo's 6 classes), training clips/s, and after training the clip and
video accuracy on the demo's test split (RGB input; 2D streams take one frame, video models a clip of
--num-frames frames). The README's model table is this script's --markdown output.
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from twostream.evaluate import evaluate
from twostream.models import ARCH_INPUT, DESCRIPTIONS, count_parameters
from twostream.inference import make_model
from twostream.train import TrainConfig, train

DEFAULT_ARCHS = ["resnet18", "single_frame", "late_fusion", "early_fusion", "slow_fusion", "c3d", "r3d_18",
                 "r2plus1d_18"]


def load_make_demo():
    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_demo


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=DEFAULT_ARCHS, choices=sorted(ARCH_INPUT))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--num-frames", type=int, default=16, help="frames per clip for video models")
    p.add_argument("--width", type=int, default=16, help="base width of every model (64 = published)")
    p.add_argument("--videos-per-class", type=int, default=16)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = load_make_demo()(tmp / "videos", videos_per_class=a.videos_per_class)
        extract_dataset(root, tmp / "store", ExtractConfig(method="farneback", decode=DecodeConfig(size=(64, 64))),
                        jobs=2, progress=False)
        for arch in a.archs:
            frames = None if ARCH_INPUT[arch] == "frame" else a.num_frames
            cfg = TrainConfig(store=str(tmp / "store"), out_dir=str(tmp / arch), stream="spatial", arch=arch,
                              base_width=a.width, num_frames=frames, input_size=56, epochs=a.epochs, batch_size=16,
                              lr=0.02, samples_per_video=2, workers=2, device="cpu", val_clips=2, dropout=0.2)
            t0 = time.perf_counter()
            row = train(cfg, progress=False)
            m = evaluate(tmp / arch / "best.pt", tmp / "store", tmp / f"{arch}.npz", num_clips=5, num_crops=1,
                         workers=0, device="cpu", progress=False)
            params = count_parameters(make_model(arch, cfg.clip_spec(), 6, 0.0, a.width))
            rows.append((arch, params, row["clips_per_s"], m["clip_top1"], m["top1"], time.perf_counter() - t0))
            print(f"{arch}: {params / 1e6:.2f}M params, {row['clips_per_s']:.0f} clips/s, clip acc {m['clip_top1']:.3f}, "
                  f"video acc {m['top1']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print()
    if a.markdown:
        print(f"Demo data, RGB, {a.epochs} epochs, width {a.width}, {a.num_frames}-frame clips for video models, "
              f"{torch.get_num_threads()} CPU threads.\n")
        print("| model | parameters | train clips/s | clip acc | video acc | what it is |")
        print("|---|---:|---:|---:|---:|---|")
        for arch, n, rate, clip, video, _ in rows:
            print(f"| `{arch}` | {n / 1e6:.2f}M | {rate:.0f} | {clip:.2f} | {video:.2f} | {DESCRIPTIONS[arch]} |")
    else:
        print(f"{'model':14s} {'params':>8s} {'clips/s':>8s} {'clip acc':>9s} {'video acc':>9s}")
        for arch, n, rate, clip, video, _ in rows:
            print(f"{arch:14s} {n / 1e6:7.2f}M {rate:8.0f} {clip:9.3f} {video:9.3f}")


if __name__ == "__main__":
    main()
