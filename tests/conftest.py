"""Shared test helpers: tiny synthetic videos made on the fly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def textured_frames(num_frames=8, size=(48, 40), dx=2, dy=0, seed=0) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB of a smooth random texture translating by (dx, dy) pixels per frame (wrapping)."""
    w, h = size
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.stack([np.roll(tex, (t * dy, t * dx), axis=(0, 1)) for t in range(num_frames)])


def write_video(path, frames: np.ndarray, fps: float = 25.0, codec: str = "MJPG") -> Path:
    """Write RGB frames with OpenCV (the decoding path real data takes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert wr.isOpened(), path
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def make_dataset(root, classes=None, per_class=3, num_frames=8, size=(48, 40)) -> Path:
    """A UCF101-style dataset: ROOT/<Class>/v_<Class>_gNN_c01.avi plus ucfTrainTestlist/ split files.

    Classes differ by motion: ``Right`` moves +2 px/frame in x, ``Down`` +2 px/frame in y.
    """
    root = Path(root)
    classes = classes or {"Right": (2, 0), "Down": (0, 2)}
    train, test = [], []
    for ci, (name, (dx, dy)) in enumerate(sorted(classes.items())):
        for g in range(1, per_class + 1):
            rel = f"{name}/v_{name}_g{g:02d}_c01.avi"
            write_video(root / rel, textured_frames(num_frames, size, dx, dy, seed=100 * ci + g))
            (test if g == per_class else train).append((rel, ci + 1))
    splits = root / "ucfTrainTestlist"
    splits.mkdir()
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(sorted(classes))))
    (splits / "trainlist01.txt").write_text("".join(f"{r} {lab}\n" for r, lab in train))
    (splits / "testlist01.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return root


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return make_dataset(tmp_path / "ds")


# --- helpers for the flowprep store tests -------------------------------------------------------

def flowprep_cmd(*args) -> list[str]:
    """The ``python -m flowprep ...`` command line, run with this interpreter."""
    return [sys.executable, "-m", "flowprep", *map(str, args)]


def run_flowprep(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``python -m flowprep ARGS`` to completion; stdout/stderr captured as text."""
    return subprocess.run(flowprep_cmd(*args), capture_output=True, text=True, timeout=timeout)


def read_store_file(path) -> dict:
    """Everything in one video file of a store: ``{"attrs": {...}, name: [bytes per item] or bytes}``.

    Variable-length datasets give a list of bytes per item; fixed-size ones the bytes of the whole array (with
    dtype and shape), so two files compare equal exactly when they hold the same data and attributes.
    """
    from flowprep.store import open_h5

    out = {}
    with open_h5(path) as f:
        out["attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        for name, d in f.items():
            if d.dtype == object:
                out[name] = [bytes(x) for x in d[:]]
            else:
                a = d[()]
                out[name] = (a.dtype.str, a.shape, a.tobytes())
    return out


def read_store(store_dir) -> dict:
    """``{video id (path under videos/ without .h5): read_store_file(...)}`` for every finished video of a store."""
    videos = Path(store_dir) / "videos"
    return {p.relative_to(videos).as_posix()[: -len(".h5")]: read_store_file(p) for p in sorted(videos.rglob("*.h5"))}


def run_limited(args, *, memory_mb: int = 1024, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``args`` with its address space limited to ``memory_mb`` MiB (``RLIMIT_AS``): an attempt to allocate
    more fails inside the child instead of swapping the machine. stdout/stderr captured as text."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))

    return subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=timeout, preexec_fn=limit, **kw)


# --- killing a run and its workers -------------------------------------------------------------

def _live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that are not zombies (the init here may be slow to reap orphans)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text[text.rindex(")") + 2:].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL a process started in its own group, and its workers, at once (as a crash would); check that none
    survives (Linux /proc)."""
    os.killpg(p.pid, signal.SIGKILL)  # the parent and its joblib workers, all at once, as a crash would
    assert p.wait(timeout=30) in (-signal.SIGKILL, 0)  # 0: it had finished already
    deadline = time.monotonic() + 10
    while _live_group_members(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _live_group_members(p.pid), "a worker survived the kill"
