"""SIGTERM (what a batch scheduler sends) to ``flowprep extract``: a message, exit 143, every worker process ended
(no orphans), and the same command resumes."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import flowprep_cmd, make_dataset, run_flowprep


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
