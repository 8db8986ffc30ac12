"""The batched extraction pipeline (flowprep.batched) on the CPU: the store it writes is byte-identical to the
per-video path's whatever the batch size (batches straddle videos and frame sizes), failures of a video or of a
device batch stay with the videos concerned, out-of-memory batches are split, reruns resume, and the CLI runs it."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import make_dataset, read_store, textured_frames, write_video
from flowprep import tvl1_torch
from flowprep.batched import DeviceError, PipelineConfig, use_pipeline
from flowprep.cli import main
from flowprep.decode import DecodeConfig, read_video
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.flow import video_flow
from flowprep.store import Store

# Reduced iteration counts keep every extraction under a second; the solver is the full one.
PARAMS = dict(device="cpu", nscales=2, warps=1, inner_iterations=5, outer_iterations=2)
CFG = ExtractConfig(method="tvl1-torch", params=PARAMS, decode=DecodeConfig(short_side=None))
ODD = "Right/v_Right_small.avi"  # a video of another frame size, so batches of two shapes interleave


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 6 videos of 8 frames at 48x40 (7 pairs each) and one of 6 frames at 40x32.
    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds")
    write_video(root / ODD, textured_frames(6, (40, 32), 1, 1, seed=7))
    return root


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The store of the plain per-video path: one joblib task per video, each pair solved alone (batch 1)."""
    store = tmp_path_factory.mktemp("ref") / "st"
    assert not use_pipeline(CFG, None)  # tvl1-torch on the CPU takes the per-video path by default
    s = extract_dataset(dataset, store, CFG, jobs=1, progress=False)
    assert s.ok and (s.done, s.pairs) == (7, 6 * 7 + 5), s
    return store


def _extract(dataset, store, batch_pairs, *, log=print, **pipeline):
    return extract_dataset(dataset, store, CFG, jobs=2, progress=False,
                           pipeline=PipelineConfig(batch_pairs=batch_pairs, **pipeline), log=log)


def _same_store(store, ref):
    assert read_store(store) == read_store(ref)
    for name in ("index.json", "store.json", "manifest.json"):
        assert json.loads((store / name).read_text()) == json.loads((ref / name).read_text()), name
    assert not list(store.rglob("*.tmp-*"))


@pytest.mark.parametrize("batch_pairs, writers, max_videos", [(1, 1, 0), (3, 2, 0), (64, 2, 0), (5, 1, 2)])
def test_store_equals_per_video_path(dataset, reference, tmp_path, batch_pairs, writers, max_videos):
    # batch 3 and 5 cut videos of 7 pairs across batches; 64 takes every video of a size at once; max_videos=2
    # forces short batches whenever the two videos in flight are queued.
    s = _extract(dataset, tmp_path / "st", batch_pairs, writers=writers, max_videos=max_videos)
    assert s.ok and (s.total, s.done, s.skipped, s.pairs) == (7, 7, 0, 47), s
    _same_store(tmp_path / "st", reference)


def test_store_reproduces_video_flow(dataset, tmp_path):
    # What `twostream predict` does with a store's settings: video_flow(frames, method, params) on the decoded video.
    cfg = ExtractConfig(method="tvl1-torch", params=PARAMS, decode=DecodeConfig(short_side=None),
                        flow_format="float16")
    s = extract_dataset(dataset, tmp_path / "st", cfg, jobs=1, progress=False, pipeline=PipelineConfig(batch_pairs=4))
    assert s.ok
    st = Store(tmp_path / "st")
    assert st.config["method"] == "tvl1-torch" and st.config["params"] == cfg.params
    for vid in ("Down/v_Down_g02_c01.avi", ODD):
        frames = read_video(dataset / vid, DecodeConfig(short_side=None)).frames
        expected = video_flow(frames, st.config["method"], st.config["params"]).astype(np.float16)
        np.testing.assert_array_equal(st.flow(vid, range(len(frames) - 1)), expected.astype(np.float32))
    # The Right class moves +2 px/frame in x.
    med = np.median(st.flow("Right/v_Right_g01_c01.avi", range(7))[:, 10:-10, 10:-10].reshape(-1, 2), axis=0)
    np.testing.assert_allclose(med, [2, 0], atol=0.3)


