"""Training, evaluation and prediction refuse what they must not trust: a non-finite loss or checkpoint, damaged
or crafted store files (named, in one line, also from DataLoader workers); a finished run resumes to a no-op."""
from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch

from conftest import make_dataset
from flowprep.cli import main as flowprep_main
from flowprep.store import content_digest
from twostream.checkpoint import load_checkpoint, save_checkpoint
from twostream.cli import main
from twostream.train import TrainingDiverged, check_finite_weights, train_one_epoch

VID = "Right/v_Right_g01_c01.avi"  # a training video of split 1


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds", per_class=3, num_frames=10, size=(40, 32))
    store = tmp_path_factory.mktemp("st") / "st"
    assert flowprep_main(["extract", str(root), "-o", str(store), "--method", "dis", "--short-side", "0",
                          "--jobs", "1", "--quiet"]) == 0
    return root, store


@pytest.fixture
def store(clean, tmp_path):
    shutil.copytree(clean[1], tmp_path / "st")
    return tmp_path / "st"


def _train(store, run, *extra, epochs=1):
    return ["train", "--store", str(store), "-o", str(run), "--stream", "temporal", "--num-frames", "3",
            "--input-size", "24", "--width", "8", "--epochs", str(epochs), "--batch-size", "2",
            "--samples-per-video", "2", "--workers", "0", "--device", "cpu", "--val-clips", "1", "--quiet", *extra]


def _run(argv, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_nan_loss_stops_training_without_a_checkpoint(store, tmp_path, capsys):
    run = tmp_path / "run"
    rc, out, err = _run(_train(store, run, "--lr", "1e12", epochs=3), capsys)
    assert rc == 1, err
    line = err.strip().splitlines()[-1]
    # on the CPU the count is read every batch: training stops at the first non-finite loss, before its step
    assert line.startswith("twostream: training stopped: epoch 0, batch ") and line.endswith(
        ": non-finite loss; training stopped before applying it and no checkpoint of this epoch was written "
        "(lower --lr, or check the data)"), err
    assert not (run / "last.pt").exists() and not (run / "best.pt").exists()


def _linear_run(check_every=None, bad=4, n=7):
    """A linear model (no BatchNorm, whose running statistics a NaN input would reach) trained with plain SGD on
    ``n`` batches, batch ``bad`` (1-based) holding a NaN; returns (its weights, the error message)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 2, 2, generator=g), torch.randint(0, 3, (2,), generator=g)) for _ in range(n)]
    if bad:
        batches[bad - 1][0][0, 0, 0, 0] = math.nan
    message = ""
    try:
        train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), epoch=2,
                        progress=False, check_every=check_every)
    except TrainingDiverged as e:
        message = str(e)
    return [p.detach().clone() for p in model.parameters()], message


@pytest.mark.parametrize("check_every", [None, 5], ids=["cpu-every-batch", "gpu-cadence"])
def test_training_stops_at_the_first_non_finite_loss_and_never_applies_it(check_every):
    weights, message = _linear_run(check_every)
    tail = "; training stopped before applying it and no checkpoint of this epoch was written (lower --lr, or " \
           "check the data)"
    if check_every is None:  # the CPU reads the count every batch (no sync to save): it stops at batch 4
        assert message == "epoch 2, batch 4: non-finite loss" + tail
    else:  # a GPU's cadence: read back at batch 5, the first recorded on the device; batch 5's step zeroed too
        assert message == "epoch 2, batch 4: non-finite loss (read back at batch 5; 1 non-finite by then, none " \
                          "applied)" + tail
    # the weights are those of the 3 batches before it: nothing of batch 4, or after it, was applied
    clean, none = _linear_run(check_every, bad=0, n=3)
    assert none == ""
    for w, c in zip(weights, clean):
        assert torch.equal(w, c)


def test_non_finite_weights_are_never_written(tmp_path):
    state = {"a.weight": torch.ones(3), "b.bias": torch.tensor([0.0, math.inf]), "n": torch.tensor(3)}
    with pytest.raises(TrainingDiverged, match="b.bias holds non-finite values"):
        check_finite_weights(state, "epoch 4: not written")


def test_resume_of_a_finished_run(store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(_train(store, run), capsys)[0] == 0
    before = (run / "last.pt").stat().st_mtime_ns
    rc, out, err = _run(_train(store, run, "--resume"), capsys)
    assert rc == 0, err
    assert "trained temporal resnet18: already finished before: last epoch val video acc " in out
    assert (run / "last.pt").stat().st_mtime_ns == before
    rc, out, err = _run(_train(store, run, "--resume", epochs=2), capsys)  # other settings: refused, named
    assert rc == 2 and "cannot resume with other settings: epochs was 1, now 2" in err


def test_evaluate_and_predict_refuse_a_non_finite_checkpoint(clean, store, tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(_train(store, run), capsys)[0] == 0
    ckpt = load_checkpoint(run / "last.pt")
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name][0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    message = f"twostream: error: {tmp_path / 'nan.pt'}: weight {name} holds non-finite values (a diverged run); not used"
    rc, out, err = _run(["evaluate", "--checkpoint", str(tmp_path / "nan.pt"), "--store", str(store), "-o",
                         str(tmp_path / "s.npz"), "--workers", "0", "--device", "cpu", "--clips", "1", "--crops", "1",
                         "--quiet"], capsys)
    assert rc == 2 and err.strip().splitlines() == [message] and not (tmp_path / "s.npz").exists()
    rc, out, err = _run(["predict", str(clean[0] / VID), "--temporal", str(tmp_path / "nan.pt"), "--device", "cpu",
                         "--clips", "1", "--crops", "1"], capsys)
    assert rc == 2 and err.strip().splitlines() == [message]


def _reseal(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)
        f.attrs["sha256"] = content_digest(f)


@pytest.mark.parametrize("damage", ["truncated", "bound edited", "index frames", "jpeg header"])
def test_training_refuses_a_damaged_store_in_one_line(store, tmp_path, capsys, damage):
    path = store / "videos" / (VID + ".h5")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
        expect = f"{path}: unreadable HDF5 file"
    elif damage == "bound edited":
        cfg = json.loads((store / "store.json").read_text())
        cfg["bound"] = 5.0
        (store / "store.json").write_text(json.dumps(cfg))
        expect = "made with bound 20.0, but store.json says 5.0"
    elif damage == "index frames":
        index = json.loads((store / "index.json").read_text())
        index[VID]["num_frames"] = 50
        (store / "index.json").write_text(json.dumps(index))
        expect = f"{store / 'index.json'}: video '{VID}' has num_frames 50 there, but {path} holds 10"
    else:  # every flow image declares 30000x30000: found only when a DataLoader worker decodes it
        def craft(f):
            for name in ("flow_x", "flow_y"):
                for i in range(len(f[name])):
                    b = bytearray(f[name][i].tobytes())
                    j = b.index(b"\xff\xc0")
                    b[j + 5:j + 9] = (30000).to_bytes(2, "big") * 2
                    f[name][i] = np.frombuffer(bytes(b), np.uint8)
        _reseal(path, craft)
        expect = f"{path}: flow_x["
    run = tmp_path / "run"
    rc, out, err = _run(_train(store, run, "--workers", "2"), capsys)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("twostream: error: ") and expect in lines[0], err
    assert not (run / "last.pt").exists()
