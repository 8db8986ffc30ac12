"""A results report: one self-contained HTML page about the streams, their late fusion and their failures.

``write_report(ReportConfig(scores=[...]), "report.html")`` (the ``twostream report`` command) reads the score
files that ``twostream evaluate`` wrote, the run directories next to them (``config.json``, ``log.csv``) and
the flowprep store the runs were trained on, fuses the scores as ``twostream fuse`` does (Simonyan &
Zisserman 2014: weighted averaging of class scores), and writes one HTML file with every image inline as a
data URI: it needs no network and no other file. Sections:

1. the accuracy of each stream and of the fusion (top-1, top-5, mean class), each run's main settings;
2. per-class accuracy of each stream and of the fusion, sorted by what fusion gains over the best single
   stream, with the largest gains and losses listed first;
3. the confusion matrix of the fusion and of each stream, and the most confused class pairs;
4. the K test videos the fusion gets most wrong (lowest fused score for the true class): a strip of
   frames above their colour-coded flow with the colour key, the true class and each stream's top 3;
5. the training curves of each run, and all the runs' settings side by side.

At 101 (UCF101) or 400 (Kinetics) classes every list stays short and every long thing scrolls: the gains and
losses tables list ``listed`` classes each, the full per-class table scrolls inside a box (sortable by any
column, filterable by name), the confusion matrices switch from names to class numbers above 30 classes and
name the cell under the mouse pointer, and the confused pairs are listed by name.
"""
from __future__ import annotations

import base64
import csv
import datetime
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flowprep.store import Store, StoreError

from .errors import ConfigError
from .metrics import Scores, confusion_matrix, metrics
from .fuse import align, fuse, load_score_files

# Settings shown in the runs table; the rest of a run's config.json is folded away below it.
MAIN_SETTINGS = ("stream", "arch", "base_width", "input_size", "num_frames", "stride", "epochs", "batch_size", "lr",
                 "optimizer", "schedule", "dropout", "bn", "samples_per_video", "pretrained", "split", "seed")
# Tiles of the worst videos' strips are scaled to about this many pixels on their short side.
STRIP_SIDE = 128


@dataclass
class ReportConfig:
    """What goes into a report.

    Attributes:
        scores: score files of the streams (``twostream evaluate -o``), two or more for a fusion.
        runs: the run directory of each score file (``config.json``, ``log.csv``), or None; by default the
            score file's own directory when it holds either file (the demo's layout, ``RUN/scores.npz``).
        store: the flowprep store of the test videos; by default the one recorded in the runs' ``config.json``.
        weights: fusion weights, one per score file (default: equal).
        worst: how many of the worst test videos to show.
        strip_frames: frames in each worst video's strip.
        listed: length of the short lists (largest gains and losses, most confused pairs).
        title: the page's title.
    """

    scores: list[str]
    runs: list[str | None] | None = None
    store: str | None = None
    weights: list[float] | None = None
    worst: int = 8
    strip_frames: int = 5
    listed: int = 15
    title: str = "twostream results"

    def __post_init__(self):
        if not self.scores:
            raise ConfigError("a report needs at least one score file")
        if self.runs is not None and len(self.runs) != len(self.scores):
            raise ConfigError(f"{len(self.runs)} run directories for {len(self.scores)} score files")
        if self.worst < 0 or self.strip_frames < 1 or self.listed < 1:
            raise ConfigError(f"worst must be >= 0, strip_frames and listed >= 1; got {self.worst}, "
                             f"{self.strip_frames}, {self.listed}")


@dataclass
class Run:
    """What a run directory tells: its settings (``config.json``) and its per-epoch log (``log.csv``)."""

    directory: Path | None = None
    config: dict = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)


