"""The results report: its tables are right, and it works in a real headless browser (chromium) at 3 and 101
classes: no console error, no request off the machine, every image decoded, the numbers those of the score files."""
from __future__ import annotations

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

from conftest import make_dataset
from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.store import Store
from headless import Chromium, check_report_page
from twostream.cli import main
from twostream.evaluate import Scores
from twostream.report import ReportConfig, class_rows, confused_pairs, worst_videos, write_report
from twostream.train import TrainConfig


def synthetic_scores(classes, labels, ids, strength, seed, name) -> Scores:
    """Softmax scores whose true-class logit gets ``strength[c]`` extra for class c: stronger, more often right."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(labels), len(classes)))
    logits[np.arange(len(labels)), labels] += np.asarray(strength)[labels]
    p = np.exp(logits - logits.max(1, keepdims=True))
    return Scores((p / p.sum(1, keepdims=True)).astype(np.float32), np.asarray(labels), np.asarray(ids),
                  np.asarray(classes), name)


def fake_run(directory, store, stream, epochs=3) -> None:
    """A run directory as 'twostream train' leaves it: config.json and log.csv (values made up, format real)."""
    directory.mkdir(parents=True)
    cfg = TrainConfig(store=str(store), out_dir=str(directory), stream=stream, epochs=epochs, input_size=32)
    (directory / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    with open(directory / "log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "lr", "train_loss", "train_acc", "val_clip_acc", "val_video_acc",
                               "clips_per_s", "seconds"])
        w.writeheader()
        for e in range(epochs):
            w.writerow({"epoch": e, "lr": 0.01, "train_loss": 2.0 / (e + 1), "train_acc": 0.3 + 0.2 * e,
                        "val_clip_acc": 0.25 + 0.1 * e, "val_video_acc": 0.3 + 0.1 * e, "clips_per_s": 100,
                        "seconds": 1.0})


@pytest.fixture(scope="module")
def browser():
    with Chromium() as b:
        yield b


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 3-class store (4 videos each) with two streams' score files in run directories, as the demo lays them out."""
    base = tmp_path_factory.mktemp("report")
    root = make_dataset(base / "ds", classes={"Down": (0, 2), "Left": (-2, 0), "Right": (2, 0)}, per_class=4,
                        num_frames=6, size=(48, 40))
    store = base / "store"
    assert extract_dataset(root, store, ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                           jobs=1, progress=False).ok
    st = Store(store)
    ids = st.video_ids()
    labels = [st.label(v) for v in ids]
    paths = []
    # spatial strong on Down only, temporal on Left and Right: fusion gains on some classes, loses on none or few
    for stream, strength, seed in [("spatial", [3.0, 0.0, 0.5], 1), ("temporal", [0.5, 2.5, 2.5], 2)]:
        fake_run(base / stream, store, stream)
        synthetic_scores(st.classes, labels, ids, strength, seed, stream).save(base / stream / "scores.npz")
        paths.append(base / stream / "scores.npz")
    return base, store, paths


def test_tables_by_hand():
    classes = np.array(["a", "b", "c"])
    labels, ids = np.array([0, 0, 1, 2]), np.array(["v0", "v1", "v2", "v3"])
    s = Scores(np.array([[.9, .1, 0], [.2, .8, 0], [.6, .4, 0], [0, 0, 1]], np.float32), labels, ids, classes, "s")
    t = Scores(np.array([[.1, .9, 0], [.1, .9, 0], [0, 1, 0], [0, .6, .4]], np.float32), labels, ids, classes, "t")
    f = Scores((s.scores + t.scores) / 2, labels, ids, classes, "fused")
    rows = class_rows([s, t], f, ["s", "t"])
    # a: s 1/2, t 0, fused (.5,.5 -> a by argmax's first) 1/2 -> gain 0; b: s 0, t 1, fused 1 -> 0; c: s 1, t 0, fused 1
    assert [(r["class"], r["acc"]["s"], r["acc"]["t"], r["fused"], r["gain"]) for r in rows] == [
        ("a", 0.5, 0.0, 0.5, 0.0), ("b", 0.0, 1.0, 1.0, 0.0), ("c", 1.0, 0.0, 1.0, 0.0)]
    cm = np.array([[5, 3, 0], [0, 4, 1], [6, 0, 0]])
    assert confused_pairs(cm, classes, 2) == [{"true": "c", "predicted": "a", "count": 6, "fraction": 1.0},
                                              {"true": "a", "predicted": "b", "count": 3, "fraction": 0.375}]
    assert confused_pairs(np.eye(3, dtype=int), classes, 5) == []
    worst = worst_videos([s, t], f, ["s", "t"], 2)
    assert [w["video"] for w in worst] == ["v1", "v0"]  # true-class fused scores .15 and .5
    assert worst[0]["rank"] == 2 and worst[0]["top3"]["t"][0] == ("b", pytest.approx(0.9))
    assert worst[0]["true"] == {"s": (2, pytest.approx(0.2)), "t": (2, pytest.approx(0.1)),
                                "fused": (2, pytest.approx(0.15))}


def test_report_in_a_browser(small, browser, tmp_path):
    base, store, paths = small
    out = tmp_path / "report.html"
    rc = main(["report", *map(str, paths), "-o", str(out), "--worst", "4"])  # runs and store found by themselves
    assert rc == 0
    text = out.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    shot = tmp_path / "report.png"
    info = check_report_page(browser, out, paths, shot)
    # the worst videos show their frames and flow from the store: 4 strips, plus 3 confusion matrices and the curves
    assert info["images"] == 4 + 3 + 1 and info["strips"] == 4
    assert info["settings_rows"] > 5  # the runs' config.json was read
    assert shot.stat().st_size > 10_000


