"""Where tvl1-torch's time goes on the CPU: per pyramid level, warps, iterations run before each pair's stopping
rule ends it, median filtering and the other stages, for one thread on 340x256 bikes.mp4 pairs (one video).
Times are CPU time of this process, so that a busy machine changes them little.

The module's functions are wrapped with timers (so the figures include the wrappers' small overhead), and each
setting is run on the same pairs:

    python bench/tvl1_profile.py                      # OpenCV's settings, 4 pairs
    python bench/tvl1_profile.py --pairs 8 --param warps=2 --param warm_start=true
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flowprep.tvl1_torch as T  # noqa: E402
from flowprep.flow import resolve_params  # noqa: E402
from tvl1_bench import bikes_pairs  # noqa: E402

STAGES = ("warp_bicubic", "median_filter", "_primal_dual_step", "centered_gradient", "resize_bilinear")


class Profile:
    """Accumulated seconds and calls per (level shape, stage), and iterations per (level, warp)."""

    def __init__(self):
        self.seconds = collections.defaultdict(float)
        self.calls = collections.Counter()
        self.level_seconds = collections.defaultdict(float)
        self.level = None

    def wrap(self, name, fn):
        def timed(*args, **kw):
            t0 = time.process_time()
            out = fn(*args, **kw)
            key = (self.level, name)
            self.seconds[key] += time.process_time() - t0
            self.calls[key] += 1
            return out

        return timed

    def wrap_level(self, fn):
        def timed(I0, *args, **kw):
            self.level = tuple(I0.shape[-2:])
            t0 = time.process_time()
            out = fn(I0, *args, **kw)
            self.level_seconds[self.level] += time.process_time() - t0
            self.level = None
            return out

        return timed


def run(prev, nxt, params: dict, prof: Profile) -> float:
    """Seconds to solve the pairs one at a time under the timers of ``prof``."""
    originals = {name: getattr(T, name) for name in STAGES + ("_solve_level",)}
    try:
        for name in STAGES:
            setattr(T, name, prof.wrap(name, originals[name]))
        T._solve_level = prof.wrap_level(originals["_solve_level"])
        t0 = time.process_time()
        T.tvl1_torch_pairs(prev, nxt, **params)
        return time.process_time() - t0
    finally:
        for name, fn in originals.items():
            setattr(T, name, fn)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="tvl1-torch parameter")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    over = dict(kv.split("=", 1) for kv in args.param)
    params = resolve_params("tvl1-torch", {"device": "cpu", **over})
    prev, nxt = bikes_pairs(args.pairs + 1)
    T.tvl1_torch_pairs(prev[:1, :64, :64], nxt[:1, :64, :64], **params)  # warm-up
    prof = Profile()
    total = run(prev[: args.pairs], nxt[: args.pairs], params, prof)
    n = args.pairs
    print(f"tvl1-torch, 1 thread, {n} bikes.mp4 pairs at 340x256, {over or 'OpenCV defaults'}: "
          f"{total / n * 1000:.0f} ms per pair")
    print(f"{'level':>9} {'ms/pair':>8} {'share':>6} {'iters/pair':>10} | "
          + " ".join(f"{s.strip('_')[:13]:>13}" for s in STAGES))
    levels = sorted(prof.level_seconds, key=lambda s: -s[0] * s[1])
    for lv in levels + [None]:
        sec = prof.level_seconds[lv] if lv else total - sum(prof.level_seconds.values())
        iters = prof.calls[(lv, "_primal_dual_step")] / n
        cells = " ".join(f"{prof.seconds[(lv, s)] / n * 1000:9.1f} ms " for s in STAGES)
        name = f"{lv[1]}x{lv[0]}" if lv else "outside"
        print(f"{name:>9} {sec / n * 1000:8.1f} {sec / total:6.1%} {iters:10.0f} | {cells}")
    per_iter = sum(prof.seconds[(lv, "_primal_dual_step")] for lv in levels) / max(
        1, sum(prof.calls[(lv, "_primal_dual_step")] for lv in levels))
    print(f"primal-dual step: {per_iter * 1e6:.0f} us per iteration on average over levels; "
          f"median filter calls per pair: {sum(prof.calls[(lv, 'median_filter')] for lv in levels) / n:.0f}; "
          f"warps per pair: {sum(prof.calls[(lv, 'warp_bicubic')] for lv in levels) / n:.0f}")
    totals = {s: sum(prof.seconds[(lv, s)] for lv in levels + [None]) for s in STAGES}
    print("share of all time: " + ", ".join(f"{s.strip('_')} {v / total:.1%}" for s, v in totals.items()))


if __name__ == "__main__":
    main()
