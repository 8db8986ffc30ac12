"""Does training keep up with the model? ``twostream train`` clips/s against a bare loop, both streams, in one run.

For each stream (spatial: 1 RGB frame; temporal: a 10-pair flow stack), on the same model (ResNet-18 of
--width channels at --input-size, batch --batch-size, SGD with momentum), in alternating repetitions:

  * train:       ``twostream.train.train`` (what ``twostream train`` runs), one epoch; its clips/s as logged;
  * bare:        the same model's forward, backward and SGD step on random tensors of the batch's shape,
                 in this process with torch's threads (as train's main process has them);
  * bare, loader busy: the bare loop while a DataLoader with --workers workers runs flat out beside it (a
                 thread drains it): what the model gets when the loader's processes take their share of the cores;
  * bare, 1 thread: the bare loop on one torch thread (the model's cost per clip on one core);
  * loader:      the DataLoader alone, --workers workers and 0 workers (the loader's cost per clip on one core).

Wall-clock rates move with whatever else the machine runs; CPU time per clip does not, so the decomposition is
made from it: the model's CPU per clip on one thread plus the loader's CPU per clip in one process is what one
clip costs the cores at least, and

    contention bound = cores / (model + loader CPU per clip)   (clips/s when both share the idle cores perfectly)
    bound / bare     = the share of the gap that is core contention (the bare loop has the cores to itself)
    train / bound    = (model + loader CPU per clip) / (train's CPU per clip, main process and workers):
                       what the training code itself loses.

    python bench/train_bench.py [--quick] [--store STORE] [--reps 3]

torch runs with the OpenMP settings the ``twostream`` command gives it (``OMP_WAIT_POLICY=PASSIVE`` unless the
environment sets it; see ``twostream.cli.OPENMP_DEFAULTS``); ``OMP_WAIT_POLICY=ACTIVE`` measures torch's default.

Without --store it renders the demo dataset (data/make_demo.py, 170x128) and extracts it with DIS. On a machine
shared with other work the absolute rates move; the ratios within one repetition are what to read.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

from twostream.cli import openmp_defaults

openmp_defaults()  # as the twostream command starts torch (OMP_WAIT_POLICY=ACTIVE in the environment: the old way)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, RandomSampler  # noqa: E402

from flowprep.store import Store  # noqa: E402
from twostream.data import TrainClips  # noqa: E402
import twostream.train as train_module  # noqa: E402
from twostream.train import TrainConfig, make_model, train  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children (DataLoader workers, once joined)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


EPOCH_CPU: list[tuple[float, int]] = []  # (CPU seconds, clips) of each train_one_epoch call


def _timed_epoch(fn):
    """Wrap train_one_epoch to record the CPU time of the epoch, workers included (joined when the loader ends)."""
    def wrapper(model, loader, *args, **kw):
        c0 = cpu_seconds()
        out = fn(model, loader, *args, **kw)
        EPOCH_CPU.append((cpu_seconds() - c0, len(loader.sampler)))
        return out
    return wrapper


def demo_store(tmp: Path, videos_per_class: int) -> Path:
    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset

    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.make_demo(tmp / "demo", videos_per_class=videos_per_class, size=(170, 128))
    summary = extract_dataset(root, tmp / "store", ExtractConfig(method="dis", decode=DecodeConfig(short_side=128)),
                              jobs=2, progress=False)
    assert summary.ok, summary.failed
    return tmp / "store"


def bare_rate(cfg: TrainConfig, num_classes: int, steps: int, threads: int, busy_loader=None) -> float:
    """Clips/s of forward + backward + SGD step on random inputs; with ``busy_loader`` drained beside it."""
    spec = cfg.clip_spec()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = make_model(cfg.arch, spec, num_classes, cfg.dropout, cfg.base_width).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    x = torch.randn(cfg.batch_size, spec.channels, cfg.input_size, cfg.input_size)
    y = torch.randint(num_classes, (cfg.batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    stop, drained = threading.Event(), []
    if busy_loader is not None:
        it = iter(busy_loader)  # workers forked here, in the main thread (forking from a helper thread can deadlock)

        def drain():
            for xb, _ in it:
                drained.append(len(xb))
                if stop.is_set():
                    break
        th = threading.Thread(target=drain, daemon=True)
        th.start()
        while not drained:  # workers started and producing
            time.sleep(0.01)
    try:
        step()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        clips = steps * cfg.batch_size
        return clips / (time.perf_counter() - t0), (time.process_time() - c0) / clips
    finally:
        stop.set()
        if busy_loader is not None:
            th.join()
            del it  # workers shut down
        torch.set_num_threads(old)


def loader_rate(dataset, batch_size: int, workers: int, batches: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / n  # the CPU part means something with 0 workers


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", help="an existing store (default: build the demo store)")
    p.add_argument("--quick", action="store_true", help="shorter epochs and 2 repetitions")
    p.add_argument("--reps", type=int, default=None, help="alternating repetitions (default 3, 2 with --quick)")
    p.add_argument("--batches", type=int, default=None, help="batches per training epoch (default 48, 24 with --quick: a "
                   "shorter epoch is mostly the workers' start-up and the model's first steps)")
    p.add_argument("--width", type=int, default=32, help="ResNet-18 width")
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    reps = a.reps or (2 if a.quick else 3)
    batches = a.batches or (24 if a.quick else 48)
    threads = torch.get_num_threads()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads {threads}, OpenMP wait "
          f"policy {os.environ.get('OMP_WAIT_POLICY', 'the default (active)')}; "
          f"resnet18 width {a.width} at {a.input_size}, batch {a.batch_size}, {a.workers} workers, {batches} batches")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_dir = Path(a.store) if a.store else demo_store(tmp, 4 if a.quick else 8)
        store = Store(store_dir)
        train_ids = store.video_ids(1, "train")
        spv = math.ceil(batches * a.batch_size / len(train_ids))
        train_module.train_one_epoch = _timed_epoch(train_module.train_one_epoch)
        keys = ("train", "bare", "busy", "one", "loader", "loader0")
        rate = {s: {k: [] for k in keys} for s in ("spatial", "temporal")}  # clips/s (wall clock)
        cpu = {s: {k: [] for k in keys} for s in ("spatial", "temporal")}  # CPU seconds per clip
        for rep in range(reps):
            for stream in ("spatial", "temporal") if rep % 2 == 0 else ("temporal", "spatial"):
                cfg = TrainConfig(store=str(store_dir), out_dir=str(tmp / f"run-{stream}-{rep}"), stream=stream,
                                  base_width=a.width, input_size=a.input_size, batch_size=a.batch_size, epochs=1,
                                  samples_per_video=spv, workers=a.workers, val_clips=1, device="cpu",
                                  dropout=0.5 if stream == "spatial" else 0.8)
                r, c = rate[stream], cpu[stream]
                ds = TrainClips(store, train_ids, cfg.clip_spec(), samples_per_video=spv)
                n = len(store.classes)
                steps = len(ds) // a.batch_size
                for what in ("train", "bare", "busy", "one") if rep % 2 == 0 else ("one", "busy", "bare", "train"):
                    if what == "train":
                        r["train"].append(train(cfg, progress=False)["clips_per_s"])
                        seconds, clips = EPOCH_CPU.pop()
                        c["train"].append(seconds / clips)
                    else:
                        endless = RandomSampler(ds, replacement=True, num_samples=10 ** 7)  # never runs out
                        busy = (DataLoader(ds, batch_size=a.batch_size, sampler=endless, num_workers=a.workers)
                                if what == "busy" else None)
                        wall, per_clip = bare_rate(cfg, n, steps, 1 if what == "one" else threads, busy_loader=busy)
                        r[what].append(wall)
                        c[what].append(per_clip)
                for key, workers, count in (("loader", a.workers, 8), ("loader0", 0, 4)):
                    wall, per_clip = loader_rate(ds, a.batch_size, workers, max(1, min(steps - 1, count)))
                    r[key].append(wall)
                    c[key].append(per_clip)
                print(f"rep {rep} {stream:8s} clips/s: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in r.items()),
                      flush=True)
        report(rate, cpu, reps, a.workers)


def report(rate: dict, cpu: dict, reps: int, workers: int) -> None:
    cores = os.cpu_count()
    print(f"\nmedian of {reps} (min-max); load average {os.getloadavg()[0]:.2f} on {cores} cores")
    for stream in rate:
        r, c = rate[stream], cpu[stream]
        med = {k: statistics.median(v) for k, v in r.items()}
        span = {k: f"{min(v):.0f}-{max(v):.0f}" for k, v in r.items()}
        ms = {k: 1e3 * statistics.median(v) for k, v in c.items()}
        train_bare = [t / b for t, b in zip(r["train"], r["bare"])]
        print(f"{stream}, clips/s (wall clock): train {med['train']:.0f} ({span['train']}), bare {med['bare']:.0f} "
              f"({span['bare']}), bare with the loader busy beside it {med['busy']:.0f} ({span['busy']}), bare on 1 "
              f"thread {med['one']:.0f} ({span['one']}); loader alone {med['loader']:.0f} ({span['loader']}) with "
              f"{workers} workers, {med['loader0']:.0f} ({span['loader0']}) in one process")
        print(f"  train / bare {statistics.median(train_bare):.2f} (each repetition: "
              f"{', '.join(f'{x:.2f}' for x in train_bare)}); bare with the loader busy / bare "
              f"{med['busy'] / med['bare']:.2f}; train / (bare with the loader busy) {med['train'] / med['busy']:.2f}")
        # CPU time per clip does not depend on what else the machine runs: the decomposition to read.
        need = ms["one"] + ms["loader0"]
        bound = cores * 1e3 / need
        print(f"  CPU ms per clip: train {ms['train']:.1f} (main process and workers), model {ms['one']:.1f} on 1 "
              f"thread ({ms['bare']:.1f} on {torch.get_num_threads()}), loader {ms['loader0']:.1f}; model + loader "
              f"{need:.1f} -> contention bound {bound:.0f} clips/s on {cores} idle cores = "
              f"{bound / (cores * 1e3 / ms['bare']):.2f} of the bare loop's own bound; train spends "
              f"{ms['train'] / need:.2f}x the CPU of model + loader (train / bound {need / ms['train']:.2f}); "
              f"{ms['train'] / (ms['bare'] + ms['loader0']):.2f}x that of the model on {torch.get_num_threads()} "
              f"threads + loader")


if __name__ == "__main__":
    main()
