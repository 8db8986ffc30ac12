"""Peak memory of one ``tvl1-torch`` batch, measured on the CPU with the solver's own code.

Each setting runs in a fresh process: it builds a (B, 256, 340) batch of bikes.mp4-sized frames, notes its
resident memory, solves the batch with OpenCV's pyramid (5 levels, median 5) and reports the growth of the
process's peak resident memory (``ru_maxrss``), i.e. what the solver held at its worst. The iteration counts
are cut to one per level (warps, outer, inner = 1): the tensors alive at the peak have the same shapes as in a
full solve, so the peak is the same, in a fraction of the time. The median filter is the selection network a
GPU runs (on the CPU the solver otherwise calls OpenCV's medianBlur, which holds no temporaries). On a GPU the same tensors live in device
memory; the CUDA context and the caching allocator add to it (``bench/gpu_check.py`` reads the real figure).

    python bench/tvl1_memory.py                         # batches 1, 64; sliced and unsliced median
    python bench/tvl1_memory.py --batches 64 --precision float16
"""
from __future__ import annotations

import argparse
import functools
import json
import resource
import os
import subprocess
import sys

WIDTH, HEIGHT = 340, 256
# glibc keeps freed blocks under its (adaptive, up to 32 MB) mmap threshold in its heap, so the resident
# size would count memory the solver already gave back. A fixed low threshold maps every tensor on its own
# and unmaps it when freed: the peak resident size then follows the live tensors, as a GPU's allocator sees them.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(batch: int, precision: str, slice_median: bool) -> dict:
    """Runs in the child process: peak growth in bytes while solving one batch."""
    import numpy as np
    import torch

    import flowprep.tvl1_torch as T

    torch.set_num_threads(1)
    # The median a GPU runs (the selection network), not OpenCV's medianBlur that the CPU path takes.
    T.median_filter = functools.partial(T.median_filter, use_opencv=False)
    if not slice_median:
        T.MEDIAN_SLICE_BYTES = 2**62  # the whole batch at once, as before the slicing
    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.integers(0, 256, (batch, HEIGHT, WIDTH), dtype=np.uint8))
    b = torch.roll(a, 2, dims=2)
    params = T.TVL1Params(warps=1, outer_iterations=1, inner_iterations=1)
    T.tvl1(a[:1, :32, :32], b[:1, :32, :32], params=params)  # load kernels and libraries before the baseline
    base = _rss_bytes()
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    T.tvl1(a, b, params=params, precision=precision)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"batch": batch, "precision": precision, "slice_median": slice_median,
            "peak_bytes": max(peak, peak_before) - base}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(measure(**json.loads(a.child))))
        return
    print(f"tvl1-torch peak memory of one batch at {WIDTH}x{HEIGHT}, {a.precision}, CPU, fresh process each")
    print(f"{'batch':>5s} {'median at once MB':>18s} {'median sliced MB':>17s} {'per pair MB':>12s}")
    for batch in a.batches:
        row = []
        for sliced in (False, True):
            arg = json.dumps({"batch": batch, "precision": a.precision, "slice_median": sliced})
            out = subprocess.run([sys.executable, __file__, "--child", arg], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, **MALLOC_ENV))
            row.append(json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20)
        print(f"{batch:5d} {row[0]:18.0f} {row[1]:17.0f} {row[1] / batch:12.1f}")


if __name__ == "__main__":
    main()
