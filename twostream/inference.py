"""Running a trained model: build it, score views, score the videos of a store (also across ranks).

Training validates with these functions, ``evaluate`` scores a split with them and ``predict`` a raw video, so all
three see a model the same way: softmax scores per view, averaged per video (Simonyan & Zisserman 2014, sec. 6).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from flowprep import signals

from .checkpoint import Checkpoint, CheckpointError, read_checkpoint
from .data import ClipSpec, EvalVideos, opencv_threads, unmirror_scores
from .distributed import World, amp_policy, gather, shard
from .models import build_model


def make_model(arch: str, spec: ClipSpec, num_classes: int, dropout: float, base_width: int = 64) -> torch.nn.Module:
    """The model ``arch`` for inputs as ``spec`` describes (its channels and frames)."""
    return build_model(arch, num_classes=num_classes, in_channels=spec.channels, num_frames=spec.num_frames,
                       dropout=dropout, base_width=base_width)


def memory_format(model_input_dims: int):
    """The channels-last memory format of a batch of ``model_input_dims`` dimensions (4: images, 5: clips)."""
    return torch.channels_last if model_input_dims == 4 else torch.channels_last_3d


def autocast(device: torch.device, amp: bool):
    """Autocast on CUDA when ``amp``, as :func:`twostream.distributed.amp_policy` picks; a no-op on the CPU."""
    return amp_policy(device, amp).autocast(device)


def load_model(checkpoint, device: torch.device) -> tuple[torch.nn.Module, Checkpoint]:
    """Rebuild a trained model from a checkpoint file. Returns (model on ``device`` in eval mode, the checkpoint)."""
    ck = read_checkpoint(checkpoint)
    for k, v in ck.state["model"].items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{checkpoint}: weight {k} holds non-finite values (a diverged run); not used")
    model = make_model(ck.config.arch, ck.spec, len(ck.classes), ck.config.dropout, ck.config.base_width)
    model.load_state_dict(ck.state["model"])
    return model.to(device).eval(), ck


@torch.no_grad()
def predict_views(model, views: torch.Tensor, device, *, batch_size: int = 64, amp: bool = True,
                  channels_last: bool = False) -> torch.Tensor:
    """Softmax scores of each view: (V, ...) inputs -> (V, num_classes) float32 on the CPU."""
    model.eval()
    out = []
    for chunk in views.split(batch_size):
        chunk = chunk.to(device, non_blocking=True)
        if channels_last:
            chunk = chunk.contiguous(memory_format=memory_format(chunk.dim()))
        with autocast(device, amp):
            out.append(model(chunk).float().softmax(1).cpu())
    return torch.cat(out)


def score_videos(model, dataset: EvalVideos, device, *, batch_size: int = 64, workers: int = 0, amp: bool = True,
                 channels_last: bool = False, progress: bool = False):
    """Scores of every video of ``dataset``.

    Returns:
        (video_scores (N, C) averaged over views, labels (N,), clip_correct (N,) fraction of views right).
    """
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers)
    n = len(dataset)
    scores, labels, clip_correct = None, np.zeros(n, np.int64), np.zeros(n)
    with opencv_threads(1 if workers > 0 else None):  # before the workers fork
        with signals.deferred():  # the workers start and the bar appears in one piece (a SIGTERM: the first check)
            bar = tqdm(iter(loader), total=len(loader), desc="evaluate", unit="video", disable=not progress,
                       leave=False)
        with bar:
            for views, label, i in bar:
                signals.check()  # a SIGTERM whose exception was lost (flowprep.signals)
                p = predict_views(model, views, device, batch_size=batch_size, amp=amp, channels_last=channels_last)
                p = unmirror_scores(p, dataset.spec, dataset.num_crops)
                if scores is None:
                    scores = np.zeros((n, p.shape[1]), np.float32)
                scores[i] = p.mean(0).numpy()
                labels[i] = label
                clip_correct[i] = (p.argmax(1) == label).float().mean().item()
    return scores, labels, clip_correct


def score_sharded(model, store, ids, spec, device, world: World, *, num_clips: int, num_crops: int, batch_size: int,
                  workers: int = 0, amp: bool = True, channels_last: bool = False, progress: bool = False):
    """:func:`score_videos` with the videos split over the ranks and the results gathered, in ``ids`` order."""
    mine = shard(ids, world)
    ds = EvalVideos(store, mine, spec, num_clips=num_clips, num_crops=num_crops)
    part = score_videos(model, ds, device, batch_size=batch_size, workers=workers, amp=amp,
                        channels_last=channels_last, progress=progress and world.main) if mine else None
    parts = [p for p in gather(part, world) if p is not None]
    order = [v for r in range(world.size) for v in shard(ids, World(r, world.size))]
    pos = {v: i for i, v in enumerate(order)}
    idx = np.array([pos[v] for v in ids])
    scores, labels, clip_correct = (np.concatenate([p[k] for p in parts])[idx] for k in range(3))
    return scores, labels, clip_correct
