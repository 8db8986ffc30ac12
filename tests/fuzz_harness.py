"""Fuzzing of flowprep's inputs: random mutations of small videos and of store files, run in this process.

``tests/test_fuzz.py`` runs it in the suite (a few hundred mutations, fixed seed, in a subprocess with a memory
limit); run it by hand for longer runs. Prints one JSON line per finding (``--verbose``: per store mutation) and
a summary line; exits 1 if any mutation ended in an exception other than the named errors flowprep raises
(``StoreError``, and exit statuses 0-2 of the ``flowprep`` command), or a good video was lost, and ends the
process with a traceback of where it was (exit status 1) when one mutation takes longer than
``--mutation-limit`` seconds. Run it with a memory limit (``ulimit -v``).

    python tests/fuzz_harness.py WORKDIR --videos 100 --stores 150 --seed 0

What it found before it joined the suite (seed 1, HDF5 2.0.0): a video file whose heap object headers were
zeroed hung ``verify`` and ``info`` for good (the HDF5 library's walk of a heap collection never ended), and
an item entry declaring a huge length made the library allocate it (1.5 GB, once 4.3 GB); see
``flowprep/h5guard.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import io
import json
import os
import random
import resource
import shutil
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from conftest import textured_frames, write_video  # noqa: E402
from flowprep.cli import main as flowprep_main  # noqa: E402
from flowprep.decode import DecodeConfig  # noqa: E402
from flowprep.extract import ExtractConfig, extract_dataset  # noqa: E402
from flowprep.store import Store, StoreError, content_digest  # noqa: E402

CFG = ExtractConfig(method="dis", decode=DecodeConfig(short_side=None))


def mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random mutation of a file's bytes and its name."""
    b = bytearray(data)
    kind = rng.choice(["flip", "truncate", "zero", "insert", "duplicate", "header", "delete"])
    n = len(b)
    if kind == "flip":
        for _ in range(rng.randint(1, 32)):
            b[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        b = b[: rng.randrange(n)]
    elif kind == "zero":
        i = rng.randrange(n)
        b[i:i + rng.randint(1, 4096)] = bytes(len(b[i:i + 4096]))[: len(b[i:i + rng.randint(1, 4096)])]
    elif kind == "insert":
        i = rng.randrange(n)
        b[i:i] = os.urandom(rng.randint(1, 512))
    elif kind == "duplicate":
        i = rng.randrange(n)
        b[i:i] = b[i:i + rng.randint(1, 4096)]
    elif kind == "header":
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(min(n, 512))] = rng.randrange(256)
    else:  # delete a range
        i = rng.randrange(n)
        del b[i:i + rng.randint(1, 4096)]
    return bytes(b), kind


def _attr_mutation(f: h5py.File, rng: random.Random) -> str:
    name = rng.choice(["num_frames", "height", "width", "bound", "mapping", "rgb_format", "flow_format", "id",
                       "settings", "sha256", "method"])
    value = rng.choice([0, -1, 1, 2, 7, 10 ** 9, 2 ** 40, 1.5, float("nan"), float("inf"), "", "x", "jpeg", "raw",
                        "float16", "tsn", b"\xff", np.arange(3), True])
    if rng.random() < 0.15 and name in f.attrs:
        del f.attrs[name]
        return f"del attr {name}"
    f.attrs[name] = value
    return f"attr {name}={value!r}"


