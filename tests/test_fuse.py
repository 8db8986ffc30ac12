"""Late fusion: the arithmetic and the refusals."""
import json

import cv2
import numpy as np
import pytest

from twostream.metrics import Scores, mean_class_accuracy, metrics, topk_accuracy
from twostream.fuse import FusionError, format_table, fuse

CLASSES = np.array(["a", "b", "c"])


def _scores(rows, ids=("v1", "v2", "v3"), labels=(0, 1, 2), classes=CLASSES, name="s"):
    return Scores(np.asarray(rows, np.float32), np.asarray(labels), np.asarray(ids), classes, name)


def test_weighted_average_and_alignment_by_video_id():
    a = _scores([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    # b lists the same videos in another order
    b = _scores([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], ids=("v3", "v1", "v2"), labels=(2, 0, 1))
    f = fuse([a, b], [1.0, 3.0])
    np.testing.assert_allclose(f.scores[0], (np.array([0.6, 0.4, 0]) + 3 * np.array([1, 0, 0])) / 4)
    np.testing.assert_allclose(f.scores[2], (np.array([0.2, 0.3, 0.5]) + 3 * np.array([0, 0, 1])) / 4)
    assert list(f.video_ids) == ["v1", "v2", "v3"]


def test_fusion_fixes_what_each_stream_confuses():
    labels = (0, 1, 2)
    # stream A cannot tell 0 from 1, stream B cannot tell 1 from 2
    a = _scores([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], labels=labels)
    b = _scores([[1, 0, 0], [0, 0.51, 0.49], [0, 0.51, 0.49]], labels=labels)
    assert metrics(a.scores, a.labels)["top1"] < 1 and metrics(b.scores, b.labels)["top1"] < 1
    assert metrics(fuse([a, b]).scores, a.labels)["top1"] == 1.0


def test_metrics():
    s = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1], [0.3, 0.3, 0.4], [0.9, 0.02, 0.08]])
    y = np.array([2, 0, 2, 1])
    assert topk_accuracy(s, y, 1) == 0.5
    assert topk_accuracy(s, y, 2) == 0.75
    assert topk_accuracy(s, y, 5) == 1.0  # k capped at the number of classes
    assert mean_class_accuracy(s, y) == pytest.approx((1 + 0.5 + 0) / 3)


@pytest.mark.parametrize("other, match", [
    (_scores([[1, 0, 0]] * 3, classes=np.array(["a", "c", "b"])), "class list"),
    (_scores([[1, 0, 0]] * 3, ids=("v1", "v2", "v9")), "videos differ"),
    (_scores([[1, 0, 0]] * 3, labels=(0, 1, 1)), "labels disagree"),
])
def test_refuses_mismatched_score_sets(other, match):
    a = _scores([[1, 0, 0]] * 3)
    with pytest.raises(FusionError, match=match):
        fuse([a, other])


def test_refuses_bad_weights():
    a = _scores([[1, 0, 0]] * 3)
    with pytest.raises(FusionError, match="weights"):
        fuse([a, a], [1.0])
    with pytest.raises(FusionError, match="non-negative"):
        fuse([a, a], [0.0, 0.0])


def test_fuse_files_report_and_cli(tmp_path, capsys):
    from twostream.cli import main

    a = _scores([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], name="spatial")
    b = _scores([[1, 0, 0], [0, 0.51, 0.49], [0, 0.51, 0.49]], name="temporal")
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    rc = main(["fuse", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--report", str(tmp_path / "r.json")])
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["streams"]) == {"spatial", "temporal"}
    assert report["fused"]["top1"] == 1.0 and report["streams"]["spatial"]["top1"] < 1.0
    out = capsys.readouterr().out
    assert "fused" in out and "fused confusion matrix" in out
    png = cv2.imread(str(tmp_path / "fused_confusion.png"))  # beside --report: the fused matrix, with the names
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100
    assert format_table(report).splitlines()[-1].startswith("fused")
    # a mismatched file: one clear line, exit 2
    _scores([[1, 0, 0]] * 2, ids=("v1", "v2"), labels=(0, 1)).save(tmp_path / "c.npz")
    assert main(["fuse", str(tmp_path / "a.npz"), str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err
    assert "videos differ" in err and "Traceback" not in err
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["fuse", str(tmp_path / "a.npz"), str(tmp_path / "junk.npz")]) == 2
    assert "not a twostream score file" in capsys.readouterr().err