def test_undecodable_video_and_device_error_fail_alone(dataset, reference, tmp_path, monkeypatch):
    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    (root / "Down" / "v_Down_g02_c01.avi").write_bytes(b"not a video at all" * 100)
    real, calls = tvl1_torch.tvl1, []

    def flaky(a, b, **kw):  # the third batch fails (on the CPU: an error that leaves the device usable)
        calls.append(len(a))
        if len(calls) == 3:
            raise RuntimeError("solver failed on this batch\n(simulated)")
        return real(a, b, **kw)

    monkeypatch.setattr(tvl1_torch, "tvl1", flaky)
    lines = []
    s = _extract(root, tmp_path / "st", 3, log=lines.append)
    assert not s.ok
    assert s.failed.pop("Down/v_Down_g02_c01.avi").startswith("OpenCV cannot open it as a video")
    # A batch of 3 pairs touches one or two videos; they fail with the device's message, all others are complete.
    assert 1 <= len(s.failed) <= 2, s.failed
    for why in s.failed.values():
        assert why == "device error on a batch of 3 pairs: RuntimeError: solver failed on this batch (simulated)"
    ref, got = read_store(reference), read_store(tmp_path / "st")
    assert set(got) == set(ref) - set(s.failed) - {"Down/v_Down_g02_c01.avi"}
    assert all(got[v] == ref[v] for v in got)
    records = {json.loads(p.read_text())["id"] for p in (tmp_path / "st" / "failed").rglob("*.json")}
    assert records == set(s.failed) | {"Down/v_Down_g02_c01.avi"}
    assert s.done == 6 - len(s.failed) and not list((tmp_path / "st").rglob("*.tmp-*"))

    # A rerun retries exactly the failed videos; the device ones now succeed, the broken file fails again.
    monkeypatch.setattr(tvl1_torch, "tvl1", real)
    again = _extract(root, tmp_path / "st", 3)
    assert (again.done, again.skipped) == (len(s.failed), 6 - len(s.failed))
    assert list(again.failed) == ["Down/v_Down_g02_c01.avi"]
    assert read_store(tmp_path / "st") == {v: d for v, d in ref.items() if v != "Down/v_Down_g02_c01.avi"}


def test_out_of_memory_halves_the_batch(dataset, reference, tmp_path, monkeypatch):
    real, sizes = tvl1_torch.tvl1, []

    def small_device(a, b, **kw):
        sizes.append(len(a))
        if len(a) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB (simulated)")
        return real(a, b, **kw)

    monkeypatch.setattr(tvl1_torch, "tvl1", small_device)
    lines = []
    s = _extract(dataset, tmp_path / "st", 8, log=lines.append)
    assert s.ok, s.failed
    assert lines[0] == "device out of memory on a batch of 8 pairs; going on with batches of 4"
    assert any("going on with batches of 2" in line for line in lines) and max(sizes[-5:]) <= 2
    _same_store(tmp_path / "st", reference)


def test_a_sticky_device_error_stops_the_run_and_a_rerun_resumes(dataset, reference, tmp_path, monkeypatch, capsys):
    # A CUDA error (illegal address, device-side assert) poisons the context: every later batch fails as well.
    # The run must stop at the first one, keep what finished, record no video as failed, and resume.
    real, calls = tvl1_torch.tvl1, []

    def broken_after_two(a, b, **kw):
        calls.append(len(a))
        if len(calls) > 2:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered (simulated)")
        return real(a, b, **kw)

    monkeypatch.setattr(tvl1_torch, "tvl1", broken_after_two)
    with pytest.raises(DeviceError, match="illegal memory access.*run stops here.*run the same command again"):
        _extract(dataset, tmp_path / "st", 7, max_videos=2)
    assert len(calls) == 3  # nothing was tried after the error
    kept = read_store(tmp_path / "st")
    assert len(kept) < 7 and not list((tmp_path / "st" / "failed").rglob("*.json"))
    assert all(kept[v] == read_store(reference)[v] for v in kept)

    monkeypatch.setattr(tvl1_torch, "tvl1", real)
    again = _extract(dataset, tmp_path / "st", 7)
    assert again.ok and again.skipped == len(kept) and again.done == 7 - len(kept)
    _same_store(tmp_path / "st", reference)


def test_out_of_memory_frees_the_failed_batch_before_the_retry(dataset, reference, tmp_path, monkeypatch):
    # The OOM error's traceback holds the failed batch's device tensors; if it stays alive through the retry, the
    # retry finds the memory still taken. The fake solver allocates, then fails; the retry checks it was freed.
    import gc
    import weakref

    real, held = tvl1_torch.tvl1, []

    def allocate_then_fail(a, b, **kw):
        gc.collect()
        assert all(r() is None for r in held), "the failed batch's tensors are still alive at the retry"
        if len(a) > 2:
            scratch = torch.empty(len(a), 2, *a.shape[1:])  # what the solver held when it ran out
            held.append(weakref.ref(scratch))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(a, b, **kw)

    monkeypatch.setattr(tvl1_torch, "tvl1", allocate_then_fail)
    s = _extract(dataset, tmp_path / "st", 8, log=lambda line: None)
    assert s.ok and held, s.failed
    _same_store(tmp_path / "st", reference)


def test_resume_redoes_only_the_missing_video(dataset, reference, tmp_path):
    store = tmp_path / "st"
    assert _extract(dataset, store, 4).ok
    victim = store / "videos" / "Right" / "v_Right_g03_c01.avi.h5"
    victim.unlink()
    (victim.parent / (victim.name + ".tmp-99999")).write_bytes(b"half a file")  # what a kill -9 leaves
    kept = {p: p.stat().st_mtime_ns for p in (store / "videos").rglob("*.h5")}
    s = _extract(dataset, store, 4)
    assert s.ok and (s.done, s.skipped, s.pairs) == (1, 6, 7)
    assert all(p.stat().st_mtime_ns == m for p, m in kept.items())  # the others were not rewritten
    _same_store(store, reference)


