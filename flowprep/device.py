"""Which torch device a device name means: one resolver for the GPU flow method and for training.

``flowprep``'s ``tvl1-torch`` and ``twostream`` (training, evaluation, prediction) both take ``auto``, ``cpu``,
``cuda`` or ``cuda:N``; :func:`resolve_device` turns that into a ``torch.device`` or refuses it in one line.
"""
from __future__ import annotations

import os

from .errors import ConfigError


def resolve_device(name: str):
    """``auto`` (CUDA when torch sees a GPU, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> a ``torch.device``.

    Raises:
        ConfigError: another name, CUDA asked for where torch sees no GPU, or ``cuda:N`` with N not below the
            number of visible GPUs.
    """
    import torch

    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__}: a CPU "
                          f"build, or no driver); use device cpu or install a CUDA build of torch")
    device = torch.device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count:
        # Caught here, not at the first batch: it would fail every batch, after the store or run directory exists.
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise ConfigError(f"device {name!r} asked for but torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}"
                          + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""))
    return device
