"""Per-video class scores and the accuracies computed from them, in numpy alone.

:class:`Scores` is what ``twostream evaluate`` writes (an ``.npz``) and ``twostream fuse`` reads; ``metrics``
gives top-1, top-5 and mean class accuracy. Nothing here imports torch, so fusing score files needs none.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError


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
            raise ConfigError(f"{path}: no such score file") from None
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{path}: not a twostream score file ({e})") from None


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
