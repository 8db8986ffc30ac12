"""Direction-sensitive classes: --no-flip and flip label maps, in training, evaluation and the checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_dataset
from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from twostream.data import ClipSpec, TrainClips, eval_views, read_flip_pairs, unmirror_scores
from twostream.evaluate import evaluate
from twostream.inference import load_model
from twostream.train import TrainConfig, train

CLASSES = ["Down", "Left", "Right", "Up"]


class RightwardStore:
    """A store-like source: every video's flow is +1.5 px in x; labels by id."""

    root = Path("mem")
    config = ExtractConfig(method="farneback", bound=20.0).to_json()  # the settings a store.json holds

    def __init__(self, labels: dict[str, int]):
        self.labels = labels

    def num_frames(self, vid):
        return 6

    def label(self, vid):
        return self.labels[vid]

    def flow(self, vid, idx):
        f = np.zeros((len(list(idx)), 12, 12, 2), np.float32)
        f[..., 0] = 1.5
        return f


def _x_sign(x: torch.Tensor) -> float:  # (2L, H, W) interleaved x, y: the mean of the x channels
    return float(x[0::2].mean())


def test_flip_map_swaps_the_label_exactly_when_the_clip_is_flipped():
    store = RightwardStore({"a": 2, "b": 0})  # a "Right" video and a "Down" one
    spec = ClipSpec("temporal", 2, input_size=8, subtract_mean=False, flip_pairs=((1, 2),))
    ds = TrainClips(store, ["a", "b"], spec, samples_per_video=20, seed=3)
    seen = set()
    for i in range(len(ds)):
        x, label = ds[i]
        flipped = _x_sign(x) < 0
        seen.add(flipped)
        if i % 2 == 0:  # video a: a flipped "Right" clip is a "Left" one
            assert label == (1 if flipped else 2)
        else:  # "Down" is in no pair
            assert label == 0
    assert seen == {True, False}


def test_no_flip_never_mirrors_in_training_or_testing():
    store = RightwardStore({"a": 2})
    spec = ClipSpec("temporal", 2, input_size=8, subtract_mean=False, flip=False)
    ds = TrainClips(store, ["a"], spec, samples_per_video=30, seed=1)
    assert all(_x_sign(ds[i][0]) > 0 and ds[i][1] == 2 for i in range(len(ds)))
    views = eval_views(store, "a", spec, num_clips=2, num_crops=10, bound=20.0)
    assert views.shape[0] == 2 * 5 and all(_x_sign(v) > 0 for v in views)
    flipping = ClipSpec("temporal", 2, input_size=8, subtract_mean=False)
    views = eval_views(store, "a", flipping, num_clips=2, num_crops=10, bound=20.0)
    assert [_x_sign(v) > 0 for v in views[:10]] == [True] * 5 + [False] * 5


def test_mirrored_views_have_their_pair_scores_swapped_back():
    spec = ClipSpec("temporal", 2, flip_pairs=((1, 2),))
    scores = torch.arange(20 * 4, dtype=torch.float32).reshape(20, 4)  # 2 clips x 10 crops, 4 classes
    out = unmirror_scores(scores, spec, 10)
    for v in range(20):
        want = scores[v][[0, 2, 1, 3]] if v % 10 >= 5 else scores[v]
        assert torch.equal(out[v], want)
    assert torch.equal(unmirror_scores(scores[:10], spec, 5), scores[:10])


def test_flip_map_file(tmp_path):
    f = tmp_path / "flip.txt"
    f.write_text("# pairs that swap\nLeft Right\n")
    assert read_flip_pairs(f, CLASSES) == ((1, 2),)
    f.write_text("Pan left\tPan right\n")
    assert read_flip_pairs(f, ["Pan left", "Pan right"]) == ((0, 1),)
    for text, message in (("Left Sideways\n", "line 1: unknown class 'Sideways'"),
                          ("Left Right\nUp Left\n", "line 2: class 'Left' is already paired"),
                          ("Left Right Up\n", "line 1: expected two classes")):
        f.write_text(text)
        with pytest.raises(ValueError, match=message):
            read_flip_pairs(f, CLASSES)
    with pytest.raises(ValueError, match="need flip=True"):
        ClipSpec("temporal", flip=False, flip_pairs=((0, 1),))
    with pytest.raises(ValueError, match="flips off"):
        TrainConfig(store="s", out_dir="o", flip=False, flip_map=str(f))


@pytest.fixture(scope="module")
def lr_store(tmp_path_factory):
    base = tmp_path_factory.mktemp("lr")
    root = make_dataset(base / "ds", classes={"Left": (-2, 0), "Right": (2, 0)}, per_class=2, num_frames=8,
                        size=(32, 32))
    assert extract_dataset(root, base / "store", ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                           jobs=1, progress=False).ok
    return base / "store"


def test_no_flip_is_recorded_and_evaluation_drops_mirrored_views(lr_store, tmp_path):
    cfg = TrainConfig(store=str(lr_store), out_dir=str(tmp_path / "run"), stream="temporal", num_frames=2,
                      input_size=16, epochs=1, batch_size=4, base_width=8, workers=0, device="cpu", val_clips=1,
                      flip=False)
    train(cfg, progress=False)
    _, ck = load_model(tmp_path / "run" / "last.pt", torch.device("cpu"))
    ckpt, spec = ck.state, ck.spec
    assert spec.flip is False and ckpt["config"]["flip"] is False
    m = evaluate(tmp_path / "run" / "last.pt", lr_store, tmp_path / "s.npz", num_clips=2, num_crops=10, workers=0,
                 device="cpu", progress=False)
    assert m["crops"] == 5
    f = tmp_path / "flip.txt"
    f.write_text("Left Right\n")
    cfg = TrainConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "run2"), "flip": True, "flip_map": str(f)})
    train(cfg, progress=False)
    spec = load_model(tmp_path / "run2" / "last.pt", torch.device("cpu"))[1].spec
    assert spec.flip and spec.flip_pairs == ((0, 1),)
