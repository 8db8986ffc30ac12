"""SIGTERM (what a batch scheduler sends) to ``flowprep extract`` and ``twostream train``: a message, exit 143, every
worker process ended (no orphans), and the same command resumes; a SIGTERM whose exception Python ignored (raised
in a ``__del__`` or an at-fork hook) is not lost."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import flowprep_cmd, make_dataset, run_flowprep
from flowprep import signals
from flowprep.signals import Terminated, sigterm_as_interrupt


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(d))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _terminate_when(proc: subprocess.Popen, ready, timeout: float = 90) -> set[int]:
    """Wait until ``ready()`` and the process has worker children, send SIGTERM; returns the children it had."""
    t0 = time.monotonic()
    while not (ready() and _children(proc.pid)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "never got going"
        time.sleep(0.05)
    kids = _children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    return kids


def _assert_no_orphans(kids: set[int]) -> None:
    t0 = time.monotonic()
    while any(_alive(k) for k in kids) and time.monotonic() - t0 < 15:
        time.sleep(0.1)
    assert not [k for k in kids if _alive(k)], "worker processes outlived their parent"


def test_sigterm_to_extract_ends_workers_and_resumes(tmp_path):
    root = make_dataset(tmp_path / "ds", per_class=4, num_frames=16, size=(48, 40))
    store = tmp_path / "st"
    args = ["extract", root, "-o", store, "--method", "tvl1", "--short-side", "0", "--jobs", "2", "--quiet"]
    proc = subprocess.Popen(flowprep_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # SIGTERM once the workers are computing (a temporary file or a finished video is there)
    kids = _terminate_when(proc, lambda: (store / "videos").is_dir())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, (out, err)
    assert err.strip().splitlines()[-1] == "flowprep: terminated (SIGTERM); run the same command again to resume"
    assert "Traceback" not in err
    assert len(kids) >= 2  # loky's workers (and its resource tracker)
    _assert_no_orphans(kids)
    r = run_flowprep(*args)  # resumes
    assert r.returncode == 0 and "failed" in r.stdout and ", 0 failed, of 8" in r.stdout, (r.stdout, r.stderr)
    assert run_flowprep("verify", store, "--quiet").returncode == 0


def test_a_sigterm_whose_exception_python_ignores_is_raised_later():
    # Python ignores an exception raised in a __del__ method (or a weakref callback, or an at-fork hook, where a
    # DataLoader's fork met one): the SIGTERM must not be lost with it.
    class SignalledInDel:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, its Terminated is ignored

    previous_alarm, previous_term = signal.getsignal(signal.SIGALRM), signal.getsignal(signal.SIGTERM)
    previous_hooks = sys.unraisablehook, threading.excepthook, signal.getsignal(signal.SIGCHLD)
    try:
        with pytest.raises(Terminated):
            with sigterm_as_interrupt():
                SignalledInDel()  # collected at once
                assert signals.received()
                reached = True  # the lost exception did not stop the block
        assert reached
        with pytest.raises(Terminated):  # and a loop that checks stops at its next check
            with sigterm_as_interrupt():
                SignalledInDel()
                for _ in range(3):
                    signals.check()
                    reached = False
        assert reached
    finally:
        signal.alarm(0)  # the cleanup backstop the handler armed
        signal.signal(signal.SIGALRM, previous_alarm)  # and what it left for a process that ends
        sys.unraisablehook, threading.excepthook = previous_hooks[:2]
        signal.signal(signal.SIGCHLD, previous_hooks[2])
    assert signal.getsignal(signal.SIGTERM) == previous_term


TRAIN = ["--stream", "temporal", "--num-frames", "3", "--input-size", "24", "--width", "8", "--epochs", "8",
         "--batch-size", "2", "--samples-per-video", "2", "--workers", "2", "--device", "cpu", "--val-clips", "1"]


def _last_epoch(run: Path) -> int:
    """The epoch of ``run``'s last.pt, -1 without one."""
    from twostream.checkpoint import read_checkpoint

    return read_checkpoint(run / "last.pt").epoch if (run / "last.pt").is_file() else -1


def _train_until_terminated(cmd: list[str], run: Path, *, group: bool) -> tuple[int, str]:
    """Start ``cmd``; once it has written a checkpoint of an epoch after the one it started from and is training
    the next with its DataLoader workers, send SIGTERM (to it, or to its whole process group, as SLURM does);
    check that it ends in time, its workers with it. Returns (last.pt's epoch then, its output)."""
    before = (run / "last.pt").stat().st_mtime_ns if (run / "last.pt").is_file() else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        def ready():
            return (run / "last.pt").is_file() and (run / "last.pt").stat().st_mtime_ns != before

        t0 = time.monotonic()
        while not (ready() and len(_children(proc.pid)) >= 2):  # both DataLoader workers started
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 240, "never got going"
            time.sleep(0.02)
        kids = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGTERM) if group else proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # 143 (not the 30 s backstop's SIGALRM, nor an error from a worker the group's SIGTERM ended), in one line
    assert proc.returncode == 143 and took < 25, (proc.returncode, took, out[-3000:])
    assert out.strip().splitlines()[-1] == ("twostream: terminated (SIGTERM); 'twostream train ... --resume' "
                                             "continues from the last finished epoch"), out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    assert len(kids) >= 2  # the DataLoader's workers
    _assert_no_orphans(kids)
    return _last_epoch(run), out


def test_sigterm_to_train_ends_workers_and_resume_continues(tmp_path):
    root = make_dataset(tmp_path / "ds", per_class=3, num_frames=10, size=(40, 32))
    store = tmp_path / "st"
    assert run_flowprep("extract", root, "-o", store, "--method", "dis", "--short-side", "0", "--jobs", "1",
                        "--quiet").returncode == 0
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "twostream", "train", "--store", str(store), "-o", str(run), *TRAIN]
    first, _ = _train_until_terminated(cmd, run, group=False)
    assert 0 <= first < 7
    second, out = _train_until_terminated(cmd + ["--resume"], run, group=True)
    assert first < second < 7 and f"epoch {first + 1}:" in out and f"epoch {first}:" not in out, out[-3000:]
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"epoch {second + 1}:" in r.stderr and f"epoch {second}:" not in r.stderr + r.stdout, r.stderr[-3000:]
    with open(run / "log.csv") as f:  # every epoch once: each run continued where the last checkpoint was
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(8))
    assert _last_epoch(run) == 7


def test_a_sigterm_handled_in_one_block_does_not_stop_later_code():
    """After a block that met a SIGTERM, code run without one (a library call, the next test) is not stopped
    by check(); received() still says it came (the command reports it)."""
    class SignalledInDel:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)

    previous_alarm = signal.getsignal(signal.SIGALRM)
    previous_hooks = sys.unraisablehook, threading.excepthook, signal.getsignal(signal.SIGCHLD)
    try:
        with pytest.raises(Terminated):
            with sigterm_as_interrupt():
                SignalledInDel()
        assert signals.received()
        signals.check()  # outside any block: nothing raised
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        sys.unraisablehook, threading.excepthook = previous_hooks[:2]
        signal.signal(signal.SIGCHLD, previous_hooks[2])
