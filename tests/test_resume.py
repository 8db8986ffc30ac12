"""Crash safety and resumption of ``flowprep extract``: kill -9 at random moments, then the same command
finishes the job identically to an uninterrupted run; stale temporaries; changed settings; the store lock."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import (flowprep_cmd, kill_group, make_dataset, read_store, read_store_file, textured_frames,
                      write_video)
from flowprep.cli import main

FOUR_WAYS = {"Right": (2, 0), "Down": (0, 2), "Left": (-2, 0), "Up": (0, -2)}


def _finished(store: Path) -> dict[str, os.stat_result]:
    videos = store / "videos"
    return {p.relative_to(videos).as_posix(): p.stat() for p in videos.rglob("*.h5")} if videos.is_dir() else {}


def _temporaries(store: Path) -> list[Path]:
    return list(store.rglob("*.tmp-*")) if store.is_dir() else []


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to check that workers died")
def test_kill_at_random_moments_then_resume(tmp_path):
    root = make_dataset(tmp_path / "ds", classes=FOUR_WAYS, per_class=4, num_frames=12, size=(96, 72))
    n = 16

    def cmd(store):
        return flowprep_cmd("extract", root, "-o", store, "--method", "farneback", "--short-side", "0", "--jobs", "2",
                            "--quiet")

    ref, store = tmp_path / "ref", tmp_path / "st"
    t0 = time.monotonic()
    p = subprocess.run(cmd(ref), capture_output=True, text=True, timeout=300)
    full = time.monotonic() - t0  # seconds of an uninterrupted run, start-up included
    assert p.returncode == 0, p.stderr
    reference = read_store(ref)
    assert len(reference) == n

    rng = np.random.default_rng(20240517)
    # Two kills at random times early in the run (interpreter start-up, imports, discovery, store creation, the
    # first videos); four at random moments after a random number of videos has finished, one from each quarter
    # of the run, plus a random delay so that some land in a flow computation or a file write (up to 4 videos
    # from the end); and one as soon as a video file is being written (a temporary file exists).
    quarters = [(1, 4), (4, 8), (8, 11), (11, n - 3)]
    after = [("after", int(rng.integers(lo, hi)), rng.uniform(0.0, 0.05)) for lo, hi in quarters]
    schedule = [("time", rng.uniform(0.02, 0.3) * full), ("time", rng.uniform(0.3, 0.5) * full), *after[:2],
                ("writing",), *after[2:]]
    kept: dict[str, tuple[int, int]] = {}  # video -> (inode, mtime_ns) when first seen after a kill
    log = []
    for step in schedule:
        p = subprocess.Popen(cmd(store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            if step[0] == "time":
                time.sleep(step[1])
            elif step[0] == "after":
                while len(_finished(store)) < step[1] and p.poll() is None:
                    time.sleep(0.002)
                time.sleep(step[2])
            else:
                while not list((store / "videos").rglob("*.tmp-*")) and p.poll() is None:
                    pass
            if p.poll() is not None:  # finished before the kill: nothing left to interrupt
                log.append(f"{step}: exited {p.returncode} before the kill")
                break
        finally:
            kill_group(p)
        finished = _finished(store)
        what = {"time": lambda: f"{step[1]:.2f} s after the start", "writing": lambda: "while writing",
                "after": lambda: f"{step[2]:.3f} s after {step[1]} videos were done"}[step[0]]()
        log.append(f"kill {what}: {len(finished)} videos done, {len(_temporaries(store))} temporary files left")
        # Crash safety: whatever a kill leaves under a final name is complete and right.
        for vid, st in finished.items():
            assert read_store_file(store / "videos" / vid) == reference[vid[:-3]], f"damaged after a kill: {vid}"
            kept.setdefault(vid, (st.st_ino, st.st_mtime_ns))
    print(f"\nuninterrupted run {full:.2f} s\n" + "\n".join(log))
    kills = sum(line.startswith("kill") for line in log)
    assert kills >= 4, log
    assert 0 < len(kept) < n  # some videos finished before a kill, and a kill came before the end

    p = subprocess.run(cmd(store), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"already done, 0 failed, of {n}" in p.stdout
    # Every video exactly once and identical to the uninterrupted run: every dataset and attribute.
    assert sorted(p.relative_to(store / "videos").as_posix() for p in (store / "videos").rglob("*") if p.is_file()) \
        == sorted(v + ".h5" for v in reference)
    resumed = read_store(store)
    assert resumed.keys() == reference.keys()
    for vid in reference:
        assert resumed[vid] == reference[vid], vid
    for name in ("index.json", "manifest.json", "store.json"):
        assert json.loads((store / name).read_text()) == json.loads((ref / name).read_text()), name
    assert not _temporaries(store) and not list((store / "failed").rglob("*"))
    # No finished video was computed again: its file is the very one the killed run wrote.
    for vid, (ino, mtime) in kept.items():
        st = (store / "videos" / vid).stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{vid} was recomputed"


def test_stale_temporaries_are_removed_and_unfinished_videos_redone(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", per_class=2)
    write_video(root / "Down" / "take.tmp-2.avi", textured_frames(4, (48, 40), 0, 2))  # a temporary's look-alike
    store = tmp_path / "st"
    argv = ["extract", str(root), "-o", str(store), "--method", "dis", "--short-side", "0", "--jobs", "1", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    before = read_store(store)
    # What a kill in the middle of writing leaves: a partial file under a temporary name, no final file.
    victim = store / "videos" / "Down" / "v_Down_g02_c01.avi.h5"
    data = victim.read_bytes()
    victim.unlink()
    (victim.parent / (victim.name + ".tmp-424242")).write_bytes(data[: len(data) // 2])
    (store / "index.json.tmp-424242").write_text('{"half": ')
    kept = {v: s.st_mtime_ns for v, s in _finished(store).items()}
    assert main(argv) == 0
    assert "1 extracted, 4 already done, 0 failed" in capsys.readouterr().out
    assert not [p for p in _temporaries(store) if p.name != "take.tmp-2.avi.h5"]
    assert read_store(store) == before
    assert all(_finished(store)[v].st_mtime_ns == m for v, m in kept.items())


def test_resume_refuses_other_settings(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", per_class=1)
    store = tmp_path / "st"
    base = ["extract", str(root), "-o", str(store), "--short-side", "0", "--jobs", "1", "--quiet"]
    assert main(base + ["--method", "dis"]) == 0
    capsys.readouterr()
    settings = (store / "store.json").read_bytes()
    for extra, what in [(["--method", "farneback"], "(method, params: 'dis' there, 'farneback' now)"),
                        (["--method", "dis", "--bound", "10"], "bound: 20.0 there, 10.0 now"),
                        (["--method", "dis", "--flow-format", "png"], "flow_format"),
                        (["--method", "dis", "--stride", "2"], "decode"),
                        (["--method", "dis", "--param", "preset=fast"], "params")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert "made with other settings" in err and what in err and "choose another -o" in err, err
    assert (store / "store.json").read_bytes() == settings


def test_concurrent_extract_is_refused(tmp_path, capsys):
    root = make_dataset(tmp_path / "ds", per_class=3)
    store = tmp_path / "st"
    # TV-L1 on frames upscaled to 307x256 keeps the first run busy for many seconds.
    first = subprocess.Popen(flowprep_cmd("extract", root, "-o", store, "--method", "tvl1", "--jobs", "1", "--quiet"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (store / "manifest.json").is_file():  # written under the lock, so the lock is held now
            assert first.poll() is None and time.monotonic() < deadline, "the first extract did not start"
            time.sleep(0.01)
        manifest = (store / "manifest.json").stat().st_mtime_ns
        rc = main(["extract", str(root), "-o", str(store), "--method", "tvl1", "--jobs", "1", "--quiet"])
        err = capsys.readouterr().err
        assert first.poll() is None, "the first extract ended too soon for this test to mean anything"
        assert rc == 2 and "another flowprep extract is writing this store" in err, err
        assert (store / "manifest.json").stat().st_mtime_ns == manifest  # the refused run wrote nothing
    finally:
        kill_group(first)
    # A killed holder leaves no lock behind. The settings are compared under the lock, so a run with other
    # settings being refused for them, not for the lock, shows that it got the lock.
    assert main(["extract", str(root), "-o", str(store), "--method", "tvl1", "--short-side", "0", "--jobs", "1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and "another flowprep extract" not in err, err
