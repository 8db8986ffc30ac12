"""Is the DataLoader the bottleneck? Clips/s it delivers from a store vs the model's training rate.

For each stream, measures in one process:
  * the DataLoader alone (0, 1, 2 workers): clips/s of augmented, batched inputs read from the store;
  * one training step of the model on a fixed batch (no loading): clips/s;
and prints their ratio (loader / model; above 1 means the loader keeps up).

    python bench/loader_bench.py --store STORE [--arch resnet18] [--input-size 224] [--batch-size 32] [--device auto]

Without --store it builds the demo dataset (data/make_demo.py) and extracts it into a temporary store first.
"""
from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from flowprep.store import Store
from twostream.data import TrainClips
from twostream.distributed import amp_policy, resolve_device
from twostream.inference import make_model
from twostream.models import channels_last_format
from twostream.train import TrainConfig, train_one_epoch


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x, _ = next(it)
        except StopIteration:
            it = iter(loader)
            x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - t0)


def model_rate(model, x, y, device, steps: int, amp: bool, channels_last: bool | None = None) -> float:
    """clips/s of the training code's own step (``train_one_epoch``) on one fixed batch: no loading.

    Memory format, autocast and loss scaling are the training code's choices for ``model`` and ``device``
    (channels-last on CUDA by default: ``channels_last_format`` for the weights, the input's own rank for it).
    """
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=channels_last_format(model))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type) if amp_policy(device, amp).scales_loss else None

    def run(n):
        return train_one_epoch(model, [(x, y)] * n, opt, device, epoch=0, amp=amp, channels_last=channels_last,
                               progress=False, scaler=scaler)

    run(1)  # first-step allocations and kernel selection are not throughput
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - t0)


def demo_store(tmp: Path) -> Path:
    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset

    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.make_demo(tmp / "demo", videos_per_class=4)
    extract_dataset(root, tmp / "store", ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                    jobs=2, progress=False)
    return tmp / "store"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--input-size", type=int, default=None, help="default: 224, or 56 on the demo store")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=10, help="batches timed per loader setting")
    p.add_argument("--steps", type=int, default=5, help="training steps timed")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    device = resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = a.store or demo_store(Path(tmp))
        size = a.input_size or (224 if a.store else 56)
        store = Store(store_dir)
        print(f"store {store_dir}, arch {a.arch}, input {size}, batch {a.batch_size}, device {device}"
              f"{' (' + torch.cuda.get_device_name() + ')' if device.type == 'cuda' else ''}")
        print(f"{'stream':9s} {'workers':>7s} {'loader clips/s':>15s} {'model clips/s':>14s} {'loader/model':>13s}")
        for stream in ("spatial", "temporal"):
            cfg = TrainConfig(store=str(store_dir), out_dir=tmp, stream=stream, arch=a.arch, input_size=size)
            spec = cfg.clip_spec()
            ds = TrainClips(store, store.video_ids(), spec, samples_per_video=64)
            x, y = next(iter(DataLoader(ds, batch_size=a.batch_size)))
            model = make_model(a.arch, spec, len(store.classes), 0.5)
            m = model_rate(model, x, y, device, a.steps, amp=True)
            for w in a.workers:
                r = loader_rate(ds, a.batch_size, w, a.batches)
                print(f"{stream:9s} {w:7d} {r:15.0f} {m:14.0f} {r / m:13.2f}")


if __name__ == "__main__":
    main()
