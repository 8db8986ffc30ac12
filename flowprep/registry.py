"""What a flow method is: the record the registry keeps, and what a method that solves batches on a device provides.

Every method maps a batch of grayscale frame pairs to flow::

    fn(prev, nxt, **params) -> flow
    prev, nxt: (B, H, W) uint8      flow: (B, H, W, 2) float32, channel 0 = x (right), 1 = y (down)

so that ``flow[b, y, x]`` is the displacement of pixel (x, y) of ``prev[b]`` into ``nxt[b]``. A method is added
with :func:`register_method`; :mod:`flowprep.flow` looks methods up (and holds the OpenCV ones). This module is a
leaf, so that a method defined elsewhere (``flowprep.tvl1_torch``) registers itself without importing the lookup.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class DeviceSolver:
    """A method that solves batches of pairs on a device, bound to its parameters (see :mod:`flowprep.batched`).

    Attributes:
        device: the ``torch.device`` it runs on.
        batch_pairs: its preferred batch size.
        fixed_shape: pad short batches to ``batch_pairs`` (compiled code is specialised to its shapes).
        solve: ``(I0, I1)`` (B, H, W) uint8 tensors on ``device`` -> (B, 2, H, W) float32 flow.
        per_video: why these parameters need each video's pairs solved in order, one after another (a pair
            starts from its video's previous pair), so that the batched pipeline does not apply; "" when it does.
    """

    device: object
    batch_pairs: int
    fixed_shape: bool
    solve: Callable
    per_video: str = ""


@dataclass(frozen=True)
class FlowMethod:
    """A registered flow method.

    Attributes:
        name: registry key (``--method``).
        fn: ``fn(prev, nxt, **params) -> (B, H, W, 2) float32`` on (B, H, W) uint8 batches.
        defaults: every parameter the method accepts, with its default value.
        description: one line for ``--help``.
        devices: devices the method can run on.
        validate: ``validate(params)`` raises ``ValueError`` for bad parameter values.
        runtime_params: parameters that change where or how fast the method runs, not the flow it computes:
            a store may be resumed, and a model's flow reproduced, with other values of these.
        device_solver: for a method that solves batches of pairs on a device, ``device_solver(params)`` gives its
            :class:`DeviceSolver`, which the batched pipeline drives; None for a method that runs per video.
    """

    name: str
    fn: Callable[..., np.ndarray]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    devices: tuple[str, ...] = ("cpu",)
    validate: Callable[[dict], None] | None = None
    runtime_params: tuple[str, ...] = ()
    device_solver: Callable[[dict], DeviceSolver] | None = None

    @property
    def batched(self) -> bool:
        """Whether the method solves batches on a device (and so can run through the batched pipeline)."""
        return self.device_solver is not None

    def without_runtime(self, params: dict) -> dict:
        """``params`` without the runtime-only ones: what decides the flow."""
        return {k: v for k, v in params.items() if k not in self.runtime_params}


METHODS: dict[str, FlowMethod] = {}


def register_method(name: str, defaults: dict, description: str = "", devices=("cpu",), validate=None,
                    runtime_params=(), device_solver=None):
    """Decorator that adds a ``fn(prev, nxt, **params)`` function to :data:`METHODS` under ``name``.

    ``validate(params)``, if given, raises ``ValueError`` for bad parameter values; ``resolve_params`` calls it, so
    that a bad value is a usage error up front rather than one failure per video. See :class:`FlowMethod` for
    ``runtime_params`` and ``device_solver``.
    """

    def wrap(fn):
        METHODS[name] = FlowMethod(name, fn, dict(defaults), description, tuple(devices), validate,
                                   tuple(runtime_params), device_solver)
        return fn

    return wrap


def check_pairs(prev: np.ndarray, nxt: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``prev`` and ``nxt`` are (B, H, W) uint8 batches of one shape."""
    if prev.shape != nxt.shape or prev.ndim != 3:
        raise ConfigError(f"expected two (B, H, W) grayscale batches of one shape, got {prev.shape} and {nxt.shape}")
    if prev.dtype != np.uint8 or nxt.dtype != np.uint8:
        raise ConfigError(f"expected uint8 frames, got {prev.dtype} and {nxt.dtype}")
