"""Training: exact resume, safe checkpoints, bad input."""
import pickle

import pytest
import torch

import twostream.train as train_mod
from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from twostream.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from twostream.train import TrainConfig, train


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds", per_class=3, num_frames=12, size=(40, 32))
    out = tmp_path_factory.mktemp("store") / "store"
    s = extract_dataset(root, out, ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                        jobs=1, progress=False)
    assert s.ok
    return out


def _cfg(store, out, **kw):
    base = dict(store=str(store), out_dir=str(out), stream="temporal", num_frames=4, input_size=24, epochs=3,
                batch_size=4, lr=0.05, samples_per_video=2, workers=0, device="cpu", val_clips=2, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def test_resume_equals_uninterrupted(store, tmp_path, monkeypatch):
    train(_cfg(store, tmp_path / "a"), progress=False)
    full = load_checkpoint(tmp_path / "a" / "last.pt")

    real = train_mod.train_one_epoch

    def interrupted(*args, epoch, **kw):  # dies at the start of epoch 2, after epoch 1's checkpoint
        if epoch == 2:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)

    monkeypatch.setattr(train_mod, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(store, tmp_path / "b"), progress=False)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    train(_cfg(store, tmp_path / "b", resume=True), progress=False)
    resumed = load_checkpoint(tmp_path / "b" / "last.pt")

    assert resumed["epoch"] == full["epoch"] == 2
    for k, v in full["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    # the log holds each epoch once
    rows = (tmp_path / "b" / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    assert (tmp_path / "b" / "curves.png").stat().st_size > 1000


def test_resume_refuses_other_settings(store, tmp_path):
    train(_cfg(store, tmp_path, epochs=1), progress=False)
    with pytest.raises(CheckpointError, match="lr was 0.05"):
        train(_cfg(store, tmp_path, epochs=1, lr=0.1, resume=True), progress=False)


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(bad)

    foreign = tmp_path / "resnet18_imagenet.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a twostream checkpoint"):
        load_checkpoint(foreign)

    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": {}, "config": {}, "meta": {}, "epoch": 0})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    assert load_checkpoint(good)["epoch"] == 0


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_code_is_refused(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "twostream-checkpoint", "version": 1, "model": Evil()}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="safe loader"):
        load_checkpoint(evil)
    assert "must never run" not in capsys.readouterr().out


def test_cli_errors_are_one_line(store, tmp_path, capsys):
    from twostream.cli import main

    (tmp_path / "x.pt").write_bytes(b"junk")
    rc = main(["evaluate", "--checkpoint", str(tmp_path / "x.pt"), "--store", str(store), "-o", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "x.pt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    rc = main(["train", "--store", str(tmp_path / "nostore"), "-o", str(tmp_path / "r")])
    assert rc == 2 and "not a flowprep store" in capsys.readouterr().err
    rc = main(["train", "--store", str(store), "-o", str(tmp_path / "r"), "--split", "7", "--device", "cpu"])
    assert rc == 2 and "no split 7" in capsys.readouterr().err


def test_quiet_prints_only_the_result_line(store, tmp_path):
    """``--quiet``: no progress bar and no line per epoch, from train and evaluate: one result line each."""
    import subprocess
    import sys

    common = ["--workers", "0", "--device", "cpu", "--quiet"]
    train_args = ["train", "--store", str(store), "-o", str(tmp_path / "q"), "--stream", "temporal", "--num-frames",
                  "4", "--input-size", "24", "--width", "8", "--epochs", "2", "--batch-size", "4", "--val-clips", "1",
                  *common]
    eval_args = ["evaluate", "--checkpoint", str(tmp_path / "q" / "last.pt"), "--store", str(store), "-o",
                 str(tmp_path / "s.npz"), "--clips", "1", "--crops", "1", *common]
    # Both commands through the real entry point, in one fresh interpreter (its logging set up as a user's would be).
    code = (f"import sys; from twostream.cli import main; sys.exit(main({train_args!r}) or main({eval_args!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert len(lines) == 2 and r.stderr == "", r.stdout + r.stderr
    assert lines[0].startswith("trained temporal resnet18") and " videos: clip top1 " in lines[1], lines
    assert len((tmp_path / "q" / "log.csv").read_text().splitlines()) == 3  # the epochs are still logged


def test_loader_workers_run_opencv_on_one_thread(store, tmp_path, monkeypatch):
    import cv2

    seen = tmp_path / "threads"
    real = train_mod.TrainClips.__getitem__

    def getitem(self, i):  # runs in a forked DataLoader worker
        seen.write_text(str(cv2.getNumThreads()))
        return real(self, i)

    monkeypatch.setattr(train_mod.TrainClips, "__getitem__", getitem)
    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        train(_cfg(store, tmp_path / "run", epochs=1, workers=1), progress=False)
        assert seen.read_text() == "1"
        assert cv2.getNumThreads() == 2  # this process's setting back as it was
    finally:
        cv2.setNumThreads(before)