def _dataset_mutation(f: h5py.File, rng: random.Random) -> str:
    name = rng.choice(["rgb", "flow_x", "flow_y", "frame_index"])
    kind = rng.choice(["delete", "float", "long vlen", "short", "scalar", "jpeg bomb", "png", "gzip"])
    if name not in f:
        return "nothing"
    if kind == "jpeg bomb" and f[name].dtype == object:
        d = f[name]
        i = rng.randrange(len(d))
        b = bytearray(d[i].tobytes())
        j = b.find(b"\xff\xc0")
        if j >= 0:
            b[j + 5:j + 9] = rng.randrange(1, 65536).to_bytes(2, "big") + rng.randrange(1, 65536).to_bytes(2, "big")
            d[i] = np.frombuffer(bytes(b), np.uint8)
        return f"{name}[{i}] jpeg header size"
    if kind == "png" and f[name].dtype == object:
        import cv2

        d = f[name]
        side = rng.choice([1, 8, 30000])
        d[0] = cv2.imencode(".png", np.zeros((side, min(side, 64)), np.uint8))[1].reshape(-1)
        return f"{name}[0] a png of {side} rows"
    del f[name]
    if kind == "float":
        f.create_dataset(name, data=np.zeros(rng.choice([1, 8, 100]), np.float32))
    elif kind == "long vlen":
        f.create_dataset(name, (rng.choice([10 ** 6, 10 ** 8]),), dtype=h5py.vlen_dtype(np.uint8))
    elif kind == "short":
        f.create_dataset(name, (1,), dtype=h5py.vlen_dtype(np.uint8))
    elif kind == "scalar":
        f.create_dataset(name, data=np.int64(3))
    elif kind == "gzip":
        f.create_dataset(name, data=np.zeros((8, 40, 48, 3), np.uint8), compression="gzip")
    return f"dataset {name}: {kind}"


def mutate_store(store: Path, rng: random.Random) -> str:
    """One random mutation of one file of ``store``."""
    files = sorted((store / "videos").rglob("*.h5"))
    target = rng.random()
    if target < 0.2:
        name = rng.choice(["store.json", "index.json", "manifest.json"])
        p = store / name
        if rng.random() < 0.5:
            data, kind = mutate_bytes(p.read_bytes(), rng)
            p.write_bytes(data)
            return f"{name}: bytes {kind}"
        d = json.loads(p.read_text())
        key = rng.choice(list(d)) if isinstance(d, dict) and d else None
        if key is not None:
            d[key] = rng.choice([None, 0, -5, 1e9, "x", [], {}, {"num_frames": 10 ** 9}, 5.0])
        p.write_text(json.dumps(d))
        return f"{name}: {key}={d.get(key)!r}"
    path = rng.choice(files)
    if target < 0.55:
        data, kind = mutate_bytes(path.read_bytes(), rng)
        path.write_bytes(data)
        return f"{path.name}: bytes {kind}"
    with h5py.File(path, "r+") as f:
        what = _attr_mutation(f, rng) if target < 0.75 else _dataset_mutation(f, rng)
        if rng.random() < 0.7 and not what.startswith("dataset") or "jpeg" in what:
            try:  # reseal, as someone crafting a file would, so that only the other checks can catch it
                if all(f[n].shape[0] < 10 ** 5 for n in f if f[n].shape):
                    f.attrs["sha256"] = content_digest(f)
            except Exception:
                pass
    return f"{path.name}: {what}"


def _quiet_cli(argv) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            return flowprep_main([str(a) for a in argv])
        except SystemExit as e:
            return int(e.code or 0)