def test_cli(dataset, reference, tmp_path, capsys):
    params = [a for k, v in PARAMS.items() if k != "device" for a in ("--param", f"{k}={v}")]
    base = ["extract", str(dataset), "--method", "tvl1-torch", "--device", "cpu", "--short-side", "0", "--jobs", "1",
            "--quiet", *params]
    assert main(base + ["-o", str(tmp_path / "st"), "--batch-pairs", "6", "--writers", "2"]) == 0
    out = capsys.readouterr().out
    assert "7 extracted, 0 already done, 0 failed, of 7; 47 flow pairs" in out, out
    _same_store(tmp_path / "st", reference)
    # Batch size and writers do not change the store, so a rerun with others resumes it.
    assert main(base + ["-o", str(tmp_path / "st"), "--batch-pairs", "2"]) == 0
    assert "0 extracted, 7 already done" in capsys.readouterr().out

    bad = ["-o", str(tmp_path / "bad")]
    for argv, message in [(base + bad + ["--batch-pairs", "0"], "--batch-pairs and --writers must be at least 1"),
                          (["extract", str(dataset), *bad, "--method", "farneback", "--batch-pairs", "4"],
                           "needs a batched flow method")]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()  # refused before the store is made


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_cuda_without_gpu_is_refused_up_front(dataset, tmp_path):
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):  # refused as the settings are made
        cfg = ExtractConfig(method="tvl1-torch", params=dict(PARAMS, device="cuda"), decode=DecodeConfig(short_side=None))
        extract_dataset(dataset, tmp_path / "st", cfg, jobs=1, progress=False)
    assert not (tmp_path / "st").exists()
    with pytest.raises(ValueError, match="does not combine with dask"):
        extract_dataset(dataset, tmp_path / "st", CFG, progress=False, dask="tcp://127.0.0.1:1",
                        pipeline=PipelineConfig())


def test_kill_while_writing_then_resume(dataset, reference, tmp_path):
    import subprocess

    from conftest import flowprep_cmd, kill_group  # kills the process group and checks that no worker survives

    params = [a for k, v in PARAMS.items() if k != "device" for a in ("--param", f"{k}={v}")]
    cmd = flowprep_cmd("extract", dataset, "-o", tmp_path / "st", "--method", "tvl1-torch", "--device", "cpu",
                       "--short-side", "0", "--jobs", "2", "--batch-pairs", "3", "--quiet", *params)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while not list((tmp_path / "st").rglob("*.h5.tmp-*")) and p.poll() is None:
            pass
        assert p.poll() is None, "the run ended before a video was being written"
    finally:
        kill_group(p)
    finished = list((tmp_path / "st" / "videos").rglob("*.h5"))
    assert len(finished) < 7
    ref = read_store(reference)
    assert all(read_store(tmp_path / "st")[v] == ref[v] for v in read_store(tmp_path / "st"))  # complete or absent
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert f"{7 - len(finished)} extracted, {len(finished)} already done, 0 failed" in p.stdout
    _same_store(tmp_path / "st", reference)


def test_warm_start_runs_on_the_per_video_path(dataset, reference, tmp_path):
    # A warm-started pair needs its video's previous pair first: the batched pipeline refuses it before touching
    # the store, and by default such a store is made by the per-video path, whose flow video_flow reproduces.
    cfg = ExtractConfig(method="tvl1-torch", params=dict(PARAMS, warm_start=True, warm_warps=1),
                        decode=DecodeConfig(short_side=None), flow_format="float16")
    with pytest.raises(ValueError, match="warm_start.*per-video path"):
        extract_dataset(dataset, tmp_path / "refused", cfg, jobs=1, progress=False,
                        pipeline=PipelineConfig(batch_pairs=4))
    assert not (tmp_path / "refused").exists()
    assert not use_pipeline(cfg, None)
    s = extract_dataset(dataset, tmp_path / "st", cfg, jobs=1, progress=False)
    assert s.ok and s.pairs == 47
    st = Store(tmp_path / "st")
    assert st.config["params"]["warm_start"] is True
    frames = read_video(dataset / ODD, DecodeConfig(short_side=None)).frames
    expected = video_flow(frames, "tvl1-torch", st.config["params"]).astype(np.float16)
    np.testing.assert_array_equal(st.flow(ODD, range(len(frames) - 1)), expected.astype(np.float32))


def test_per_video_path_sets_torch_threads(tmp_path):
    # tvl1-torch on the CPU runs in --jobs processes: each must use --threads torch threads, not one per core.
    from flowprep.dataset import VideoEntry
    from flowprep.extract import extract_video

    src = write_video(tmp_path / "v.avi", textured_frames(3, (32, 24), 1, 0))
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        r = extract_video(src, VideoEntry("v.avi", 0, "c"), tmp_path / "st", CFG, threads=1)
        assert r.ok, r.error
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
