"""Devices and processes: which device to run on, and multi-process training and evaluation under ``torchrun``.

:func:`resolve_device` (``auto``, ``cpu``, ``cuda``, ``cuda:N``) is flowprep's, shared with ``tvl1-torch``.

``torchrun --nproc_per_node N -m twostream train ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in the environment; :func:`setup` reads them and joins the
process group (``nccl`` on CUDA, ``gloo`` on the CPU). Without those variables everything runs as one
process, and the same code paths apply with a world of size 1.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from flowprep.device import resolve_device  # noqa: F401 (one resolver for twostream and flowprep's tvl1-torch)


@dataclass(frozen=True)
class AmpPolicy:
    """Which autocast a device gets: bfloat16, float16 with loss scaling, or none.

    Attributes:
        dtype: the autocast dtype, or None for float32 throughout.
        why: a few words for the log.
    """

    dtype: torch.dtype | None
    why: str

    @property
    def scales_loss(self) -> bool:
        """float16 gradients underflow without loss scaling (a ``GradScaler``); bfloat16 has float32's range."""
        return self.dtype == torch.float16

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None)

    def describe(self) -> str:
        name = {None: "float32", torch.bfloat16: "bfloat16 autocast", torch.float16: "float16 autocast + loss scaling"}
        return f"{name[self.dtype]} ({self.why})"


def amp_policy(device: torch.device, amp: bool) -> AmpPolicy:
    """The autocast for ``device`` when ``amp`` is asked for (``TrainConfig.amp``; evaluation follows it).

    bfloat16 only on CUDA GPUs of compute capability 8.0 or newer (A100, H100, RTX 30xx on): older ones (V100,
    T4) run bfloat16 convolutions as slow emulation without refusing them, so they get float16 with loss
    scaling, which their tensor cores run natively. On the CPU, autocast would only slow training down.
    """
    if not amp:
        return AmpPolicy(None, "amp off")
    if device.type != "cuda":
        return AmpPolicy(None, f"no autocast on {device.type}")
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 8:
        return AmpPolicy(torch.bfloat16, f"compute capability {major}.{minor}")
    return AmpPolicy(torch.float16, f"compute capability {major}.{minor} < 8.0 runs bfloat16 emulated")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and score files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun describes, if any. Returns the world and this process's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def cleanup(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: list, world: World) -> list:
    """This rank's share of ``items`` (every size-th item, from its rank on)."""
    return list(items[world.rank::world.size])


def gather(obj, world: World) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def sum_across(values: list[float], world: World, device: torch.device) -> list[float]:
    """Elementwise sum of ``values`` over the ranks."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
