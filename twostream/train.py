"""Train one stream (or one video model) on a flowprep store.

Two-stream ConvNets (Simonyan & Zisserman 2014, "Two-Stream Convolutional Networks for Action
Recognition in Videos") train the spatial and the temporal stream separately; TSN (Wang et al. 2016)
added cross-modality initialisation, multi-scale corner cropping and heavy dropout, used here.

``train(cfg)`` (``cfg``: a :class:`twostream.config.TrainConfig`) runs ``train_one_epoch`` and a quick ``validate``
per epoch, writes ``last.pt`` and ``best.pt`` (atomically, :mod:`twostream.checkpoint`), ``log.csv``,
``curves.png`` and ``config.json`` in ``cfg.out_dir``. With ``cfg.resume`` it continues from ``last.pt``; every
random choice is seeded by (seed, epoch), so on the CPU a resumed run ends with the same weights as an
uninterrupted one. Scoring (validation, and evaluate/predict) is :mod:`twostream.inference`'s.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from flowprep import signals
from flowprep.store import Store

from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import TrainClips, opencv_threads
from .distributed import World, amp_policy, cleanup, resolve_device, setup, sum_across
from .errors import ConfigError, TwostreamError
from .inference import autocast, make_model, memory_format, score_sharded
from .models import channels_last_format

log = logging.getLogger(__name__)



def _schedule(optimizer, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "step":
        milestones = [max(1, cfg.epochs // 2), max(1, (3 * cfg.epochs) // 4)]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)


# Batches between two read-backs of the running loss and accuracy for the progress bar: each read-back waits
# for the device to finish (a host sync), which a step otherwise never needs.
LOG_EVERY = 20


def set_bn_mode(model: torch.nn.Module, mode: str) -> None:
    """Put BatchNorm layers whose statistics are frozen (``partial``: all but the first; ``frozen``: all) in eval mode."""
    if mode == "train":
        return
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns[1:] if mode == "partial" else bns:
        m.eval()


class TrainingDiverged(TwostreamError):
    """Training met a non-finite loss or non-finite weights; it stopped without writing them (message says where)."""


def check_finite_weights(state: dict, where: str) -> None:
    """Raise :class:`TrainingDiverged` naming the first floating-point tensor of ``state`` that is not finite."""
    for k, v in state.items():
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
            raise TrainingDiverged(f"{where}: {k} holds non-finite values")


def _stop_if_nonfinite(nonfinite: torch.Tensor, first: torch.Tensor, epoch: int, step: int, world: World,
                       device) -> None:
    """Raise :class:`TrainingDiverged` (on every rank at once) if any batch so far had a non-finite loss, naming
    the first (``first``: its batch number on the device, -1 for none)."""
    n, first = nonfinite.item(), first.item()
    if world.distributed:  # the count summed, the first batch the earliest over the ranks
        n = sum_across([n], world, device)[0]
        t = torch.tensor(first if first >= 0 else 2 ** 62, dtype=torch.int64, device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        first = int(t.item())
    if not n:
        return
    later = f" (read back at batch {step}; {int(n)} non-finite by then, none applied)" if step != first or n != 1 else ""
    raise TrainingDiverged(f"epoch {epoch}, batch {first}: non-finite loss{later}; training stopped before applying "
                           "it and no checkpoint of this epoch was written (lower --lr, or check the data)")


def check_interval(device: torch.device) -> int:
    """Batches between two reads of the non-finite-loss count: every batch on the CPU, where a read costs nothing;
    :data:`LOG_EVERY` on a GPU, where each read waits for the device (a host sync)."""
    return 1 if device.type == "cpu" else LOG_EVERY


def train_one_epoch(model, loader, optimizer, device, *, epoch: int, amp: bool = True, channels_last: bool = False,
                    bn: str = "train", progress: bool = True, world: World = World(),
                    scaler: torch.amp.GradScaler | None = None, check_every: int | None = None) -> dict:
    """One pass over ``loader``. Returns ``{"loss", "acc", "clips_per_s"}`` over all ranks.

    ``amp`` autocasts as :func:`twostream.distributed.amp_policy` picks for ``device``; when that is float16,
    pass a ``scaler`` (the loss is scaled so that float16 gradients do not underflow). The loss and accuracy
    are summed on the device and read back every :data:`LOG_EVERY` batches, for the progress bar, and at the end.

    A non-finite loss stops training (:class:`TrainingDiverged`, naming the first batch that had one) and its
    gradients never reach the weights. The count of such batches and the number of the first are kept on the
    device and read back every ``check_every`` batches (default :func:`check_interval`: every batch on the CPU,
    which stops before that batch's step; every :data:`LOG_EVERY` on a GPU, so no step waits for the device) and
    at the end. Between the first non-finite loss and the read-back, every step applies zero gradients (without
    a ``scaler``; with one, the scaler skips the non-finite steps itself and the finite ones train on): the
    weights stay finite, and the epoch is not checkpointed.
    """
    model.train()
    set_bn_mode(model, bn)
    policy = amp_policy(device, amp)
    if policy.scales_loss and scaler is None:
        raise ValueError("float16 autocast needs a GradScaler (pass scaler=torch.amp.GradScaler('cuda'))")
    every = check_every or check_interval(device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    nonfinite = torch.zeros((), dtype=torch.int64, device=device)  # batches whose loss was not finite
    first = torch.full((), -1, dtype=torch.int64, device=device)  # the first of them (batch number), -1: none
    seen = 0
    step = 0
    t0 = time.perf_counter()
    with signals.deferred():  # the workers start and the bar appears in one piece (a SIGTERM: the first check)
        bar = tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch}", unit="batch", leave=False,
                   disable=not (progress and world.main), dynamic_ncols=True)
    with bar:  # closed (its line cleared) however the loop ends, before any message about why
        for step, (x, y) in enumerate(bar, 1):
            signals.check()  # a SIGTERM whose exception was lost (flowprep.signals): a flag read, no sync
            loss, right = _forward_backward(model, optimizer, x, y, device, policy, scaler, channels_last)
            finite = torch.isfinite(loss.detach())
            nonfinite += ~finite
            first = torch.where((first < 0) & ~finite, step, first)
            if step % every == 0:  # before this batch's step: on the CPU, the first non-finite one is never applied
                _stop_if_nonfinite(nonfinite, first, epoch, step, world, device)
            _apply(optimizer, scaler, finite & (first < 0), device, world)
            total_loss += torch.where(finite, loss.detach(), 0.0) * len(y)
            correct += right
            seen += len(y)
            if not bar.disable and step % LOG_EVERY == 0:
                rate = seen * world.size / (time.perf_counter() - t0)
                bar.set_postfix_str(f"loss {total_loss.item() / seen:.3f} acc {correct.item() / seen:.3f} "
                                    f"{rate:.0f} clips/s")
    elapsed = time.perf_counter() - t0
    _stop_if_nonfinite(nonfinite, first, epoch, step, world, device)
    total_loss, correct, seen = sum_across([total_loss.item(), correct.item(), seen], world, device)
    return {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "clips_per_s": seen / elapsed}


def _forward_backward(model, optimizer, x, y, device, policy, scaler, channels_last: bool):
    """The loss of the batch ``(x, y)`` and its gradients. Returns (loss, clips classified right), on the device:
    nothing here waits for it."""
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=memory_format(x.dim()))
    with policy.autocast(device):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss, (logits.argmax(1) == y).sum()


def _apply(optimizer, scaler, apply: torch.Tensor, device, world: World) -> None:
    """One optimizer step with the gradients ``_forward_backward`` left, replaced by zeros unless ``apply`` (a
    device bool: checking it on the host would cost a sync). A GradScaler skips non-finite steps itself."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
        return
    if world.distributed:  # DDP averaged one rank's non-finite gradients into every rank's: all skip the step
        flag = apply.to(torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        apply = flag.bool()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad = torch.where(apply, p.grad, torch.zeros((), dtype=p.grad.dtype, device=device))
    optimizer.step()


def validate(model, store, ids, spec, cfg: TrainConfig, device, world: World = World()) -> dict:
    """Quick per-epoch check on the split's test videos: ``val_clips`` clips, centre crop."""
    scores, labels, clip_correct = score_sharded(model, store, ids, spec, device, world, num_clips=cfg.val_clips,
                                                 num_crops=1, batch_size=cfg.batch_size, amp=cfg.amp,
                                                 channels_last=cfg.channels_last and device.type == "cuda")
    return {"val_video_acc": float((scores.argmax(1) == labels).mean()), "val_clip_acc": float(clip_correct.mean())}


def _check_resume(old: TrainConfig, cfg: TrainConfig, path: Path) -> None:
    """Refuse to resume the run of ``old`` with settings ``cfg`` that differ beyond RESUMABLE_CHANGES."""
    differ = [f.name for f in fields(cfg)
              if f.name not in TrainConfig.RESUMABLE_CHANGES and getattr(old, f.name) != getattr(cfg, f.name)]
    if differ:
        raise CheckpointError(f"{path}: cannot resume with other settings: " +
                              ", ".join(f"{k} was {getattr(old, k)!r}, now {getattr(cfg, k)!r}" for k in differ))


def _number(text):
    """A value of log.csv back as a number where it is one."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def _write_log(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _read_log(path: Path, upto_epoch: int) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["epoch"]) <= upto_epoch]


def plot_curves(rows: list[dict], path: Path) -> None:
    """Loss and accuracies per epoch as a PNG."""
    # matplotlib's object API on an Agg canvas, not pyplot: a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ep = [int(r["epoch"]) for r in rows]
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.plot(ep, [float(r["train_loss"]) for r in rows], marker="o")
    a.set(xlabel="epoch", ylabel="train loss", title="loss")
    for key in ("train_acc", "val_clip_acc", "val_video_acc"):
        b.plot(ep, [float(r[key]) for r in rows], marker="o", label=key)
    b.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="accuracy")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def train(cfg: TrainConfig, *, progress: bool = True) -> dict:
    """Train as ``cfg`` says; returns the last epoch's log row (with ``best_val_video_acc``).

    Under ``torchrun`` each process trains on its share of every global batch of ``cfg.batch_size`` clips
    (DistributedDataParallel averages the gradients), validation is split over the processes and gathered,
    and only rank 0 writes files.
    """
    device = resolve_device(cfg.device)  # refused before anything is opened or made
    store = Store(cfg.store)
    world, device = setup(device)
    try:
        with opencv_threads(1 if cfg.workers > 0 else None):
            return _train(cfg, store, world, device, progress)
    finally:
        cleanup(world)


# Seeds of the global RNG per epoch: a prime larger than any epoch count, so no two (seed, epoch) pairs share one.
EPOCH_SEED_STRIDE = 100003


def _build_model(cfg: TrainConfig, spec, num_classes: int, world: World, device: torch.device,
                 progress: bool) -> torch.nn.Module:
    """The model, its starting weights loaded, on ``device`` (channels-last on CUDA when asked)."""
    torch.manual_seed(cfg.seed)
    model = make_model(cfg.arch, spec, num_classes, cfg.dropout, cfg.base_width)
    if cfg.pretrained:
        from .pretrained import load_weights

        skipped = load_weights(model, cfg.pretrained, cfg.arch, progress=progress and world.main)
        log.info("loaded %s (not used: %s)", cfg.pretrained, ", ".join(skipped) or "nothing")
    if world.distributed and device.type == "cuda" and cfg.bn != "frozen":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=channels_last_format(model))
    return model


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _resume(path: Path, cfg: TrainConfig, model, optimizer, scheduler, scaler) -> tuple[int, float]:
    """Load the state of ``path`` (a run's last.pt) into the model, optimizer, scheduler and loss scaler.
    Returns (first epoch to run, best validation video accuracy so far)."""
    ck = read_checkpoint(path)
    _check_resume(ck.config, cfg, path)
    model.load_state_dict(ck.state["model"])
    optimizer.load_state_dict(ck.state["optimizer"])
    scheduler.load_state_dict(ck.state["scheduler"])
    if scaler is not None and "scaler" in ck.state:
        scaler.load_state_dict(ck.state["scaler"])
    return ck.epoch + 1, ck.best_val_video_acc


class _RunFiles:
    """What rank 0 writes at the end of each epoch: log.csv, curves.png, TensorBoard, last.pt and best.pt."""

    def __init__(self, out: Path, cfg: TrainConfig, meta: dict, rows: list[dict], world: World, progress: bool):
        self.out, self.cfg, self.meta, self.rows, self.world, self.progress = out, cfg, meta, rows, world, progress
        self.writer = _tensorboard(out) if cfg.tensorboard else None

    def end_of_epoch(self, row: dict, best: float, improved: bool, model, optimizer, scheduler, scaler) -> None:
        self.rows.append(row)
        _write_log(self.out / "log.csv", self.rows)
        plot_curves(self.rows, self.out / "curves.png")
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.writer.add_scalar(k, v, row["epoch"])
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": row["epoch"], "config": self.cfg.to_dict(),
                "meta": {**self.meta, "best_val_video_acc": best, "world_size": self.world.size}}
        if scaler is not None:
            ckpt["scaler"] = scaler.state_dict()
        check_finite_weights(ckpt["model"], f"epoch {row['epoch']}: not written to {self.out / 'last.pt'}: the model")
        save_checkpoint(self.out / "last.pt", ckpt)
        if improved:
            save_checkpoint(self.out / "best.pt", ckpt)
        msg = (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} train acc {row['train_acc']:.3f} val clip acc "
               f"{row['val_clip_acc']:.3f} video acc {row['val_video_acc']:.3f} ({row['clips_per_s']:.0f} clips/s)")
        tqdm.write(msg) if self.progress else log.info(msg)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        (self.out / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=1))


def _train(cfg: TrainConfig, store: Store, world: World, device: torch.device, progress: bool) -> dict:
    if cfg.batch_size % world.size:
        raise ConfigError(f"batch size {cfg.batch_size} is the global batch and must divide by the {world.size} processes")
    spec = cfg.clip_spec(store.classes)
    out = Path(cfg.out_dir)
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids = store.video_ids(cfg.split, "train"), store.video_ids(cfg.split, "test")
    model = _build_model(cfg, spec, len(store.classes), world, device, progress)
    channels_last = cfg.channels_last and device.type == "cuda"
    optimizer = _optimizer(model, cfg)
    scheduler = _schedule(optimizer, cfg)
    policy = amp_policy(device, cfg.amp)
    log.info("autocast: %s", policy.describe())
    scaler = torch.amp.GradScaler(device.type) if policy.scales_loss else None
    start, best = _resume(out / "last.pt", cfg, model, optimizer, scheduler, scaler) if cfg.resume else (0, -1.0)
    rows = _read_log(out / "log.csv", start - 1) if world.main else []
    if start >= cfg.epochs:  # resuming a finished run: nothing to train
        log.info("%s: the run already finished its %d epochs; nothing to do", out / "last.pt", cfg.epochs)
        last = {k: _number(v) for k, v in (rows[-1] if rows else {}).items()}
        return {**last, "best_val_video_acc": best, "finished_before": True}
    # Every file is checked once here, before DataLoader workers start (they inherit what was checked): a damaged
    # or crafted file is refused by name now, not mid-epoch inside a worker.
    store.check_videos(train_ids + val_ids)
    net = model
    if world.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    dataset = TrainClips(store, train_ids, spec, samples_per_video=cfg.samples_per_video, seed=cfg.seed)
    # The same sampler with one process as with many: the global batches are then the same clips.
    sampler = DistributedSampler(dataset, num_replicas=world.size, rank=world.rank, shuffle=True, seed=cfg.seed)
    per_rank = cfg.batch_size // world.size
    meta = {"classes": store.classes, "spec": asdict(spec), "store": store.config, "num_classes": len(store.classes)}
    files = _RunFiles(out, cfg, meta, rows, world, progress) if world.main else None
    row = rows[-1] if rows else {}
    for epoch in range(start, cfg.epochs):
        signals.check()
        torch.manual_seed(cfg.seed * EPOCH_SEED_STRIDE + epoch)  # dropout and anything else drawing from the global RNG
        dataset.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=cfg.workers,
                            pin_memory=device.type == "cuda",
                            drop_last=len(sampler) > per_rank)
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        stats = train_one_epoch(net, loader, optimizer, device, epoch=epoch, amp=cfg.amp, channels_last=channels_last,
                                bn=cfg.bn, progress=progress, world=world, scaler=scaler)
        val = (validate(model, store, val_ids, spec, cfg, device, world) if val_ids
               else {"val_video_acc": math.nan, "val_clip_acc": math.nan})
        scheduler.step()
        row = {"epoch": epoch, "lr": lr, "train_loss": stats["loss"], "train_acc": stats["acc"], **val,
               "clips_per_s": stats["clips_per_s"], "seconds": time.perf_counter() - t0}
        improved = val["val_video_acc"] > best or math.isnan(val["val_video_acc"])
        best = val["val_video_acc"] if improved else best
        if files is not None:
            files.end_of_epoch(row, best, improved, model, optimizer, scheduler, scaler)
    if files is not None:
        files.close()
    return {**row, "best_val_video_acc": best}


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter(str(out / "tb"))
