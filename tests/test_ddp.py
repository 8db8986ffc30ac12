"""torchrun with 2 CPU processes (gloo) equals one process: same weights, same evaluation scores."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from twostream.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds", per_class=4, num_frames=12, size=(40, 32))
    out = tmp_path_factory.mktemp("store") / "store"
    assert extract_dataset(root, out, ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                           jobs=1, progress=False).ok
    return out


def _run(nproc, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        cmd = [sys.executable, "-m", "twostream", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "twostream", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_two_processes_train_and_evaluate_like_one(store, tmp_path):
    # frozen BN and no dropout: on the CPU each process would otherwise keep its own batch statistics
    common = ["--store", str(store), "--stream", "temporal", "--num-frames", "4", "--input-size", "24",
              "--width", "8", "--epochs", "2", "--batch-size", "4", "--lr", "0.05", "--samples-per-video", "2",
              "--workers", "0", "--device", "cpu", "--bn", "frozen", "--dropout", "0", "--quiet", "--val-clips", "2"]
    _run(1, "train", *common, "-o", str(tmp_path / "one"))
    out = _run(2, "train", *common, "-o", str(tmp_path / "two"))
    assert out.count("trained temporal") == 1  # rank 0 alone reports
    one = load_checkpoint(tmp_path / "one" / "last.pt")
    two = load_checkpoint(tmp_path / "two" / "last.pt")
    assert two["meta"]["world_size"] == 2 and one["meta"]["world_size"] == 1
    for k, v in one["model"].items():
        torch.testing.assert_close(two["model"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    # both logs hold 2 epochs with the same training loss (summed over the ranks) and validation accuracy
    rows = [[r.split(",") for r in (tmp_path / d / "log.csv").read_text().splitlines()[1:]] for d in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 2
    for r1, r2 in zip(*rows):
        assert float(r1[2]) == pytest.approx(float(r2[2]), rel=1e-4)  # train_loss
        assert r1[4:6] == r2[4:6]  # val accuracies

    ev = ["evaluate", "--checkpoint", str(tmp_path / "one" / "last.pt"), "--store", str(store), "--clips", "3",
          "--crops", "10", "--workers", "0", "--device", "cpu", "--quiet"]
    _run(1, *ev, "-o", str(tmp_path / "s1.npz"))
    _run(2, *ev, "-o", str(tmp_path / "s2.npz"))
    a, b = np.load(tmp_path / "s1.npz"), np.load(tmp_path / "s2.npz")
    assert list(a["video_ids"]) == list(b["video_ids"])
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a["labels"], b["labels"])
