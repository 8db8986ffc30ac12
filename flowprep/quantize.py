"""Flow <-> uint8 mappings for compact storage.

Flow is clipped to ``[-bound, bound]`` pixels and mapped to uint8. Two mappings:

* ``symmetric`` (default): ``q = 128 + round(f * 127 / bound)``, codes 1..255, decoded ``(q - 128) * bound / 127``.
  Zero flow is code 128 exactly, so a still pixel decodes as exactly 0.
* ``tsn``: the TSN / denseflow convention ``q = round((f + bound) * 255 / (2 * bound))``, decoded
  ``q * 2 * bound / 255 - bound``. Code 127.5 would be zero, so a still pixel decodes as +0.078 px at bound 20.
  Kept for interchange with stores made by those tools.

Either way the round-trip error of an unclipped value is at most half a step (``step(bound, mapping) / 2``).
"""
from __future__ import annotations

import numpy as np

from .errors import ConfigError

MAPPINGS = ("symmetric", "tsn")


def _check(bound: float, mapping: str) -> None:
    if mapping not in MAPPINGS:
        raise ConfigError(f"unknown flow mapping {mapping!r}; choose one of {', '.join(MAPPINGS)}")
    if not bound > 0:
        raise ConfigError(f"flow bound must be positive, got {bound}")


def step(bound: float, mapping: str = "symmetric") -> float:
    """Pixels per uint8 code."""
    _check(bound, mapping)
    return bound / 127.0 if mapping == "symmetric" else 2.0 * bound / 255.0


def quantize(flow: np.ndarray, bound: float = 20.0, mapping: str = "symmetric") -> np.ndarray:
    """Float flow (any shape) -> uint8 codes of the same shape."""
    _check(bound, mapping)
    f = np.clip(np.asarray(flow, np.float32), -bound, bound)
    if mapping == "symmetric":
        q = np.rint(f * (127.0 / bound)) + 128.0
    else:
        q = np.rint((f + bound) * (255.0 / (2.0 * bound)))
    return q.astype(np.uint8)


def dequantize(codes: np.ndarray, bound: float = 20.0, mapping: str = "symmetric") -> np.ndarray:
    """uint8 codes -> float32 flow in pixels."""
    _check(bound, mapping)
    q = np.asarray(codes, np.float32)
    if mapping == "symmetric":
        return (q - 128.0) * np.float32(bound / 127.0)
    return q * np.float32(2.0 * bound / 255.0) - np.float32(bound)
