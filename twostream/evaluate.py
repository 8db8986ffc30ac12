"""Test-time evaluation of a trained stream: multi-clip, multi-crop score averaging.

Per test video, K evenly spaced clips (default 25) x crops (default 10: four corners and the centre,
each flipped; 5 unflipped for a model trained without flips, whose checkpoint says so) are scored and their softmax scores averaged (Simonyan & Zisserman 2014, sec. 6; TSN).
Clip accuracy counts each single view; video accuracy uses the averaged scores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from flowprep.store import Store

from .distributed import cleanup, resolve_device, setup
from .errors import ConfigError
from .inference import load_model, score_sharded
from .metrics import Scores, confusion_matrix, metrics


def plot_confusion(cm: np.ndarray, classes, path, title: str = "") -> None:
    """Write a confusion matrix PNG: names up to 30 classes, class numbers beyond (``plots.confusion_image``)."""
    from .plots import save_confusion

    save_confusion(cm, classes, path, title)


def evaluate(checkpoint, store_dir, out_path, *, split: int | None = None, num_clips: int = 25, num_crops: int = 10,
             batch_size: int = 64, workers: int = 2, device: str = "auto", progress: bool = True) -> dict:
    """Score the test videos of ``split`` with a trained model and write them to ``out_path`` (.npz).

    Also writes ``<out_path stem>_confusion.png``. Under ``torchrun`` the videos are split over the
    processes and the scores gathered (rank 0 writes). A model trained without flips is scored without
    mirrored views (10 crops become 5), one trained with a flip map has its mirrored views' pairs swapped back
    (see :mod:`twostream.data`). Returns the metrics:
    ``{"clip_top1", "top1", "top5", "mean_class", "videos", "crops"}`` (``crops``: those used per clip).
    """
    world, dev = setup(resolve_device(device))
    try:
        model, ck = load_model(checkpoint, dev)
        store = Store(store_dir)
        split = split if split is not None else ck.config.split
        if list(store.classes) != ck.classes:
            raise ConfigError(f"{checkpoint}: trained on other classes than those of the store {store_dir}")
        ids = store.video_ids(split, "test")
        if not ids:
            raise ConfigError(f"{store_dir}: split {split} has no finished test videos")
        scores, labels, clip_correct = score_sharded(
            model, store, ids, ck.spec, dev, world, num_clips=num_clips, num_crops=num_crops, batch_size=batch_size,
            workers=workers, amp=ck.config.amp, channels_last=ck.config.channels_last and dev.type == "cuda",
            progress=progress)
        finite = np.isfinite(scores).all(1)
        if not finite.all():
            raise ConfigError(f"{checkpoint}: non-finite scores for {int((~finite).sum())} of {len(ids)} test videos "
                              f"(first: {ids[int(np.argmin(finite))]}); nothing written")
        name = ck.name
        if world.main:
            Scores(scores, labels, np.asarray(ids), np.asarray(store.classes), name).save(out_path)
            out_path = Path(out_path)
            plot_confusion(confusion_matrix(scores, labels, len(store.classes)), store.classes,
                           out_path.with_name(out_path.stem + "_confusion.png"), title=f"{name}: split {split}")
        return {"clip_top1": float(clip_correct.mean()), **metrics(scores, labels), "videos": len(ids),
                "crops": ck.spec.test_crops(num_crops)}
    finally:
        cleanup(world)