def load_run(directory) -> Run:
    """Read a run directory written by ``twostream train``; missing files give an empty part."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"{d}: run directory not found")
    config = {}
    if (d / "config.json").is_file():
        try:
            config = json.loads((d / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{d / 'config.json'}: not a readable run config ({e})") from None
    log = []
    if (d / "log.csv").is_file():
        with open(d / "log.csv", newline="") as f:
            log = list(csv.DictReader(f))
        need = {"epoch", "train_loss", "train_acc", "val_video_acc"}
        if log and not need <= set(log[0]):
            raise ConfigError(f"{d / 'log.csv'}: not a twostream training log (columns {sorted(need)} missing)")
    return Run(d, config, log)


def per_class_accuracy(scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    """(C,) top-1 accuracy of each class (NaN where the class has no test video) and (C,) test videos per class."""
    c = len(scores.classes)
    counts = np.bincount(scores.labels, minlength=c)
    hits = np.bincount(scores.labels, weights=scores.scores.argmax(1) == scores.labels, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan), counts


def class_rows(streams: list[Scores], fused: Scores, names: list[str]) -> list[dict]:
    """One row per class with test videos: ``{"label", "class", "videos", "acc": {name: acc}, "fused", "gain"}``.

    ``gain`` is the fused accuracy minus the best single stream's; rows are sorted by gain, largest first
    (ties by class name), so the classes fusion helps most come first and those it hurts most come last.
    """
    accs = [per_class_accuracy(s)[0] for s in streams]
    fused_acc, counts = per_class_accuracy(fused)
    rows = []
    for c in np.nonzero(counts)[0]:
        best = max(a[c] for a in accs)
        rows.append({"label": int(c), "class": str(fused.classes[c]), "videos": int(counts[c]),
                     "acc": {n: float(a[c]) for n, a in zip(names, accs)}, "fused": float(fused_acc[c]),
                     "gain": float(fused_acc[c] - best)})
    rows.sort(key=lambda r: (-r["gain"], r["class"]))
    return rows


def confused_pairs(cm: np.ndarray, classes, k: int) -> list[dict]:
    """The k largest off-diagonal cells: ``{"true", "predicted", "count", "fraction"}`` (of the true class's videos)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    totals = cm.sum(1)
    out = []
    for i, j in zip(*np.unravel_index(flat, cm.shape)):
        if off[i, j] == 0:
            break
        out.append({"true": str(classes[i]), "predicted": str(classes[j]), "count": int(off[i, j]),
                    "fraction": float(off[i, j] / totals[i])})
    return out


def top_classes(row: np.ndarray, classes, k: int = 3) -> list[tuple[str, float]]:
    """The k best-scored classes of one video's scores, best first: [(class, score)]."""
    order = np.argsort(-row, kind="stable")[:k]
    return [(str(classes[i]), float(row[i])) for i in order]


def worst_videos(streams: list[Scores], fused: Scores, names: list[str], k: int) -> list[dict]:
    """The k videos with the lowest fused score for their true class, worst first.

    Each: ``{"video", "class", "true_score", "rank" (of the true class in the fused scores, 1 = top),
    "top3": {name or "fused": [(class, score)]}, "true": {name or "fused": (rank, score) of the true class}}``.
    """
    true = fused.scores[np.arange(len(fused.labels)), fused.labels]
    out = []
    for i in np.argsort(true, kind="stable")[:k]:
        y = fused.labels[i]
        rows = {**{n: s.scores[i] for n, s in zip(names, streams)}, "fused": fused.scores[i]}
        out.append({"video": str(fused.video_ids[i]), "class": str(fused.classes[y]), "true_score": float(true[i]),
                    "rank": int((fused.scores[i] > true[i]).sum()) + 1,
                    "top3": {n: top_classes(r, fused.classes) for n, r in rows.items()},
                    "true": {n: (int((r > r[y]).sum()) + 1, float(r[y])) for n, r in rows.items()}})
    return out


@dataclass
class ReportData:
    """Everything a report shows, loaded and checked: streams aligned to the first one's video order."""

    names: list[str]
    paths: list[str]
    streams: list[Scores]
    fused: Scores
    weights: list[float]
    runs: list[Run]
    store: Store | None
    store_note: str


def _run_dirs(cfg: ReportConfig) -> list[Path | None]:
    if cfg.runs is not None:
        return [Path(r) if r else None for r in cfg.runs]
    return [Path(p).parent if (Path(p).parent / "config.json").is_file() or (Path(p).parent / "log.csv").is_file()
            else None for p in cfg.scores]


def _open_store(cfg: ReportConfig, runs: list[Run], classes) -> tuple[Store | None, str]:
    """The store given, or the first one a run recorded that is there; None and the reason when there is none."""
    candidates = [cfg.store] if cfg.store else [r.config["store"] for r in runs if r.config.get("store")]
    for path in candidates:
        if not cfg.store and not Path(path).is_dir():
            continue
        try:
            store = Store(path)
        except StoreError as e:
            raise ConfigError(f"{path}: cannot read the store for the report ({e})") from None
        if list(store.classes) != [str(c) for c in classes]:
            raise ConfigError(f"{path}: the store's classes differ from those of the score files")
        return store, ""
    if candidates:
        return None, f"the store recorded in the runs ({candidates[0]}) is not there; pass --store STORE"
    return None, "no store given and none recorded in a run's config.json; pass --store STORE"


def load_report_data(cfg: ReportConfig) -> ReportData:
    """Read and check the score files, run directories and store; fuse the streams."""
    names, sets = load_score_files(cfg.scores)
    fused = fuse(sets, cfg.weights, [f"{n} ({p})" for n, p in zip(names, cfg.scores)])
    # fuse() checked that the sets agree; align them to the first one's order for row-by-row comparison.
    streams = [sets[0]] + [align(sets[0], s) for s in sets[1:]]
    runs = [load_run(d) if d else Run() for d in _run_dirs(cfg)]
    store, note = _open_store(cfg, runs, fused.classes)
    weights = list(cfg.weights) if cfg.weights is not None else [1.0] * len(sets)
    return ReportData(names, [str(p) for p in cfg.scores], streams, fused, weights, runs, store, note)


# --- HTML --------------------------------------------------------------------------------------------------------

def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _json_script(obj) -> str:
    """JSON that is safe inside a <script> element."""
    return json.dumps(obj).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _bar(x: float, colour: str) -> str:
    """A table cell whose background is a bar of length x (0..1)."""
    if x != x:
        return '<td class="num" data-value="">&ndash;</td>'
    return (f'<td class="num" data-value="{x:.6f}" style="background:linear-gradient(90deg,{colour} {100 * x:.1f}%,'
            f'transparent {100 * x:.1f}%)">{x:.3f}</td>')


def run_summary(config: dict) -> str:
    """One line of a run's main settings, e.g. ``resnet18, width 32, input 56, 8 epochs, batch 32, lr 0.02 sgd cosine``."""
    if not config:
        return "(no config.json)"
    c = config
    parts = [str(c.get("arch", "?")), f"width {c.get('base_width')}", f"input {c.get('input_size')}"]
    if c.get("num_frames"):
        parts.append(f"{c['num_frames']} frames")
    parts += [f"{c.get('epochs')} epochs", f"batch {c.get('batch_size')}",
              f"lr {c.get('lr')} {c.get('optimizer', '')} {c.get('schedule', '')}".strip(), f"dropout {c.get('dropout')}"]
    if c.get("pretrained"):
        parts.append(f"from {c['pretrained']}")
    return ", ".join(parts)


def summary_html(d: ReportData) -> str:
    rows = [(n, metrics(s.scores, s.labels), p, run_summary(r.config))
            for n, s, p, r in zip(d.names, d.streams, d.paths, d.runs)]
    weights = " : ".join(f"{w:g}" for w in d.weights)
    rows.append(("fused", metrics(d.fused.scores, d.fused.labels), "", f"late fusion, weights {weights}"))
    out = ['<table class="summary"><tr><th></th><th>top-1</th><th>top-5</th><th>mean class</th><th>run</th>'
           '<th>scores</th></tr>']
    for name, m, src, run in rows:
        cells = "".join(f'<td class="num" data-stream="{html.escape(name)}" data-metric="{k}" '
                        f'data-value="{m[k]:.9f}">{m[k]:.3f}</td>' for k in ("top1", "top5", "mean_class"))
        out.append(f'<tr class="{"fused" if name == "fused" else ""}"><th>{html.escape(name)}</th>{cells}'
                   f'<td class="run">{html.escape(run)}</td><td class="src">{html.escape(src)}</td></tr>')
    out.append("</table>")
    out.append(f'<p class="note">{len(d.fused.labels)} test videos, {len(d.fused.classes)} classes. Top-5 is 1 by '
               f'definition when there are 5 classes or fewer. Mean class: the top-1 accuracy of each class, averaged '
               f'over the classes with test videos.</p>')
    return "\n".join(out)


def settings_html(d: ReportData) -> str:
    """The runs' settings side by side; rows where the runs differ are marked."""
    if not any(r.config or r.log for r in d.runs):
        return '<p class="note">No run directory found beside the score files (config.json, log.csv): ' \
               'pass --runs to show the settings and curves.</p>'
    keys = [k for k in MAIN_SETTINGS if any(k in r.config for r in d.runs)]
    rest = sorted({k for r in d.runs for k in r.config} - set(keys))
    head = "".join(f"<th>{html.escape(n)}</th>" for n in d.names)

    def rows(ks):
        out = []
        for k in ks:
            vals = [r.config.get(k, "") for r in d.runs]
            diff = ' class="differs"' if len({json.dumps(v) for v in vals}) > 1 else ""
            out.append(f"<tr{diff}><th>{html.escape(k)}</th>" +
                       "".join(f"<td>{html.escape(str(v))}</td>" for v in vals) + "</tr>")
        return "".join(out)

    trained = "".join(f"<td>{len(r.log)}</td>" for r in d.runs)
    best = "".join(f"<td>{max((float(x['val_video_acc']) for x in r.log), default=float('nan')):.3f}</td>"
                   for r in d.runs)
    dirs = "".join(f"<td>{html.escape(str(r.directory or ''))}</td>" for r in d.runs)
    return (f'<table class="settings"><tr><th>run</th>{head}</tr><tr><th>directory</th>{dirs}</tr>{rows(keys)}'
            f'<tr><th>epochs logged</th>{trained}</tr><tr><th>best val video acc</th>{best}</tr></table>'
            f'<details><summary>all settings ({len(rest)} more)</summary><table class="settings">'
            f'<tr><th></th>{head}</tr>{rows(rest)}</table></details>'
            '<p class="note">Marked rows differ between the runs. The score files do not record which checkpoint '
            '(best.pt or last.pt) was evaluated.</p>')


def classes_html(d: ReportData, listed: int) -> str:
    rows = class_rows(d.streams, d.fused, d.names)
    cols = d.names + ["fused"]

    def table(rs, cls, tid=""):
        head = "".join(f"<th>{html.escape(n)}</th>" for n in cols)
        out = [f'<table class="{cls}"{tid}><thead><tr><th>#</th><th>class</th><th>videos</th>{head}'
               f'<th>fusion gain</th></tr></thead><tbody>']
        for r in rs:
            gain_cls = "gain" if r["gain"] > 0 else "loss" if r["gain"] < 0 else ""
            cells = "".join(_bar(r["acc"][n], "#cfe0f5") for n in d.names) + _bar(r["fused"], "#bfe3c0")
            out.append(f'<tr data-class="{html.escape(r["class"])}"><td class="num" data-value="{r["label"]}">'
                       f'{r["label"]}</td><td>{html.escape(r["class"])}</td><td class="num" data-value="{r["videos"]}">'
                       f'{r["videos"]}</td>{cells}<td class="num {gain_cls}" data-value="{r["gain"]:.6f}">'
                       f'{r["gain"]:+.3f}</td></tr>')
        out.append("</tbody></table>")
        return "".join(out)

    full = table(rows, "classes sortable", ' id="all-classes"')
    gains = [r for r in rows if r["gain"] > 0][:listed]
    losses = sorted([r for r in rows if r["gain"] < 0], key=lambda r: (r["gain"], r["class"]))[:listed]
    return (f'<p class="note">Fusion gain: the fused accuracy of a class minus that of its best single stream. '
            f'{sum(r["gain"] > 0 for r in rows)} classes gain, {sum(r["gain"] < 0 for r in rows)} lose, '
            f'{sum(r["gain"] == 0 for r in rows)} stay equal.</p>'
            f'<div class="pair"><div><h3>Largest gains ({len(gains)})</h3>'
            f'{table(gains, "classes short") if gains else "<p>none</p>"}</div>'
            f'<div><h3>Largest losses ({len(losses)})</h3>'
            f'{table(losses, "classes short") if losses else "<p>none</p>"}</div></div>'
            f'<h3>All {len(rows)} classes</h3><p class="note">Sorted by fusion gain; click a column to sort by it; '
            f'type to filter: <input id="class-filter" type="search" placeholder="class name"></p>'
            f'<div class="scroll">{full}</div>')


def confusion_html(d: ReportData, listed: int) -> str:
    from .plots import confusion_image, png_from_rgb

    n = len(d.fused.classes)
    parts, pairs = [], []
    for name, s in [("fused", d.fused)] + list(zip(d.names, d.streams)):
        cm = confusion_matrix(s.scores, s.labels, n)
        img, box = confusion_image(cm, d.fused.classes, title=name)
        cells = {f"{i},{j}": int(cm[i, j]) for i, j in zip(*np.nonzero(cm))}
        parts.append(f'<figure><img class="cm" alt="confusion matrix of {html.escape(name)}" '
                     f'src="{_data_uri(png_from_rgb(img))}" data-box="{html.escape(json.dumps(box))}" '
                     f'data-cells="{html.escape(json.dumps(cells))}" data-rows="{html.escape(json.dumps(cm.sum(1).tolist()))}">'
                     f'<figcaption class="hover"></figcaption></figure>')
        rows = "".join(f'<tr><td>{html.escape(p["true"])}</td><td>{html.escape(p["predicted"])}</td>'
                       f'<td class="num">{p["count"]}</td><td class="num">{p["fraction"]:.2f}</td></tr>'
                       for p in confused_pairs(cm, d.fused.classes, listed))
        pairs.append(f'<div><h3>{html.escape(name)}</h3><table class="pairs" data-stream="{html.escape(name)}">'
                     f'<tr><th>true</th><th>predicted as</th><th>videos</th><th>of the class</th></tr>'
                     f'{rows or "<tr><td colspan=4>no confusion</td></tr>"}</table></div>')
    return ('<p class="note">Rows: true class; columns: predicted class; colour: the square root of the fraction of '
            'the true class\'s videos (so single confusions show). Above 30 classes the axes carry class numbers (the # column of the class table); point at a '
            'cell to read its classes and count.</p>' + "".join(parts) +
            f'<h3>Most confused pairs (up to {listed})</h3><div class="pair">{"".join(pairs)}</div>')


def _strip(store: Store, vid: str, k: int) -> str:
    from flowprep.visualize import contact_sheet, default_scale

    n = store.num_frames(vid)
    idx = [int(i) for i in np.unique(np.linspace(0, n - 2, k).round())]
    frames, flows = store.frames(vid, idx), store.flow(vid, idx)
    h, w = frames.shape[1:3]
    scale = default_scale(h, w, STRIP_SIDE) if min(h, w) < STRIP_SIDE else STRIP_SIDE / min(h, w)
    sheet = contact_sheet(frames, flows, labels=[f"frame {i}" for i in idx],
                          flow_labels=[f"flow {i}>{i + 1}" for i in idx], scale=scale)
    return f'<img class="strip" alt="frames and flow of {html.escape(vid)}" src="{_data_uri(_jpeg(sheet), "image/jpeg")}">'


def worst_html(d: ReportData, k: int, strip_frames: int) -> str:
    if k == 0:
        return '<p class="note">Not asked for (--worst 0).</p>'
    out = ['<p class="note">The test videos with the lowest fused score for their true class, worst first. Each '
           'strip: frames (numbered) above their flow to the next frame, coloured as the key at its right says '
           '(hue: direction; white: still; full colour: the largest flow in the strip, in pixels on the key).</p>']
    if d.store is None:
        out.append(f'<p class="warn">Frames and flow not shown: {html.escape(d.store_note)}.</p>')
    for i, v in enumerate(worst_videos(d.streams, d.fused, d.names, k), 1):
        lists = []
        for name, top in v["top3"].items():
            items = "".join(f'<li data-class="{html.escape(c)}" class="{"hit" if c == v["class"] else ""}">'
                            f'{html.escape(c)} <span class="num">{p:.3f}</span></li>' for c, p in top)
            rank, score = v["true"][name]
            if rank > len(top):  # the true class further down: its rank and score
                items += (f'<li value="{rank}" class="hit below">{html.escape(v["class"])} '
                          f'<span class="num">{score:.3f}</span></li>')
            lists.append(f'<div><b>{html.escape(name)}</b><ol data-stream="{html.escape(name)}">{items}</ol></div>')
        strip = ""
        if d.store is not None:
            try:
                strip = _strip(d.store, v["video"], strip_frames)
            except (StoreError, OSError, ValueError) as e:
                strip = f'<p class="warn">{html.escape(str(e))}</p>'
        out.append(f'<div class="worst" data-video="{html.escape(v["video"])}" data-true="{html.escape(v["class"])}">'
                   f'<h3>{i}. {html.escape(v["video"])}</h3><p>true class <b>{html.escape(v["class"])}</b>: fused score '
                   f'{v["true_score"]:.3f}, rank {v["rank"]}</p><div class="tops">{"".join(lists)}</div>{strip}</div>')
    return "\n".join(out)


def curves_html(d: ReportData) -> str:
    from .plots import curves_figure, png_bytes

    logs = {n: r.log for n, r in zip(d.names, d.runs) if r.log}
    if not logs:
        return '<p class="note">No training log (log.csv) found in the run directories.</p>'
    return f'<img class="curves" alt="training curves" src="{_data_uri(png_bytes(curves_figure(logs)))}">'


CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1.05em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.3em 0}th,td{padding:2px 8px;border-bottom:1px solid #eee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}tr.fused th,tr.fused td{font-weight:bold}
.src,.run{color:#555;font-size:.85em}.note{color:#555;font-size:.9em}.warn{color:#a40}
tr.differs th,tr.differs td{background:#fff5d6}td.gain{color:#080;font-weight:bold}td.loss{color:#b00;font-weight:bold}
.scroll{max-height:460px;overflow:auto;border:1px solid #ddd}
.scroll thead th{position:sticky;top:0;background:#f4f4f4;cursor:pointer}
.pair{display:flex;flex-wrap:wrap;gap:2em}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}
img.cm{display:block;max-width:100%}.hover{color:#046;min-height:1.4em;max-width:800px}
.worst{margin:1em 0 2em}.tops{display:flex;gap:2em}.tops ol{margin:.2em 0;padding-left:2.4em}li.hit{color:#080;font-weight:bold}li.below{color:#b00;margin-top:.3em}
img.strip,img.curves{max-width:100%;display:block;margin-top:.4em}
"""

JS = """
const CLASSES = JSON.parse(document.getElementById('classes').textContent);
document.querySelectorAll('table.sortable').forEach(table => {
  table.querySelectorAll('thead th').forEach((th, col) => th.addEventListener('click', () => {
    const body = table.tBodies[0], rows = Array.from(body.rows);
    const key = r => { const c = r.cells[col]; return c.dataset.value !== undefined && c.dataset.value !== ''
      ? parseFloat(c.dataset.value) : c.textContent; };
    const down = th.dataset.order !== 'down'; th.dataset.order = down ? 'down' : 'up';
    rows.sort((a, b) => { const x = key(a), y = key(b); const o = x < y ? -1 : x > y ? 1 : 0; return down ? -o : o; });
    rows.forEach(r => body.appendChild(r));
  }));
});
const filter = document.getElementById('class-filter');
if (filter) filter.addEventListener('input', () => {
  const q = filter.value.toLowerCase();
  document.querySelectorAll('#all-classes tbody tr').forEach(r => {
    r.style.display = r.dataset.class.toLowerCase().includes(q) ? '' : 'none'; });
});
document.querySelectorAll('img.cm').forEach(img => {
  const box = JSON.parse(img.dataset.box), cells = JSON.parse(img.dataset.cells), totals = JSON.parse(img.dataset.rows);
  const out = img.closest('figure').querySelector('.hover'), n = CLASSES.length;
  img.addEventListener('mousemove', e => {
    const r = img.getBoundingClientRect(), sx = img.naturalWidth / r.width, sy = img.naturalHeight / r.height;
    const x = (e.clientX - r.left) * sx, y = (e.clientY - r.top) * sy;
    const j = Math.floor((x - box[0]) / (box[2] - box[0]) * n), i = Math.floor((y - box[1]) / (box[3] - box[1]) * n);
    if (i < 0 || j < 0 || i >= n || j >= n) { out.textContent = ''; return; }
    const c = cells[i + ',' + j] || 0;
    out.textContent = `true ${i} ${CLASSES[i]} \\u2192 predicted ${j} ${CLASSES[j]}: ${c} of ${totals[i]} videos`;
  });
  img.addEventListener('mouseleave', () => { out.textContent = ''; });
});
"""


def render_html(d: ReportData, cfg: ReportConfig) -> str:
    """The whole page as one string."""
    sections = [("Accuracy", summary_html(d)), ("Per-class accuracy", classes_html(d, cfg.listed)),
                ("Confusion", confusion_html(d, cfg.listed)),
                (f"Worst {min(cfg.worst, len(d.fused.labels))} test videos", worst_html(d, cfg.worst, cfg.strip_frames)),
                ("Training curves", curves_html(d)), ("Run settings", settings_html(d))]
    body = "\n".join(f'<section id="s{i}"><h2>{t}</h2>\n{h}</section>' for i, (t, h) in enumerate(sections))
    made = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(cfg.title)}</title>'
            f'<link rel="icon" href="data:,"><style>{CSS}</style></head><body><h1>{html.escape(cfg.title)}</h1>'
            f'<p class="note">Made by twostream report on {made} from {", ".join(map(html.escape, d.paths))}.</p>'
            f'{body}<script type="application/json" id="classes">{_json_script([str(c) for c in d.fused.classes])}'
            f'</script><script>{JS}</script></body></html>')


def write_report(cfg: ReportConfig, out) -> dict:
    """Build the report and write it to ``out`` (.html). Returns the table: ``{"streams": {...}, "fused": {...}}``
    plus ``"store_shown"`` (whether frames and flow are shown) and ``"store"`` (the store, or why there is none)."""
    d = load_report_data(cfg)
    page = render_html(d, cfg)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"streams": {n: metrics(s.scores, s.labels) for n, s in zip(d.names, d.streams)},
            "fused": metrics(d.fused.scores, d.fused.labels), "weights": d.weights,
            "store_shown": d.store is not None,
            "store": str(d.store.root) if d.store is not None else d.store_note}
