"""Late fusion: weighted averaging of the class scores of several streams (Simonyan & Zisserman 2014)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .metrics import Scores, metrics


class FusionError(ConfigError):
    """Score files that cannot be fused; the message says which and why."""


def align(a: Scores, b: Scores, a_path="first", b_path="second") -> Scores:
    """``b`` reordered to ``a``'s video order; refuses other classes, other videos or other labels."""
    if list(a.classes) != list(b.classes):
        raise FusionError(f"{b_path}: its class list differs from that of {a_path} "
                          f"({len(b.classes)} vs {len(a.classes)} classes, or another order)")
    ids_a, ids_b = list(map(str, a.video_ids)), list(map(str, b.video_ids))
    if set(ids_a) != set(ids_b):
        only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
        raise FusionError(f"{b_path}: its videos differ from those of {a_path}: {len(only_a)} only in {a_path} "
                          f"(e.g. {only_a[:2]}), {len(only_b)} only in {b_path} (e.g. {only_b[:2]})")
    pos = {v: i for i, v in enumerate(ids_b)}
    order = np.array([pos[v] for v in ids_a])
    if not np.array_equal(a.labels, b.labels[order]):
        raise FusionError(f"{b_path}: labels disagree with {a_path} for the same videos")
    return Scores(b.scores[order], b.labels[order], b.video_ids[order], b.classes, b.name)


def fuse(score_sets: list[Scores], weights: list[float] | None = None, names: list[str] | None = None) -> Scores:
    """Weighted average of class scores; all sets are aligned to the first one's video order."""
    if len(score_sets) < 1:
        raise FusionError("nothing to fuse")
    weights = list(weights) if weights is not None else [1.0] * len(score_sets)
    if len(weights) != len(score_sets):
        raise FusionError(f"{len(weights)} weights for {len(score_sets)} score files")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise FusionError(f"weights must be non-negative and not all zero, got {weights}")
    names = names or [s.name for s in score_sets]
    ref = score_sets[0]
    aligned = [ref] + [align(ref, s, names[0], n) for s, n in zip(score_sets[1:], names[1:])]
    fused = sum(w * s.scores for w, s in zip(weights, aligned)) / sum(weights)
    return Scores(fused.astype(np.float32), ref.labels, ref.video_ids, ref.classes, "fused")


def load_score_files(paths: list) -> tuple[list[str], list[Scores]]:
    """Read score files; returns (a unique name for each, from its stream or file name; the Scores)."""
    sets = [Scores.load(p) for p in paths]
    return _unique_names([s.name or Path(p).stem for s, p in zip(sets, paths)]), sets


def fuse_files(paths: list, weights: list[float] | None = None, report=None, out=None, confusion=None) -> dict:
    """Fuse score files; returns (and optionally writes as JSON) ``{"streams": {...}, "fused": {...}, "weights": [...]}``.

    ``out``: also write the fused scores (.npz). ``confusion``: write the fused confusion matrix as a PNG there;
    when it is None, it goes beside ``out`` as ``<out stem>_confusion.png`` (as ``evaluate`` names its own), else
    beside ``report`` as ``fused_confusion.png``, else nowhere. The path written is ``result["confusion"]``.
    """
    names, sets = load_score_files(paths)
    fused = fuse(sets, weights, [f"{n} ({p})" for n, p in zip(names, paths)])
    result = {"streams": {n: metrics(s.scores, s.labels) for n, s in zip(names, sets)},
              "fused": metrics(fused.scores, fused.labels),
              "weights": list(weights) if weights is not None else [1.0] * len(sets),
              "videos": int(len(fused.labels))}
    if confusion is None and out:
        confusion = Path(out).with_name(Path(out).stem + "_confusion.png")
    elif confusion is None and report:
        confusion = Path(report).with_name("fused_confusion.png")
    if report:
        Path(report).write_text(json.dumps(result, indent=1))
    if out:
        fused.save(out)
    if confusion:
        from .metrics import confusion_matrix
        from .plots import save_confusion

        weights_text = " : ".join(f"{w:g}" for w in result["weights"])
        save_confusion(confusion_matrix(fused.scores, fused.labels, len(fused.classes)), fused.classes, confusion,
                       title=f"fused ({' + '.join(names)}, weights {weights_text})")
        result["confusion"] = str(confusion)
    return result


def _unique_names(names: list[str]) -> list[str]:
    out = []
    for n in names:
        k, name = 2, n
        while name in out:
            name, k = f"{n}_{k}", k + 1
        out.append(name)
    return out


def format_table(result: dict) -> str:
    rows = [(n, m) for n, m in result["streams"].items()] + [("fused", result["fused"])]
    width = max(8, *(len(n) for n, _ in rows))
    lines = [f"{'':{width}}  {'top1':>6}  {'top5':>6}  {'mean class':>10}"]
    lines += [f"{n:{width}}  {m['top1']:6.3f}  {m['top5']:6.3f}  {m['mean_class']:10.3f}" for n, m in rows]
    return "\n".join(lines)
