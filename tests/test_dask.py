"""``flowprep extract --dask``: a LocalCluster of 2 worker processes makes the same store as a local ``--jobs 2``
run, and a worker killed mid-run (its process, ``client.restart()``, or one dying on every try) neither loses
nor duplicates videos."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import distributed  # noqa: E402  (in the test extra: the cluster tests must run, not skip)
# Every scheduler serves HTTP (metrics) on 8787 even without a dashboard, and moves to a free port when another
# cluster holds it, with this warning.
pytestmark = pytest.mark.filterwarnings("ignore:Port 8787 is already in use:UserWarning")

from conftest import read_store  # noqa: E402
from flowprep.cli import main  # noqa: E402
from flowprep.cluster import ClusterError, check_workers  # noqa: E402
from flowprep.decode import DecodeConfig  # noqa: E402
from flowprep.extract import ExtractConfig, extract_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BROKEN = "RedUp/v_RedUp_g01_c02.avi"  # overwritten with bytes that are not a video: its failure is recorded
ARGS = ["--method", "farneback", "--short-side", "0", "--quiet"]
CFG = ExtractConfig(method="farneback", decode=DecodeConfig(short_side=None))


def _make_demo(out) -> Path:
    spec = importlib.util.spec_from_file_location("make_demo", REPO / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.make_demo(out, videos_per_class=4, num_frames=20, size=(48, 48))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(dataset root, the store of a local --jobs 2 run, number of videos)."""
    tmp = tmp_path_factory.mktemp("dask")
    root = _make_demo(tmp / "ds")
    (root / BROKEN).write_bytes(b"this is not a video\n" * 50)
    ref = tmp / "ref"
    assert main(["extract", str(root), "-o", str(ref), "--jobs", "2", *ARGS]) == 1  # 1: the broken video
    return root, ref, len(list(root.glob("*/*.avi")))


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        yield c


@pytest.fixture
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as cl:
        cl.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test may still be restarting
        yield cl


def _failures(store: Path) -> dict:
    out = {}
    for p in (store / "failed").rglob("*.json"):
        rec = json.loads(p.read_text())
        out[rec.pop("id")] = {k: v for k, v in rec.items() if k != "time"}
    return out


def _assert_same_store(store: Path, ref: Path, *, failures=True) -> None:
    """Same videos, same frames, same flow, same attributes; no temporary file left."""
    got, want = read_store(store), read_store(ref)
    assert sorted(got) == sorted(want)
    for vid in want:
        assert got[vid] == want[vid], vid
    for name in ("index.json", "manifest.json", "store.json"):
        assert json.loads((store / name).read_text()) == json.loads((ref / name).read_text()), name
    if failures:
        assert _failures(store) == _failures(ref)
    assert not list(store.rglob("*.tmp-*"))


