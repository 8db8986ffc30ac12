"""The CLIs follow the dataclasses: --config repeats a run; user errors are one line, bugs keep their traceback."""
import json
import os
import subprocess
import sys

import pytest
import torch

import twostream.train as train_mod
from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from twostream.checkpoint import load_checkpoint
from twostream.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from conftest import make_dataset

    root = make_dataset(tmp_path_factory.mktemp("ds") / "ds", per_class=2, num_frames=8, size=(40, 32))
    out = tmp_path_factory.mktemp("store") / "store"
    assert extract_dataset(root, out, ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)), jobs=1,
                           progress=False).ok
    return out


TRAIN = ["--stream", "temporal", "--num-frames", "3", "--input-size", "24", "--width", "8", "--epochs", "2",
         "--batch-size", "2", "--lr", "0.05", "--workers", "0", "--device", "cpu", "--val-clips", "1", "--seed", "3",
         "--no-mean-subtraction", "--quiet"]


def test_config_file_repeats_a_run(store, tmp_path):
    assert main(["train", "--store", str(store), "-o", str(tmp_path / "a"), *TRAIN]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["base_width"] == 8 and cfg["subtract_mean"] is False and cfg["out_dir"] == str(tmp_path / "a")
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "-o", str(tmp_path / "b"), "--quiet"]) == 0
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert b["config"] == {**a["config"], "out_dir": str(tmp_path / "b")}
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    # an option given on the command line overrides the file
    assert main(["train", "--config", str(tmp_path / "a" / "config.json"), "-o", str(tmp_path / "c"), "--epochs",
                 "1", "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "c" / "last.pt")["config"]["epochs"] == 1


def test_user_errors_are_one_line(store, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"store": str(store), "out_dir": str(tmp_path / "r"), "learning_rate": 1}))
    for argv, says in [(["train", "--config", str(bad)], "unknown training setting(s) learning_rate"),
                       (["train", "-o", str(tmp_path / "r")], "--store"),
                       (["train", "--store", str(store), "-o", str(tmp_path / "r"), "--dropout", "1.5"], "dropout"),
                       (["fuse", str(tmp_path / "none.npz")], "none.npz")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_a_bug_keeps_its_traceback(store, tmp_path, monkeypatch):
    def broken(*args, **kw):
        raise ValueError("injected bug in the training loop")

    monkeypatch.setattr(train_mod, "train_one_epoch", broken)
    with pytest.raises(ValueError, match="injected bug"):  # not turned into a one-line usage error
        main(["train", "--store", str(store), "-o", str(tmp_path / "r"), *TRAIN])


def test_flowprep_bug_keeps_its_traceback_and_user_error_is_one_line(tmp_path, monkeypatch, capsys):
    import flowprep.extract
    from conftest import make_dataset
    from flowprep.cli import main as flowprep_main

    root = make_dataset(tmp_path / "ds", per_class=1, num_frames=4, size=(32, 32))
    with pytest.raises(SystemExit, match="2"):  # argparse's own errors: one line too (flowprep.options.Parser)
        flowprep_main(["extract", str(root), "-o", str(tmp_path / "st"), "--mapping", "nope"])
    assert capsys.readouterr().err.count("\n") == 1
    assert flowprep_main(["extract", str(root), "-o", str(tmp_path / "st"), "--bound", "-1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bound must be positive" in err and len(err.strip().splitlines()) == 1

    def broken(*args, **kw):
        raise ValueError("injected bug")

    monkeypatch.setattr(flowprep.extract, "extract_dataset", broken)
    with pytest.raises(ValueError, match="injected bug"):
        flowprep_main(["extract", str(root), "-o", str(tmp_path / "st2"), "--quiet"])


def test_the_twostream_command_starts_openmp_with_passive_waiting(tmp_path):
    """Before torch is imported, main() sets OMP_WAIT_POLICY=PASSIVE unless the environment sets it; the
    runtime reads it then (spinning threads starve the DataLoader's workers on a busy machine)."""
    probe = ("import os, sys; from twostream.cli import main; rc = main(['models']); "
             "print('SEEN', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, rc)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert "SEEN PASSIVE True 0" in out
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True).stdout
    assert "SEEN ACTIVE True 0" in out  # the user's setting stands
    late = ("import os, torch; from twostream.cli import openmp_defaults; openmp_defaults(); "
            "print('SEEN', os.environ.get('OMP_WAIT_POLICY'))")
    out = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True, check=True).stdout
    assert "SEEN None" in out  # too late to matter: nothing set
