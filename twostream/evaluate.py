"""Test-time evaluation of a trained stream: multi-clip, multi-crop score averaging.

Per test video, K evenly spaced clips (default 25) x crops (default 10: four corners and the centre,
each flipped; 5 unflipped for a model trained without flips, whose checkpoint says so) are scored and their softmax scores averaged (Simonyan & Zisserman 2014, sec. 6; TSN).
Clip accuracy counts each single view; video accuracy uses the averaged scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowprep.store import Store

from .checkpoint import load_checkpoint
from .data import ClipSpec
from .distributed import cleanup, setup
from .train import make_model, resolve_device, score_sharded


@dataclass
class Scores:
    """Per-video class scores of one model (what ``evaluate`` writes and ``fuse`` reads).

    Attributes:
        scores: (N, C) float32 averaged softmax scores.
        labels: (N,) int64 true labels.
        video_ids: (N,) video ids.
        classes: (C,) class names, in label order.
        name: a label for tables (the stream, or the file name).
    """

    scores: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray
    classes: np.ndarray
    name: str = ""

    def save(self, path) -> None:
        """Write an ``.npz`` (plain arrays, no pickle)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:  # a file object keeps numpy from appending .npz to other names
            np.savez(f, scores=self.scores.astype(np.float32), labels=self.labels.astype(np.int64),
                     video_ids=np.asarray(self.video_ids, dtype=str), classes=np.asarray(self.classes, dtype=str),
                     name=np.asarray(self.name))

    @classmethod
    def load(cls, path) -> "Scores":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["scores"], z["labels"], z["video_ids"], z["classes"], str(z["name"]) or path.stem)
        except FileNotFoundError:
            raise ValueError(f"{path}: no such score file") from None
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a twostream score file ({e})") from None


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[1])
    top = np.argsort(-scores, axis=1)[:, :k]
    return float((top == labels[:, None]).any(1).mean())


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of each class present, averaged over those classes."""
    pred = scores.argmax(1)
    return float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)]))


def metrics(scores: np.ndarray, labels: np.ndarray) -> dict:
    return {"top1": topk_accuracy(scores, labels, 1), "top5": topk_accuracy(scores, labels, 5),
            "mean_class": mean_class_accuracy(scores, labels)}


def confusion_matrix(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (labels, scores.argmax(1)), 1)
    return cm


def plot_confusion(cm: np.ndarray, classes, path, title: str = "") -> None:
    """Write a confusion matrix PNG: names up to 30 classes, class numbers beyond (``plots.confusion_image``)."""
    from .plots import save_confusion

    save_confusion(cm, classes, path, title)


def load_model(checkpoint, device: torch.device):
    """Rebuild a trained model from a checkpoint. Returns (model in eval mode, checkpoint dict, ClipSpec)."""
    ckpt = load_checkpoint(checkpoint)
    cfg, meta = ckpt["config"], ckpt["meta"]
    spec = ClipSpec(**meta["spec"])
    model = make_model(cfg["arch"], spec, meta["num_classes"], cfg["dropout"], cfg["base_width"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt, spec


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
        model, ckpt, spec = load_model(checkpoint, dev)
        store = Store(store_dir)
        split = split if split is not None else ckpt["config"]["split"]
        if list(store.classes) != list(ckpt["meta"]["classes"]):
            raise ValueError(f"{checkpoint}: trained on other classes than those of the store {store_dir}")
        ids = store.video_ids(split, "test")
        if not ids:
            raise ValueError(f"{store_dir}: split {split} has no finished test videos")
        channels_last = ckpt["config"]["channels_last"] and dev.type == "cuda"
        scores, labels, clip_correct = score_sharded(
            model, store, ids, spec, dev, world, num_clips=num_clips, num_crops=num_crops, batch_size=batch_size,
            workers=workers, amp=ckpt["config"]["amp"], channels_last=channels_last, progress=progress)
        cfg = ckpt["config"]
        name = cfg["stream"] if cfg["arch"].startswith("resnet") else f"{cfg['arch']} {cfg['stream']}"
        if world.main:
            Scores(scores, labels, np.asarray(ids), np.asarray(store.classes), name).save(out_path)
            out_path = Path(out_path)
            plot_confusion(confusion_matrix(scores, labels, len(store.classes)), store.classes,
                           out_path.with_name(out_path.stem + "_confusion.png"), title=f"{name}: split {split}")
        return {"clip_top1": float(clip_correct.mean()), **metrics(scores, labels), "videos": len(ids),
                "crops": spec.test_crops(num_crops)}
    finally:
        cleanup(world)
