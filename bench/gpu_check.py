"""The first GPU run, prepared: accuracy, flow speed, memory, end-to-end extraction and a training step, one table.

Run from a checkout on a machine with a CUDA GPU (no install needed beyond torch, h5py, joblib and OpenCV):

    PYTHONPATH=. python bench/gpu_check.py              # about 4-5 minutes; --budget caps the flow sweep
    PYTHONPATH=. python bench/gpu_check.py --dry        # the same code on the CPU at toy sizes, in seconds

What it measures, in this order (each row of the final table names its section):

1. ``accuracy``: ``tvl1-torch`` on the device against ground truth on a textured frame moved by a known
   sub-pixel shift, and against the same code on the CPU (they should agree to float noise); the Middlebury
   pair (``skimage.data.stereo_motorcycle``, ground truth (-disparity, 0)) when scikit-image is installed
   (3.25 px EPE on the CPU, README), else a note.
2. ``flow``: pairs/s at 340x256 for float32 / bfloat16, eager and ``torch.compile``, batches of 64 and 256,
   with the peak device memory of each (``torch.cuda.max_memory_allocated`` and ``..._reserved``); compiled
   settings run last and are skipped once ``--budget`` seconds have gone (compiling costs 1-2 min each).
3. ``extract``: ``flowprep extract --method tvl1-torch --device cuda`` end to end (decode processes, device
   batches, writer threads) on clips written here, against the flow alone at the same batch and precision;
   both warmed up at the batch shape first, so neither pays CUDA start-up or compilation.
4. ``train``: one training step of the temporal ResNet-18 (2L = 20 channels, 224x224, batch 64) through
   ``twostream.train.train_one_epoch``, with the autocast the training code picks for this GPU (bfloat16 on
   compute capability >= 8.0, float16 with loss scaling below) and without autocast, with its peak memory.

Frames are synthetic (a smooth random texture moved by a smooth random motion), since the GPU host may have
no sample videos; throughput on real video differs with how soon pairs converge. Missing optional packages
(scikit-image, tqdm) are noted in the table, never fatal.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import math
import os
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROWS: list[tuple[str, str, str, str]] = []  # (section, setting, value, note)


def row(section: str, setting: str, value: str, note: str = "") -> None:
    ROWS.append((section, setting, value, note))
    print(f"  {section:9s} {setting:44s} {value:>14s}  {note}", flush=True)


def _ensure_tqdm() -> None:
    """flowprep and twostream draw progress bars with tqdm; a bare GPU host may lack it: pass-through bars."""
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        class _Bar:
            def __init__(self, iterable=None, *a, **k):
                self.iterable = iterable

            def __iter__(self):
                return iter(self.iterable)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def __getattr__(self, name):  # update, set_postfix_str, close, ...
                return lambda *a, **k: None

        mod = types.ModuleType("tqdm")
        mod.tqdm = _Bar
        mod.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)  # some importers look for a spec
        auto = types.ModuleType("tqdm.auto")
        auto.tqdm = _Bar
        auto.__spec__ = importlib.machinery.ModuleSpec("tqdm.auto", None)
        mod.auto = auto
        sys.modules["tqdm"], sys.modules["tqdm.auto"] = mod, auto
        row("setup", "tqdm", "absent", "progress bars replaced by a pass-through")


@dataclass
class Sizes:
    """What the run measures at: real sizes on a GPU, toy sizes for ``--dry``."""

    width: int = 340
    height: int = 256
    batches: tuple[int, ...] = (64, 256)
    precisions: tuple[str, ...] = ("float32", "bfloat16")
    compile: bool = True
    flow_repeats: int = 2
    clips: int = 32
    clip_frames: int = 33
    train_size: int = 224
    train_batch: int = 64
    train_width: int = 64
    train_steps: int = 10
    tvl1: tuple = ()  # TV-L1 parameters of the flow and extract sections beyond OpenCV's defaults

    @classmethod
    def dry(cls) -> "Sizes":
        # Few iterations: the dry run checks that every code path runs, its rates mean nothing.
        return cls(width=48, height=40, batches=(2,), precisions=("float32",), compile=False, flow_repeats=1,
                   clips=2, clip_frames=3, train_size=32, train_batch=2, train_width=8, train_steps=1,
                   tvl1=(("warps", 1), ("outer_iterations", 1), ("inner_iterations", 5), ("nscales", 2)))


# --- frames ----------------------------------------------------------------------------------------

def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w) uint8 smooth random texture with gradients at several scales."""
    rng = np.random.default_rng(seed)
    img = sum(cv2.resize(rng.random((max(2, h // s), max(2, w // s))).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_CUBIC) / s for s in (1, 4, 16))
    return cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` moved by (dx, dy) px: out(x + dx, y + dy) = img(x, y), bicubic, reflected borders."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, m, img.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def frame_sequence(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, h, w) uint8 frames of a texture drifting along a smooth path of 0-3 px per frame."""
    base = texture(h + 64, w + 64, seed)
    t = np.arange(n)
    xs = 20 * np.sin(t / 9.0) + 1.5 * t % 30
    ys = 10 * np.cos(t / 13.0)
    return np.stack([shifted(base, x, y)[32 : 32 + h, 32 : 32 + w] for x, y in zip(xs, ys)])


def epe(flow: np.ndarray, gt: np.ndarray, margin: int) -> float:
    """Mean end-point error of (H, W, 2) flow against gt, leaving out ``margin`` px at the borders."""
    from flowprep.groundtruth import endpoint_error

    valid = np.zeros(flow.shape[:2], bool)
    valid[margin:-margin, margin:-margin] = True
    return endpoint_error(flow, np.ascontiguousarray(gt), valid)


# --- sections --------------------------------------------------------------------------------------

def check_accuracy(dev: torch.device, sz: Sizes) -> None:
    from flowprep.tvl1_torch import tvl1

    dx, dy = 2.5, -1.25
    base = texture(sz.height + 32, sz.width + 32, seed=1)
    a = base[16:-16, 16:-16]
    b = shifted(base, dx, dy)[16:-16, 16:-16]
    gt = np.broadcast_to(np.float32([dx, dy]), a.shape + (2,))

    def run(device):
        t = [torch.from_numpy(x)[None].to(device) for x in (a, b)]
        return tvl1(*t)[0].permute(1, 2, 0).cpu().numpy()

    ours = run(dev)
    cpu = run(torch.device("cpu")) if dev.type != "cpu" else ours
    row("accuracy", f"known shift ({dx}, {dy}) px, EPE", f"{epe(ours, gt, 8):.3f} px", f"{dev.type}")
    row("accuracy", "device vs CPU, mean |difference|", f"{epe(ours, cpu, 1):.4f} px", "float noise expected")
    from flowprep.groundtruth import endpoint_error, middlebury_motorcycle

    try:
        g0, g1, gt, valid = middlebury_motorcycle()
    except RuntimeError:  # it ships with scikit-image
        row("accuracy", "Middlebury motorcycle EPE", "skipped", "scikit-image not installed")
        return
    flow = tvl1(torch.from_numpy(g0)[None].to(dev), torch.from_numpy(g1)[None].to(dev))[0]
    err = endpoint_error(flow.permute(1, 2, 0).cpu().numpy(), gt, valid)
    row("accuracy", "Middlebury motorcycle 1/4 EPE", f"{err:.3f} px", "CPU reference 3.25 px")


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _memory(dev: torch.device) -> str:
    if dev.type != "cuda":
        return "-"
    return (f"{torch.cuda.max_memory_allocated(dev) / 2**30:.2f} / "
            f"{torch.cuda.max_memory_reserved(dev) / 2**30:.2f} GiB")


def warm_up(dev: torch.device, batch: int, h: int, w: int, precision: str, compile: bool, tvl1_params=()) -> None:
    from flowprep import tvl1_torch

    tvl1_torch.warm_up(batch, h, w, device=dev, precision=precision, compile=compile,
                       params=tvl1_torch.TVL1Params(**dict(tvl1_params)))


def flow_rate(dev, frames: np.ndarray, batch: int, precision: str, compile: bool, repeats: int,
              tvl1_params=()) -> float:
    """pairs/s of tvl1 over consecutive pairs of ``frames`` in batches of ``batch`` (warmed up first)."""
    from flowprep.tvl1_torch import TVL1Params, tvl1

    n = len(frames) - 1
    a = torch.from_numpy(frames[:-1]).to(dev)
    b = torch.from_numpy(frames[1:]).to(dev)
    params = TVL1Params(**dict(tvl1_params))
    warm_up(dev, batch, *frames.shape[1:], precision, compile, tvl1_params)
    _sync(dev)
    t0 = time.perf_counter()
    done = 0
    for _ in range(repeats):
        for s in range(0, n - batch + 1, batch):  # whole batches: one shape for compiled code
            tvl1(a[s : s + batch], b[s : s + batch], params=params, precision=precision, compile=compile)
            done += batch
    _sync(dev)
    return done / (time.perf_counter() - t0)


def check_flow(dev: torch.device, sz: Sizes, budget_s: float, t_start: float) -> None:
    frames = frame_sequence(max(sz.batches) + 1, sz.height, sz.width)
    settings = [(c, p, b) for c in ([False, True] if sz.compile else [False]) for b in sz.batches for p in sz.precisions]
    for compile_, precision, batch in settings:
        name = f"{sz.width}x{sz.height} {precision} batch {batch}{' compiled' if compile_ else ''}"
        if compile_ and time.perf_counter() - t_start > budget_s:
            row("flow", name, "skipped", f"past --budget {budget_s:.0f} s")
            continue
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            rate = flow_rate(dev, frames, batch, precision, compile_, sz.flow_repeats, sz.tvl1)
        except torch.cuda.OutOfMemoryError:
            row("flow", name, "OOM", _memory(dev))
            continue
        row("flow", name, f"{rate:.1f} pairs/s", f"peak alloc / reserved {_memory(dev)}")
    if not sz.compile:
        row("flow", "torch.compile", "skipped", "--dry" if dev.type == "cpu" else "")


def write_clips(root: Path, sz: Sizes) -> int:
    """``sz.clips`` MJPG videos of ``sz.clip_frames`` frames in 2 classes; returns the number of pairs."""
    for i in range(sz.clips):
        gray = frame_sequence(sz.clip_frames, sz.height, sz.width, seed=i)
        path = root / f"class{i % 2}" / f"clip{i:04d}.avi"
        path.parent.mkdir(parents=True, exist_ok=True)
        wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (sz.width, sz.height))
        if not wr.isOpened():
            raise RuntimeError(f"OpenCV cannot write MJPG video {path}")
        for g in gray:
            wr.write(cv2.cvtColor(g, cv2.COLOR_GRAY2BGR))
        wr.release()
    return sz.clips * (sz.clip_frames - 1)


def check_extract(dev: torch.device, sz: Sizes, jobs: int) -> None:
    from flowprep.batched import PipelineConfig
    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset
    from flowprep.flow import TVL1_DEFAULTS

    batch = sz.batches[0]
    precision = sz.precisions[0]
    params = dict(TVL1_DEFAULTS, device=str(dev), precision=precision, **dict(sz.tvl1))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        n_pairs = write_clips(root, sz)
        warm_up(dev, batch, sz.height, sz.width, precision, False, sz.tvl1)  # both timings below start warm
        cfg = ExtractConfig(method="tvl1-torch", params=params, decode=DecodeConfig(size=(sz.width, sz.height)))
        s = extract_dataset(root, Path(tmp) / "store", cfg, jobs=jobs, progress=False,
                            pipeline=PipelineConfig(batch_pairs=batch))
        if not (s.ok and s.pairs == n_pairs):
            row("extract", "end to end", "FAILED", f"{s}")
            return
        alone = flow_rate(dev, frame_sequence(max(batch, min(n_pairs, 4 * batch)) + 1, sz.height, sz.width),
                          batch, precision, False, 1, sz.tvl1)
    e2e = s.pairs / s.seconds
    row("extract", f"end to end, {sz.clips} videos, {jobs} decoders, batch {batch}", f"{e2e:.1f} pairs/s")
    row("extract", "flow alone, same batch and precision", f"{alone:.1f} pairs/s", f"pipeline / alone x{e2e / alone:.2f}")


def check_train(dev: torch.device, sz: Sizes) -> None:
    from twostream.models import build_model, channels_last_format
    from twostream.train import amp_policy, train_one_epoch

    policy = amp_policy(dev, True)
    row("train", "autocast chosen for this device", policy.describe())
    channels = 20  # 2L, L = 10 flow fields
    g = torch.Generator().manual_seed(0)
    x = torch.randn(sz.train_batch, channels, sz.train_size, sz.train_size, generator=g)
    y = torch.randint(0, 101, (sz.train_batch,), generator=g)
    for amp in (True, False):
        model = build_model("resnet18", num_classes=101, in_channels=channels, base_width=sz.train_width).to(dev)
        channels_last = dev.type == "cuda"
        if channels_last:
            model = model.to(memory_format=channels_last_format(model))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        batches = [(x, y)] * (sz.train_steps + 1)
        train_one_epoch(model, batches[:1], opt, dev, epoch=0, amp=amp, channels_last=channels_last, progress=False)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        _sync(dev)
        t0 = time.perf_counter()
        stats = train_one_epoch(model, batches[1:], opt, dev, epoch=0, amp=amp, channels_last=channels_last,
                                progress=False)
        _sync(dev)
        ms = (time.perf_counter() - t0) / sz.train_steps * 1e3
        if not math.isfinite(stats["loss"]):
            row("train", "loss", "NOT FINITE", f"amp={amp}")
        tag = amp_policy(dev, amp).describe()
        row("train", f"resnet18 flow 20ch {sz.train_size}px batch {sz.train_batch}, {tag}",
            f"{ms:.1f} ms/step", f"{sz.train_batch / ms * 1e3:.0f} stacks/s, peak {_memory(dev)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry", action="store_true", help="run every section on the CPU at toy sizes (the tests do)")
    ap.add_argument("--budget", type=float, default=150, help="seconds after which compiled flow settings are skipped")
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1), help="decoding processes for extract")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    if args.dry:
        dev, sz = torch.device("cpu"), Sizes.dry()
    elif torch.cuda.is_available():
        dev, sz = torch.device("cuda"), Sizes()
    else:
        print("no CUDA GPU visible to torch; use --dry for the CPU run of the same code", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    cc = ".".join(map(str, torch.cuda.get_device_capability(dev))) if dev.type == "cuda" else "-"
    print(f"gpu_check: {name}, compute capability {cc}, torch {torch.__version__}, OpenCV {cv2.__version__}")
    _ensure_tqdm()
    failed = 0
    for section, fn in (("accuracy", lambda: check_accuracy(dev, sz)),
                        ("flow", lambda: check_flow(dev, sz, args.budget, t_start)),
                        ("extract", lambda: check_extract(dev, sz, 1 if args.dry else args.jobs)),
                        ("train", lambda: check_train(dev, sz))):
        t0 = time.perf_counter()
        try:
            fn()
            print(f"  ({section}: {time.perf_counter() - t0:.1f} s)", flush=True)
        except Exception as e:  # one section failing must not hide the others' figures
            failed += 1
            row(section, "ERROR", type(e).__name__, " ".join(str(e).split())[:200])
    print(f"\n| section | setting | value | note |\n|---|---|---:|---|")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    print(f"\n{len(ROWS)} rows, {failed} sections failed, {time.perf_counter() - t_start:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