def fuzz_stores(work: Path, count: int, rng: random.Random, report, limit: float = 600) -> None:
    root = work / "ds"
    for name, (dx, dy) in {"Right": (2, 0), "Down": (0, 2)}.items():
        for g in range(3):
            write_video(root / name / f"v{g}.avi", textured_frames(8, (48, 40), dx, dy, seed=g + 10 * dx))
    clean = work / "clean"
    assert extract_dataset(root, clean, CFG, jobs=1, progress=False, log=lambda m: None).ok
    good = sorted(Store(clean).video_ids())
    for i in range(count):
        st = work / f"s{i}"
        shutil.copytree(clean, st)
        what = mutate_store(st, rng)
        print(json.dumps({"store": i, "mutation": what, "started": True}), file=sys.stderr, flush=True)
        faulthandler.dump_traceback_later(limit, exit=True)  # a hang: say where, and end
        t0 = time.perf_counter()
        try:
            rc = _quiet_cli(["verify", st, "--quiet"])
            if rc not in (0, 1, 2):
                raise AssertionError(f"verify exited {rc}")
            _quiet_cli(["info", st])
            try:
                store = Store(st)
                store.check_videos(store.video_ids())
                for vid in store.video_ids():
                    store.frames(vid, [0, 1]), store.flow(vid, [0])
            except StoreError:
                pass
            # the rerun repairs whatever it can, and refuses the rest by name
            summary = None
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    summary = extract_dataset(root, st, CFG, jobs=1, progress=False, log=lambda m: None)
            except StoreError:
                pass
            except ValueError as e:
                if "other settings" not in str(e):
                    raise
            if summary is not None:
                lost = [v for v in good if v not in Store(st).video_ids()]
                if lost or _quiet_cli(["verify", st, "--quiet"]) != 0:
                    raise AssertionError(f"after the rerun: lost {lost}, or verify fails")
            outcome = "ok"
        except Exception:
            outcome = "CRASH " + traceback.format_exc()
        faulthandler.cancel_dump_traceback_later()
        report({"store": i, "mutation": what, "outcome": outcome, "seconds": round(time.perf_counter() - t0, 3),
                "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss})
        shutil.rmtree(st, ignore_errors=True)


def fuzz_videos(work: Path, count: int, rng: random.Random, report, limit: float = 600) -> None:
    sources = {}
    for ext, codec in ((".avi", "MJPG"), (".mp4", "mp4v")):
        p = write_video(work / f"src{ext}", textured_frames(8, (48, 40), 2, 1, seed=3), codec=codec)
        sources[ext] = p.read_bytes()
    root = work / "vds"
    good = []
    for ext in sources:
        (root / "Good").mkdir(parents=True, exist_ok=True)
        (root / "Good" / f"good{ext}").write_bytes(sources[ext])
        good.append(f"Good/good{ext}")
    mutations = {}
    for i in range(count):
        ext = rng.choice(list(sources))
        data, kind = mutate_bytes(sources[ext], rng)
        vid = f"Fuzz/m{i:04d}{ext}"
        (root / vid).parent.mkdir(parents=True, exist_ok=True)
        (root / vid).write_bytes(data)
        mutations[vid] = kind
    t0 = time.perf_counter()
    faulthandler.dump_traceback_later(limit * (count + len(good)), exit=True)
    try:
        s = extract_dataset(root, work / "vst", CFG, jobs=1, progress=False, log=lambda m: None)
        store = Store(work / "vst")
        done = set(store.video_ids())
        lost = [v for v in good if v not in done or store.verify([v])]  # extracted, and its file sound
        internal = {v: e for v, e in s.failed.items() if e.startswith("internal error")}
        outcome = "ok" if not lost and not internal else f"CRASH lost {lost}, internal errors {internal}"
        report({"videos": count, "extracted": len(done) - len(good), "failed": len(s.failed),
                "seconds_per_video": round(s.seconds / (count + len(good)), 3), "outcome": outcome,
                "seconds": round(time.perf_counter() - t0, 3)})
    except Exception:
        report({"videos": count, "outcome": "CRASH " + traceback.format_exc()})
    faulthandler.cancel_dump_traceback_later()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("work", type=Path)
    p.add_argument("--videos", type=int, default=100)
    p.add_argument("--stores", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="one line per mutation")
    p.add_argument("--mutation-limit", type=float, default=600, metavar="SECONDS",
                   help="end with a traceback when one mutation takes longer (videos: this per video)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    crashes, slowest = [], 0.0

    def report(rec):
        nonlocal slowest
        slowest = max(slowest, rec.get("seconds", 0.0) if "store" in rec else 0.0)
        if rec["outcome"] != "ok":
            crashes.append(rec)
        if rec["outcome"] != "ok" or a.verbose:
            print(json.dumps(rec), flush=True)

    t0 = time.perf_counter()
    if a.videos:
        fuzz_videos(a.work, a.videos, rng, report, a.mutation_limit)
    if a.stores:
        fuzz_stores(a.work, a.stores, rng, report, a.mutation_limit)
    print(json.dumps({"summary": True, "videos": a.videos, "stores": a.stores, "crashes": len(crashes),
                      "slowest_store_mutation_s": round(slowest, 3), "seconds": round(time.perf_counter() - t0, 1),
                      "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