def test_report_at_101_classes(browser, tmp_path):
    """UCF101's class count, no store and no runs: the page says so, stays short, and the matrix can be read."""
    rng = np.random.default_rng(0)
    classes = [f"Class{i:03d}" for i in range(101)]
    labels = np.repeat(np.arange(101), 3)
    ids = [f"{classes[c]}/v{i}.avi" for i, c in enumerate(labels)]
    paths = []
    for name, seed in [("spatial", 1), ("temporal", 2)]:
        strength = rng.uniform(0, 4, 101)
        synthetic_scores(classes, labels, ids, strength, seed, name).save(tmp_path / f"{name}.npz")
        paths.append(tmp_path / f"{name}.npz")
    out = tmp_path / "r101.html"
    result = write_report(ReportConfig(scores=[str(p) for p in paths], weights=[1.0, 2.0], listed=10), out)
    assert not result["store_shown"] and "--store" in result["store"]
    info = check_report_page(browser, out, paths, tmp_path / "r101.png", weights=[1.0, 2.0])
    assert info["images"] == 3 and info["strips"] == 0
    page = info["page"]
    assert page.js("document.querySelectorAll('#all-classes tbody tr').length") == 101
    short = page.js("Array.from(document.querySelectorAll('table.short')).map(t => t.tBodies[0].rows.length)")
    assert all(n <= 10 for n in short) and sum(short) > 0
    # the full table scrolls inside its box instead of making the page 101 rows long
    assert page.js("(() => { const b = document.querySelector('#all-classes').parentElement;"
                   " return b.scrollHeight > b.clientHeight + 100 && b.clientHeight < 500; })()")
    # pointing at a cell of the fused matrix names its classes and count
    cm = np.zeros((101, 101), int)
    fused = (np.load(paths[0])["scores"] + 2 * np.load(paths[1])["scores"]) / 3
    np.add.at(cm, (labels, fused.argmax(1)), 1)
    i, j = 7, int(np.argmax(cm[7]))
    said = page.js(f"""(() => {{
        const img = document.querySelector('img.cm'), box = JSON.parse(img.dataset.box), r = img.getBoundingClientRect();
        const x = box[0] + ({j} + 0.5) * (box[2] - box[0]) / 101, y = box[1] + ({i} + 0.5) * (box[3] - box[1]) / 101;
        img.dispatchEvent(new MouseEvent('mousemove', {{clientX: r.left + x * r.width / img.naturalWidth,
                                                        clientY: r.top + y * r.height / img.naturalHeight}}));
        return img.closest("figure").querySelector(".hover").textContent; }})()""")
    assert said == f"true {i} {classes[i]} \u2192 predicted {j} {classes[j]}: {cm[i, j]} of 3 videos", said
    # sorting by a column works (click the fused column header: descending)
    page.js("document.querySelectorAll('#all-classes thead th')[5].click()")
    col = page.js("Array.from(document.querySelectorAll('#all-classes tbody tr')).map(r => parseFloat(r.cells[5].dataset.value))")
    assert col == sorted(col, reverse=True)


def test_report_bad_input(small, tmp_path, capsys):
    base, store, paths = small
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert main(["report", str(paths[0]), str(tmp_path / "junk.npz"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "junk.npz" in err and len(err.strip().splitlines()) == 1
    # a store with other classes
    other = make_dataset(tmp_path / "ds2", classes={"Up": (0, -2), "Right": (2, 0), "Zoom": (1, 1)}, per_class=1)
    assert extract_dataset(other, tmp_path / "st2", ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                           jobs=1, progress=False).ok
    assert main(["report", *map(str, paths), "--store", str(tmp_path / "st2"), "-o", str(tmp_path / "r.html")]) == 2
    assert "classes differ" in capsys.readouterr().err
    # runs whose recorded store is gone: the report is still written, and says why there are no frames
    assert main(["report", *map(str, paths), "--runs", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    assert "Frames and flow not shown" in (tmp_path / "r.html").read_text()
    assert "no frames" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()
    assert main(["report", *map(str, paths), "--runs", str(tmp_path / "x"), "-o", str(tmp_path / "r.html")]) == 2
    assert "run directories for 2 score files" in capsys.readouterr().err


def test_no_chromium_is_a_failure_that_says_how_to_install_it(monkeypatch, tmp_path):
    from headless import chromium_binary

    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no browser on it
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        chromium_binary()


def test_confusion_image_stays_readable_at_400_classes():
    """Kinetics' class count: ~800 pixels whatever the count, the box the page's hover readout uses is exact."""
    from twostream.plots import confusion_image

    for n, cell in [(6, 28), (101, 7), (400, 2)]:
        cm = np.diag(np.arange(1, n + 1))
        cm[n - 1, 0] = 5  # one confusion in the last row, first column
        img, (left, top, right, bottom) = confusion_image(cm, [f"c{i}" for i in range(n)], "t")
        assert (right - left, bottom - top) == (n * cell, n * cell) and img.shape[1] < 1000 and img.shape[0] < 1000
        # the darkest cell of the first row is its diagonal; the confused cell is coloured, its neighbour white
        assert img[top + 1, left + 1].sum() < 200  # a corner: counts are written in the middle
        assert img[bottom - 1, left].sum() < img[bottom - 1, left + cell].sum()
        assert tuple(img[top + 1, left + cell + 1]) == (247, 251, 255)
