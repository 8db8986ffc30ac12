"""Prediction prepares a raw video as the training store holds its videos: a video that is in the store gets the
scores evaluate gives it, with the same clips and crops (JPEG frames and JPEG flow, both round-tripped)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from flowprep.decode import DecodeConfig, read_video
from flowprep.errors import ConfigError as FlowprepConfigError
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.store import Store
from flowprep.unit import prepare_frames, prepare_video
from twostream.evaluate import evaluate
from twostream.metrics import Scores
from twostream.cli import main
from twostream.predict import Predictor, predict
from twostream.train import TrainConfig, train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import make_dataset

    tmp = tmp_path_factory.mktemp("predict")
    root = make_dataset(tmp / "ds", per_class=2, num_frames=10, size=(40, 32))
    store = tmp / "store"
    cfg = ExtractConfig(method="dis", decode=DecodeConfig(short_side=None), jpeg_quality=60)
    assert extract_dataset(root, store, cfg, jobs=1, progress=False).ok
    for stream in ("spatial", "temporal"):
        train(TrainConfig(store=str(store), out_dir=str(tmp / stream), stream=stream, num_frames=None if stream ==
                          "spatial" else 3, input_size=24, base_width=8, epochs=1, batch_size=4, workers=0,
                          device="cpu", val_clips=1), progress=False)
    return root, store, tmp


def test_prepare_video_equals_what_the_store_reads(runs):
    root, store, _ = runs
    st = Store(store)
    vid = st.video_ids()[0]
    p = prepare_video(root / vid, ExtractConfig.from_json(st.config))
    n = st.num_frames(vid)
    assert np.array_equal(p.frames, st.frames(vid, range(n)))
    assert np.array_equal(p.flow, st.flow(vid, range(n - 1)))


def test_predict_on_a_stored_video_equals_evaluate(runs):
    root, store, tmp = runs
    for stream in ("spatial", "temporal"):
        evaluate(tmp / stream / "last.pt", store, tmp / f"{stream}.npz", num_clips=2, num_crops=10, workers=0,
                 device="cpu", progress=False)
        ev = Scores.load(tmp / f"{stream}.npz")
        for i, vid in enumerate(map(str, ev.video_ids)):
            r = predict(root / vid, **{stream: tmp / stream / "last.pt"}, num_clips=2, num_crops=10,
                        top=len(ev.classes), device="cpu")
            got = {t["class"]: t["score"] for t in r["streams"][stream]}
            want = dict(zip(map(str, ev.classes), ev.scores[i].tolist()))
            assert got.keys() == want.keys()
            np.testing.assert_allclose([got[c] for c in want], list(want.values()), rtol=0, atol=1e-6)


def test_predictor_loads_once_and_equals_evaluate_on_every_stored_video(runs, monkeypatch):
    import twostream.predict as predict_mod

    root, store, tmp = runs
    loads = []
    real = predict_mod.load_model
    monkeypatch.setattr(predict_mod, "load_model", lambda *a, **kw: loads.append(a) or real(*a, **kw))
    p = Predictor(spatial=tmp / "spatial" / "last.pt", temporal=tmp / "temporal" / "last.pt", weights=(1, 2),
                  num_clips=2, num_crops=10, device="cpu")
    want = {}
    for stream in ("spatial", "temporal"):
        evaluate(tmp / stream / "last.pt", store, tmp / f"{stream}_all.npz", num_clips=2, num_crops=10, workers=0,
                 device="cpu", progress=False)
        want[stream] = Scores.load(tmp / f"{stream}_all.npz")
    ids = list(map(str, want["spatial"].video_ids))
    results = p.predict_many([root / v for v in ids], progress=False)
    assert len(loads) == 2  # two checkpoints, loaded once for all the videos
    for i, r in enumerate(results):
        assert not r.error and r.classes == list(map(str, want["spatial"].classes))
        for stream in ("spatial", "temporal"):
            np.testing.assert_allclose(r.streams[stream], want[stream].scores[i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(r.scores, (want["spatial"].scores[i] + 2 * want["temporal"].scores[i]) / 3,
                                   rtol=0, atol=1e-6)
    assert set(p.seconds) == {"decode", "flow", "store", "views", "networks"} and all(p.seconds.values())


def test_frames_are_prepared_as_a_file_is(runs):
    root, store, tmp = runs
    vid = Store(store).video_ids()[0]
    raw = read_video(root / vid, DecodeConfig(short_side=None)).frames  # (T, 32, 40, 3) as the file holds them
    cfg = ExtractConfig(method="dis", decode=DecodeConfig(short_side=20), jpeg_quality=60)  # a resizing store
    a, b = prepare_frames(raw, cfg), prepare_video(root / vid, cfg)
    assert a.frames.shape[1:3] == (20, 25)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.flow, b.flow)
    p = Predictor(spatial=tmp / "spatial" / "last.pt", temporal=tmp / "temporal" / "last.pt", num_clips=2,
                  num_crops=5, device="cpu")
    f, v = p.predict_frames(raw, name="clip"), p.predict(root / vid)
    assert f.video == "clip" and np.array_equal(f.scores, v.scores)
    with pytest.raises(FlowprepConfigError, match=r"clip: expected \(T, H, W, 3\) uint8 RGB frames"):
        p.predict_frames(raw.astype(np.float32), name="clip")


def test_predict_cli_folder_with_a_bad_video_writes_csv_and_json(runs, tmp_path, capsys):
    root, store, tmp = runs
    folder = tmp_path / "new"
    folder.mkdir()
    vids = Store(store).video_ids()[:2]
    for v in vids:
        (folder / Path(v).name).write_bytes((root / v).read_bytes())
    (folder / "broken.avi").write_bytes(b"not a video")
    ck = ["--spatial", str(tmp / "spatial" / "last.pt"), "--temporal", str(tmp / "temporal" / "last.pt"),
          "--clips", "2", "--crops", "1", "--device", "cpu", "--top", "2"]
    assert main(["predict", str(folder), *ck, "-o", str(tmp_path / "out.csv")]) == 1
    out, err = capsys.readouterr()
    assert "broken.avi" in err and "predict" in err  # the failure, and the progress bar
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [Path(r["video"]).name for r in rows] == sorted(["broken.avi"] + [Path(v).name for v in vids])
    bad = next(r for r in rows if r["video"].endswith("broken.avi"))
    assert "broken.avi" in bad["error"] and bad["top1"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 2 and all(abs(sum(float(r[k]) for k in r if k.startswith("score:")) - 1) < 1e-4 for r in good)
    assert main(["predict", str(folder), *ck, "--quiet", "-o", str(tmp_path / "out.json")]) == 1
    js = json.loads((tmp_path / "out.json").read_text())
    assert [set(d) for d in js] == [{"video", "error"} if d["video"].endswith("broken.avi") else
                                    {"video", "top", "streams"} for d in js]
    assert {d["video"]: d["top"][0]["class"] for d in js if "top" in d} == {r["video"]: r["top1"] for r in good}
