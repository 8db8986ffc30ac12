"""Checkpoints: plain dicts written atomically and read without unpickling arbitrary objects.

A checkpoint is ``{"format", "version", "model", "optimizer", "scheduler", "epoch", "config", "meta"}`` where
``config`` is the :class:`twostream.config.TrainConfig` as a dict and ``meta`` holds what evaluation and
prediction need: classes, the clip spec and the settings of the store it was trained on (its ``store.json``,
unchanged). :func:`load_checkpoint` returns the plain dict; :func:`read_checkpoint` returns them typed
(:class:`Checkpoint`), which is what evaluation and prediction use. Reading uses
``torch.load(weights_only=True)``, which refuses pickled code, so a checkpoint from an untrusted source
cannot run anything.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from flowprep.store import atomic_path
from flowprep.unit import ExtractConfig

from .config import TrainConfig
from .data import ClipSpec
from .errors import TwostreamError

FORMAT = "twostream-checkpoint"
VERSION = 1


class CheckpointError(TwostreamError):
    """A file that is not a usable twostream checkpoint; the message names it and says why."""


def save_checkpoint(path, obj: dict) -> None:
    """Write ``obj`` (plus format and version) to ``path`` atomically: a kill leaves the old file or the new one."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **obj}, tmp)


def load_checkpoint(path) -> dict:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, corrupt, refused by the safe loader, or not made by twostream.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        what = next((line.strip() for line in str(e).splitlines() if "Unsupported global" in line), "")
        raise CheckpointError(f"{path}: refused by the safe loader: it holds Python objects beyond tensors and "
                              f"plain data{' (' + what + ')' if what else ''}; only load files you trust") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {first}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a twostream checkpoint (a foreign file: no '{FORMAT}' marker; "
                              "to start from plain weights use --pretrained)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')} is not {VERSION}")
    missing = [k for k in ("model", "config", "meta", "epoch") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    return ckpt


@dataclass
class Checkpoint:
    """A checkpoint read back as typed objects (see :func:`read_checkpoint`).

    Attributes:
        config: the run's settings.
        spec: what one network input is made of.
        classes: class names, in label order.
        store: the settings of the store the model was trained on: how a new video must be prepared.
        epoch: the last finished epoch.
        best_val_video_acc: the best per-epoch validation video accuracy so far.
        state: the plain dict as saved (``model``, ``optimizer``, ``scheduler`` states among it).
    """

    config: TrainConfig
    spec: ClipSpec
    classes: list[str]
    store: ExtractConfig
    epoch: int
    best_val_video_acc: float
    state: dict

    @property
    def name(self) -> str:
        """A label for tables: the stream for the ResNet streams, else the arch and the stream."""
        c = self.config
        return c.stream if c.arch.startswith("resnet") else f"{c.arch} {c.stream}"


def read_checkpoint(path) -> Checkpoint:
    """:func:`load_checkpoint`, with its settings as typed objects.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, or when its settings do not read back.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt["meta"]
    try:
        return Checkpoint(TrainConfig.from_dict(ckpt["config"]), ClipSpec(**meta["spec"]), list(meta["classes"]),
                          ExtractConfig.from_json(meta["store"]), int(ckpt["epoch"]),
                          float(meta.get("best_val_video_acc", float("nan"))), ckpt)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its settings do not read back ({type(e).__name__}: {e})") from None
