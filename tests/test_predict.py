"""Prediction prepares a raw video as the training store holds its videos: a video that is in the store gets the
scores evaluate gives it, with the same clips and crops (JPEG frames and JPEG flow, both round-tripped)."""
import numpy as np
import pytest

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.store import Store
from flowprep.unit import prepare_video
from twostream.evaluate import evaluate
from twostream.metrics import Scores
from twostream.predict import predict
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