def test_cluster_store_equals_local_jobs_2_and_resumes(demo, client, tmp_path, capsys):
    root, ref, n = demo
    capsys.readouterr()
    store = tmp_path / "st"
    cmd = ["extract", str(root), "-o", str(store), *ARGS, "--dask", client.scheduler.address]
    assert main(cmd) == 1
    out, err = capsys.readouterr()
    assert f"{n - 1} extracted, 0 already done, 1 failed, of {n}" in out
    assert f"{BROKEN}: " in err  # named in the final summary
    _assert_same_store(store, ref)
    assert set(_failures(store)) == {BROKEN}

    # Resume on the cluster: a deleted video is redone (identically), the finished ones are not touched, the
    # failed one is retried and still recorded; the progress bar counts the videos to do.
    victim = store / "videos" / "BlueDown" / "v_BlueDown_g02_c01.avi.h5"
    victim.unlink()
    kept = {p: p.stat().st_mtime_ns for p in (store / "videos").rglob("*.h5")}
    assert main([c for c in cmd if c != "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert f"1 extracted, {n - 2} already done, 1 failed, of {n}" in out
    assert "2/2 [" in err  # tqdm's "done/total [elapsed<remaining" for the two videos to do
    _assert_same_store(store, ref)
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())


def _exit_if_busy(dask_worker, note: str):
    """Run on a worker by ``client.run``: if a task is executing, write the keys of the tasks the worker holds
    (executing, or queued on it) to ``note`` and die at once.

    Not in the broken video, whose failure would then be a death rather than its decoding error."""
    held = [str(ts.key) for ts in dask_worker.state.tasks.values() if ts.state in ("executing", "ready")]
    if dask_worker.state.executing and not any(k.endswith(BROKEN) for k in held):
        Path(note).write_text("\n".join(held))
        os._exit(1)  # as a crash or an OOM kill would: no cleanup, the tasks are lost mid-video


def _run_in_thread(root, store, client):
    out = {}

    def target():
        try:
            out["summary"] = extract_dataset(root, store, CFG, dask=client, progress=False, log=lambda m: None)
        except BaseException as e:  # re-raised by the test
            out["error"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def _wait_for_first_video(store: Path, th: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while not (store / "videos").is_dir() or not list((store / "videos").rglob("*.h5")):
        assert th.is_alive() and time.monotonic() < deadline, "the extraction did not start"
        time.sleep(0.002)


def _kill_a_busy_worker(client, note: Path, th: threading.Thread) -> list[str]:
    """Kill a worker process while it is inside a video; return the ids of the videos it held."""
    while not note.exists() and th.is_alive():
        for addr in list(client.nthreads()):
            client.run(_exit_if_busy, note=str(note), workers=[addr], on_error="ignore")
            if note.exists():
                break
    assert note.exists(), "the run ended before a worker could be killed"
    return [key.split("-", 2)[2] for key in note.read_text().split()]  # keys are flowprep-<run>-<video id>


def _summary(th, out) -> object:
    th.join(timeout=120)
    assert not th.is_alive(), "the extraction did not finish"
    if "error" in out:
        raise out["error"]
    return out["summary"]


def test_worker_killed_mid_video_loses_and_duplicates_nothing(demo, client, tmp_path):
    root, ref, n = demo
    ref_pairs = sum(r["num_frames"] - 1 for r in json.loads((ref / "index.json").read_text()).values())
    store, note = tmp_path / "st", tmp_path / "killed.txt"
    pids = set(client.run(os.getpid).values())
    th, out = _run_in_thread(root, store, client)
    _wait_for_first_video(store, th)
    killed = _kill_a_busy_worker(client, note, th)
    s = _summary(th, out)
    assert s.done == n - 1 and set(s.failed) == {BROKEN}
    # Each video came back once: a duplicate would count its flow pairs twice.
    assert s.pairs == ref_pairs
    _assert_same_store(store, ref)
    assert killed and all(vid in read_store(store) for vid in killed)
    client.wait_for_workers(2, timeout=60)
    assert len(pids - set(client.run(os.getpid).values())) == 1, "exactly one worker process should have been replaced"


def test_client_restart_mid_run(demo, client, tmp_path):
    """``client.restart()`` cancels every task in flight; they are submitted again, and the run completes."""
    root, ref, n = demo
    store = tmp_path / "st"
    th, out = _run_in_thread(root, store, client)
    _wait_for_first_video(store, th)
    done_before = len(list((store / "videos").rglob("*.h5")))
    client.restart()
    s = _summary(th, out)
    assert done_before < n - 1, "the restart came after the end of the run"
    assert s.done == n - 1 and set(s.failed) == {BROKEN}
    _assert_same_store(store, ref)


def test_video_whose_workers_keep_dying_is_recorded_then_retried(demo, tmp_path):
    """With ``allowed-failures`` 0 the first death of a worker fails its video (``KilledWorker``) as a repeated
    crash would: the video is recorded as failed, the others finish, and the next run extracts it."""
    import dask

    root, ref, n = demo
    store, note = tmp_path / "st", tmp_path / "killed.txt"
    # worker-saturation 1: the scheduler gives a one-thread worker one task at a time, so the tasks lost with the
    # worker are exactly the one it was executing (with the default 1.1 a second may be on its way to it).
    config = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.worker-saturation": 1.0}
    with dask.config.set(config), \
            distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c, \
            distributed.Client(c, set_as_default=False) as cl:
        th, out = _run_in_thread(root, store, cl)
        _wait_for_first_video(store, th)
        killed = set(_kill_a_busy_worker(cl, note, th))
        s = _summary(th, out)
        assert killed and set(s.failed) == killed | {BROKEN}
        assert s.done == n - 1 - len(killed)
        for vid in killed:
            assert "dask worker that ran it died" in s.failed[vid]
            assert not (store / "videos" / (vid + ".h5")).exists()
            assert vid in _failures(store)
        cl.wait_for_workers(2, timeout=60)
        s = extract_dataset(root, store, CFG, dask=cl, progress=False, log=lambda m: None)
    assert s.done == len(killed) and s.skipped == n - 1 - len(killed)
    _assert_same_store(store, ref)


def test_cluster_errors_are_one_line_and_leave_no_store(demo, client, tmp_path, capsys, monkeypatch):
    import dask

    root, _, _ = demo
    store = tmp_path / "st"
    base = ["extract", str(root), "-o", str(store), *ARGS]
    # --jobs and --dask exclude each other, in the CLI and in the library.
    with pytest.raises(SystemExit) as e:
        main(base + ["--jobs", "2", "--dask", "tcp://127.0.0.1:8786"])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(ValueError, match="jobs and dask exclude each other"):
        extract_dataset(root, store, CFG, jobs=2, dask="tcp://127.0.0.1:8786")
    # No scheduler there.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(base + ["--dask", f"tcp://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"cannot connect to the dask scheduler at tcp://127.0.0.1:{port}" in err
    assert err.strip().splitlines()[-1].startswith("flowprep: error: ")
    # Workers that do not see the dataset root are named.
    with pytest.raises(ClusterError, match=r"is not a directory on dask worker\(s\) tcp://"):
        check_workers(client, tmp_path / "elsewhere")
    # The extra is not installed.
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `import distributed` raise ImportError
    assert main(base + ["--dask", "tcp://127.0.0.1:8786"]) == 2
    err = capsys.readouterr().err
    assert err == ('flowprep: error: --dask needs dask.distributed, which is not installed: '
                   'pip install "twostream[dask]"\n')
    assert not store.exists()


def test_a_gpu_method_on_a_cluster_must_be_pinned_to_the_cpu(tmp_path, capsys):
    # Dask's per-video path would give each GPU worker process its own CUDA context and batch, no OOM backoff.
    root = tmp_path / "ds"
    root.mkdir()
    for device in ("cuda", "cuda:1", "auto"):
        cfg = ExtractConfig(method="tvl1-torch", params={"device": "cpu"}, decode=DecodeConfig())
        cfg.params["device"] = device  # as a store's settings could say; the constructor checks this machine
        with pytest.raises(ValueError, match=f"--dask with tvl1-torch on device '{device}'.*--device cpu"):
            extract_dataset(root, tmp_path / "st", cfg, dask="tcp://127.0.0.1:1")  # refused before connecting
    assert main(["extract", str(root), "-o", str(tmp_path / "st"), "--method", "tvl1-torch",
                 "--dask", "tcp://127.0.0.1:1"]) == 2
    assert "on device 'auto'" in capsys.readouterr().err
    assert not (tmp_path / "st").exists()
