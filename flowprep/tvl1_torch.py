"""Batched TV-L1 optical flow in PyTorch, on the CPU or a GPU.

The duality-based TV-L1 of Zach, Pock & Bischof 2007 ("A duality based approach for realtime TV-L1
optical flow", DAGM), in the form detailed by Sanchez Perez, Meinhardt-Llopis & Facciolo 2013
("TV-L1 Optical Flow Estimation", IPOL 3, pp. 137-150), with the choices of OpenCV contrib's
``cv2.optflow.DualTVL1OpticalFlow`` (``modules/optflow/src/tvl1flow.cpp``) so that the two agree
on the same parameters:

* gray levels stay on the 0..255 scale (no normalisation, no pre-smoothing);
* the pyramid is built by bilinear resizing of the previous level by ``scale_step`` (no Gaussian
  blur), sizes rounded to the nearest integer, and stops before a level under 16 pixels wide or high;
* ``I1`` and its centred-difference gradient are warped with bicubic interpolation (a = -0.75),
  zero outside the image, at coordinates quantised to 1/32 pixel as ``cv2.remap`` does;
* primal-dual iterations: thresholding step for ``v``, ``u = v + theta div p``, then the dual step
  ``p <- (p + tau/theta grad u) / (1 + tau/theta |grad u|)`` with forward differences;
* the flow is median filtered (``median_filtering`` x ``median_filtering`` window) at the start of
  every outer iteration, and iterations stop once the squared update, summed over the pixels of
  the level, falls to ``epsilon**2 * H * W``;
* between levels the flow is resized bilinearly and multiplied by ``1 / scale_step``;
* ``gamma > 0`` adds OpenCV's illumination-change variable ``u3``.

Batching and stopping. Pairs of a batch are solved together in ``(B, C, H, W)`` tensors. OpenCV
stops each warp of each pair when its own update is below epsilon; here each pair carries an
``active`` flag: a pair that has converged keeps its ``u`` and ``p`` unchanged (``torch.where``) for
the rest of that warp while the others iterate. A pair therefore gets the same flow alone as in
any batch, and the same stopping rule as OpenCV. Whether the whole batch is done is read back to
the host only every ``check_every`` iterations (a sync on a GPU); the flow does not depend on it,
as iterations past convergence are no-ops. ``check_every=0`` never reads back and always runs the
maximum counts (``inner_iterations * outer_iterations`` per warp): fixed shapes and no syncs, which
suits CUDA graphs. ``epsilon=0`` gives fixed iteration counts for every pair.

Doing less work (ours; off by default, so the defaults stay OpenCV's). In a video, consecutive pairs
have similar flow: ``warm_start`` starts each pair from the previous pair's flow, and ``warm_levels`` /
``warm_warps`` then skip the coarse pyramid levels and some warps (see :class:`WarmStart`). On the CPU
the median filter is OpenCV's own (same values) and the primal-dual step is written as few in-place
passes over memory; ``bench/tvl1_profile.py`` shows where the time goes, ``bench/tvl1_bench.py`` and
``bench/flow_frontier.py`` what each setting costs and gains on ground truth (flowprep.groundtruth).

Precision. ``"float32"`` everywhere, or ``"float16"`` / ``"bfloat16"``: the per-warp data (warped
gradient, its squared norm, the constant part of the residual) and the dual variables are stored
in 16 bits while every operation computes in float32, so an iteration moves about a third fewer
bytes. The flow ``u`` stays float32 (a 10-pixel flow held in 16 bits would move in steps of 1/128
pixel or worse). Both keep the accuracy on the tests' real pairs (float16 a little closer to
OpenCV; its range is ample: |grad I|^2 <= 2 * 127.5^2). They pay off on a GPU with
``compile=True``, where loads and the upcast fuse; on the CPU they are only slower.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .device import resolve_device
from .errors import ConfigError
from .registry import DeviceSolver, check_pairs, register_method
from .tvl1 import TVL1_DEFAULTS, TVL1Params

log = logging.getLogger(__name__)

# OpenCV stops adding levels once one would be narrower or lower than this (tvl1flow.cpp).
MIN_LEVEL_SIZE = 16
# cv2.remap works at 1/32 pixel: it rounds float maps to INTER_TAB_SIZE = 32 sub-pixel positions.
REMAP_SUBPIXELS = 32
# Guards the division by |grad I1|^2 where it is 0 (then rho / tiny saturates to +-lambda*theta or
# is 0, as OpenCV's branches give).
_TINY = float(torch.finfo(torch.float32).tiny)

PRECISIONS = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}




# ----------------------------------------------------------------------------------------------
# Pyramid and resizing


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float) -> list[tuple[int, int]]:
    """(H, W) of each level, finest first, as OpenCV builds them: round(size * scale_step) per step."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        h, w = round(h * scale_step), round(w * scale_step)  # cvRound: half to even, as round()
        if h < MIN_LEVEL_SIZE or w < MIN_LEVEL_SIZE:
            break
        sizes.append((h, w))
    return sizes


def _linear_taps(n_in: int, n_out: int, ratio: float, device):
    """Source indices and weights of ``cv2.resize(..., INTER_LINEAR)`` along one axis.

    Output sample i reads the input at (i + 0.5) * ratio - 0.5, clamped to the edges.
    """
    x = (np.arange(n_out) + 0.5) * ratio - 0.5
    i0 = np.floor(x)
    frac = x - i0
    frac[i0 < 0] = 0.0
    i0 = np.clip(i0, 0, n_in - 1).astype(np.int64)
    frac[i0 >= n_in - 1] = 0.0
    i1 = np.minimum(i0 + 1, n_in - 1)
    return (
        torch.as_tensor(i0, device=device),
        torch.as_tensor(i1, device=device),
        torch.as_tensor(frac, dtype=torch.float32, device=device),
    )


def resize_bilinear(x: torch.Tensor, size: tuple[int, int], scale: float | None = None) -> torch.Tensor:
    """Bilinear resize of ``(..., H, W)`` float32 to ``size`` = (h, w), matching ``cv2.resize``.

    ``scale``: the factor OpenCV was given (``fx = fy = scale``), which then sets the sampling
    positions instead of the ratio of the rounded sizes; None for a resize to an explicit size.
    Written with gathers rather than ``F.interpolate`` (which rounds sizes differently and maps
    with the size ratio) or a matmul (TF32 on GPUs would cost precision).
    """
    h_in, w_in = x.shape[-2:]
    h, w = size
    i0, i1, f = _linear_taps(w_in, w, w_in / w if scale is None else 1 / scale, x.device)
    x = x.index_select(-1, i0) * (1 - f) + x.index_select(-1, i1) * f
    i0, i1, f = _linear_taps(h_in, h, h_in / h if scale is None else 1 / scale, x.device)
    f = f[:, None]
    return x.index_select(-2, i0) * (1 - f) + x.index_select(-2, i1) * f


# ----------------------------------------------------------------------------------------------
# Per-warp operators


def centered_gradient(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of ``(B, H, W)``; at the borders half the one-sided difference (OpenCV)."""
    # Replicating the border row/column turns the central difference at the edge into
    # 0.5 * (f[1] - f[0]), which is exactly OpenCV's border rule.
    pad = F.pad(img[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]  # (B, H+2, W+2)
    dx = 0.5 * (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2])
    dy = 0.5 * (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1])
    return dx, dy


def warp_bicubic(src: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``src`` (B, C, H, W) sampled at (x + u, y + v) for ``flow`` (B, 2, H, W), like ``cv2.remap``.

    Bicubic (a = -0.75, the kernel of both OpenCV and ``grid_sample``), samples outside the image
    read 0 (``BORDER_CONSTANT``), and coordinates are first rounded to 1/32 pixel as OpenCV does.
    """
    b, _, h, w = src.shape
    xs = torch.arange(w, device=src.device, dtype=torch.float32)
    ys = torch.arange(h, device=src.device, dtype=torch.float32)[:, None]
    q = REMAP_SUBPIXELS
    x = torch.round((xs + flow[:, 0]) * q) / q  # (B, H, W)
    y = torch.round((ys + flow[:, 1]) * q) / q
    # align_corners=True maps -1 and 1 to the centres of the first and last pixels.
    grid = torch.stack((x * (2.0 / max(w - 1, 1)) - 1.0, y * (2.0 / max(h - 1, 1)) - 1.0), dim=-1)
    return F.grid_sample(src, grid, mode="bicubic", padding_mode="zeros", align_corners=True)


def _oddeven_merge_sort(n: int) -> list[tuple[int, int]]:
    """Comparators (i, j), i < j, of Batcher's odd-even merge sort of n = 2**m wires (Knuth 5.3.4)."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return pairs


@functools.lru_cache(maxsize=None)
def _selection_network(n: int, rank: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """A comparator network that puts the ``rank``-th smallest of n values on wire ``rank``.

    Batcher's network on the next power of two, less the comparators that touch padding wires
    (read as +inf, they never move) and those whose outputs never reach wire ``rank``; each kept
    comparator says which of its min (to i) / max (to j) outputs is used later. For 25 values:
    113 comparators, 202 min/max ops.
    """
    m = 1 << max(n - 1, 0).bit_length()
    net = [(i, j) for i, j in _oddeven_merge_sort(m) if j < n]
    needed = {rank}
    kept = []
    for i, j in reversed(net):
        if i in needed or j in needed:
            kept.append((i, j, i in needed, j in needed))
            needed |= {i, j}
    return tuple(reversed(kept))


# Eager median filtering holds up to k*k flow-sized temporaries (the network's wires) at once: 25 for
# 5x5, which at 340x256 is 17 MB per pair, 1.1 GB for a batch of 64, more than the rest of the solver.
# Filtering the batch in slices whose wires fit this many bytes bounds that (bench/tvl1_memory.py).
MEDIAN_SLICE_BYTES = 128 * 2**20


def median_filter(u: torch.Tensor, k: int, compile: bool = False, use_opencv: bool | None = None) -> torch.Tensor:
    """k x k median of each channel of ``(B, C, H, W)``, replicated borders (``cv2.medianBlur``).

    A selection network of elementwise min/max over the k*k shifted views of the padded input:
    ten times faster than ``unfold(...).median()`` on the CPU, with no (B, C, H, W, k*k) copy, and
    ``torch.compile`` fuses it into one kernel. Run eagerly, it filters the batch in slices so that
    its temporaries stay under :data:`MEDIAN_SLICE_BYTES` (each pair is filtered on its own, so the
    slicing changes no value). On the CPU, ``cv2.medianBlur`` itself is another twenty times faster
    (its float version takes k = 3 or 5) and gives the same values: ``use_opencv`` None picks it for
    float32 CPU tensors where it applies.
    """
    if use_opencv is None:
        use_opencv = u.device.type == "cpu" and u.dtype == torch.float32 and k in (3, 5)
    if use_opencv:
        return _median_by_opencv(u, k)
    network = _selection_network(k * k, (k * k) // 2)
    if compile:  # fused into one kernel: no temporaries to bound
        return _maybe_compiled(_median_by_network, True)(u, k, network)
    per_pair = k * k * u[:1].numel() * u.element_size()
    step = max(1, MEDIAN_SLICE_BYTES // per_pair)
    if step >= len(u):
        return _median_by_network(u, k, network)
    out = torch.empty_like(u)
    for s in range(0, len(u), step):
        out[s : s + step] = _median_by_network(u[s : s + step], k, network)
    return out


def _median_by_opencv(u: torch.Tensor, k: int) -> torch.Tensor:
    import cv2

    planes = u.detach().contiguous().reshape(-1, *u.shape[-2:]).numpy()  # (B*C, H, W) float32
    return torch.from_numpy(np.stack([cv2.medianBlur(p, k) for p in planes])).reshape(u.shape)


def _median_by_network(u: torch.Tensor, k: int, network: tuple) -> torch.Tensor:
    h, w = u.shape[-2:]
    r = k // 2
    pad = F.pad(u, (r, r, r, r), mode="replicate")
    wires = [pad[..., i : i + h, j : j + w] for i in range(k) for j in range(k)]
    for i, j, need_min, need_max in network:
        a, b = wires[i], wires[j]
        if need_min:
            wires[i] = torch.minimum(a, b)
        if need_max:
            wires[j] = torch.maximum(a, b)
    return wires[(k * k) // 2]


def _primal_dual_step(
    u: torch.Tensor,       # (B, C, H, W) float32 flow (C = 3 with the illumination variable)
    px: torch.Tensor,      # (B, C, H, W) dual variable, x component
    py: torch.Tensor,      # (B, C, H, W) dual variable, y component
    ivec: torch.Tensor,    # (B, C, H, W) warped gradient of I1 (and gamma), direction of the data term
    grad: torch.Tensor,    # (B, H, W) |grad I1(x + u0)|^2
    rho_c: torch.Tensor,   # (B, H, W) I1(x + u0) - grad I1(x + u0) . u0 - I0
    active: torch.Tensor,  # (B,) bool, pairs still iterating in this warp
    tol: int,              # epsilon^2 * H * W, in the fixed-point units of _update_size
    l_t: float,
    theta: float,
    taut: float,
    masked: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One primal-dual iteration of TV-L1 for every pair; converged pairs are left unchanged.

    Pure tensor code with no host syncs so that ``torch.compile`` can fuse it into a few kernels.
    Stored tensors may be float16; all arithmetic is float32. ``masked=False`` skips the masking
    when the caller knows every pair is active.
    """
    f32 = torch.float32
    ivec32 = ivec.to(f32)
    px32, py32 = px.to(f32), py.to(f32)
    # Few, mostly in-place operations: on the CPU each one is a pass over memory (measured: ~1.4x
    # faster than the plain expressions); torch.compile fuses them anyway.
    # Thresholding step TH of Zach et al.: v = u + step * grad I1, step set by the residual rho.
    rho = (ivec32 * u).sum(dim=1).add_(rho_c.to(f32))
    # OpenCV branches on rho vs +-lambda*theta*|grad|^2; the clamp is the same function, and
    # differs only where 0 < |grad I1|^2 <= FLT_EPSILON (OpenCV then takes 0), by < 1e-5 px.
    step = rho.div_(grad.to(f32).clamp_min(_TINY)).neg_().clamp_(-l_t, l_t)
    u_new = torch.addcmul(u, step[:, None], ivec32)  # v
    # u = v + theta div p, div p by backward differences (p is 0 before the first column/row; its
    # last column/row stays 0 since grad u is 0 there).
    div = px32 + py32
    div[..., 1:] -= px32[..., :-1]
    div[..., 1:, :] -= py32[..., :-1, :]
    u_new.add_(div, alpha=theta)
    err = _update_size(u_new, u)  # (B,)
    # Dual step with the forward differences of u (zero across the last column / row).
    if torch.compiler.is_compiling():  # dynamo refuses out= views; the values are the same
        ux = F.pad(u_new[..., 1:] - u_new[..., :-1], (0, 1))
        uy = F.pad(u_new[..., 1:, :] - u_new[..., :-1, :], (0, 0, 0, 1))
    else:  # one pass each instead of a difference and a padded copy
        ux = torch.empty_like(u_new)
        uy = torch.empty_like(u_new)
        torch.sub(u_new[..., 1:], u_new[..., :-1], out=ux[..., :-1])
        ux[..., -1] = 0
        torch.sub(u_new[..., 1:, :], u_new[..., :-1, :], out=uy[..., :-1, :])
        uy[..., -1, :] = 0
    norm = (ux * ux).addcmul_(uy, uy).sqrt_().mul_(taut).add_(1.0)
    px_new = torch.add(px32, ux, alpha=taut).div_(norm).to(px.dtype)
    py_new = torch.add(py32, uy, alpha=taut).div_(norm).to(py.dtype)
    if not masked:
        return u_new, px_new, py_new, active & (err > tol)
    m = active[:, None, None, None]
    return (
        torch.where(m, u_new, u),
        torch.where(m, px_new, px),
        torch.where(m, py_new, py),
        active & (err > tol),
    )


# The stopping test sums each pair's squared update in fixed point: integers add exactly, in any order, so
# whether a pair stops does not depend on its batch, its device's reduction order or a compiled kernel's
# (a float sum does: on 2 CPU threads 35 of 64 pairs at 340x256 got different last bits alone and in a
# batch of 64). 2**-20 px^2 is ~1/50 of the per-pixel threshold epsilon^2 = 1e-4 at OpenCV's default;
# a squared update is clamped at 2**11 px^2 (45 px in one iteration, far beyond what a step can move),
# so the sum stays below 2**63 for frames of up to 2**30 pixels.
_ERR_SCALE = 2.0**20
_ERR_CLAMP = 2.0**11


def _update_size(u_new: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B,) squared update of each pair, summed over channels and pixels, in units of 2**-20 px^2 (int64)."""
    # In place on one temporary, rounded by adding 1/2 and truncating (torch.round costs 10x a multiply on
    # the CPU): 2% of an iteration instead of 25%.
    d = u_new - u
    d.square_().mul_(_ERR_SCALE).add_(0.5).clamp_(max=_ERR_CLAMP * _ERR_SCALE)
    return d.to(torch.int64).sum(dim=(1, 2, 3))


_COMPILED: dict[object, object] = {}


def _maybe_compiled(fn, compile: bool):
    """``fn`` itself, or its ``torch.compile`` (static shapes: one graph per level shape/batch)."""
    if not compile:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=False, fullgraph=True)
    return _COMPILED[fn]


# ----------------------------------------------------------------------------------------------
# Solver


def _solve_level(
    I0: torch.Tensor,   # (B, H, W) float32
    I1: torch.Tensor,   # (B, H, W) float32
    u: torch.Tensor,    # (B, C, H, W) float32 initial flow at this level
    p: TVL1Params,
    store: torch.dtype,
    compile: bool,
    check_every: int,
) -> torch.Tensor:
    b, c, h, w = u.shape
    tol = round(p.epsilon**2 * h * w * _ERR_SCALE)  # in the fixed-point units of _update_size
    l_t = p.lambda_ * p.theta
    taut = p.tau / p.theta
    step_fn = _maybe_compiled(_primal_dual_step, compile)
    I1x, I1y = centered_gradient(I1)
    I1_stack = torch.stack((I1, I1x, I1y), dim=1)  # (B, 3, H, W), warped together
    px = torch.zeros(u.shape, dtype=store, device=u.device)  # dual variables restart at each level
    py = torch.zeros_like(px)
    for _ in range(p.warps):
        warped = warp_bicubic(I1_stack, u[:, :2])
        I1w, I1wx, I1wy = warped.unbind(1)
        grad = I1wx * I1wx + I1wy * I1wy
        rho_c = I1w - I1wx * u[:, 0] - I1wy * u[:, 1] - I0
        dirs = [I1wx, I1wy]
        if c == 3:
            # The illumination variable enters the residual as gamma * u3 (OpenCV leaves gamma^2
            # out of grad, and so do we).
            dirs.append(torch.full_like(I1wx, p.gamma))
        ivec = torch.stack(dirs, dim=1).to(store)
        grad, rho_c = grad.to(store), rho_c.to(store)
        # OpenCV restarts its error at each warp: every pair iterates again.
        active = torch.ones(b, dtype=torch.bool, device=u.device)
        # Host-side knowledge, exact when check_every == 1: while every pair is active the
        # masking can be skipped; past a check that found some done, mask until the warp ends.
        # Compiled code always masks: there the select fuses into the same kernel for free, and
        # one variant per level shape halves the graphs to compile.
        all_active = check_every == 1 and not compile
        n = 0
        done = False
        for _ in range(p.outer_iterations):
            if p.median_filtering > 1:
                med = median_filter(u[:, :2], p.median_filtering, compile)
                if not all_active:
                    med = torch.where(active[:, None, None, None], med, u[:, :2])
                u = torch.cat((med, u[:, 2:]), dim=1) if c == 3 else med
            for _ in range(p.inner_iterations):
                u, px, py, active = step_fn(
                    u, px, py, ivec, grad, rho_c, active, tol, l_t, p.theta, taut, not all_active
                )
                n += 1
                if check_every and n % check_every == 0:
                    n_active = int(active.sum())
                    done = n_active == 0
                    all_active = all_active and n_active == b
                    if done:
                        break
            if done:
                break
    return u


def tvl1(
    I0: torch.Tensor,
    I1: torch.Tensor,
    *,
    params: TVL1Params | None = None,
    init_flow: torch.Tensor | None = None,
    precision: str = "float32",
    compile: bool = False,
    check_every: int | None = None,
) -> torch.Tensor:
    """TV-L1 optical flow of a batch of grayscale pairs (Zach et al. 2007; Sanchez Perez et al. 2013).

    Args:
        I0, I1: ``(B, H, W)`` frames on any device, uint8 or floating point on the 0..255 scale
            (unlike OpenCV, float input is not multiplied by 255).
        params: algorithm parameters; OpenCV's defaults when None.
        init_flow: optional ``(B, 2, H, W)`` starting flow (OpenCV's ``useInitialFlow``): it is
            taken down the pyramid and only its coarsest level seeds the solver; e.g. the previous
            pair's flow in a video.
        precision: ``"float32"``, ``"float16"`` or ``"bfloat16"`` storage of the per-warp data
            and dual variables (see the module docstring).
        compile: ``torch.compile`` the primal-dual iteration and the median filter, with static
            shapes (CUDA-graph friendly): one graph per level shape, batch size and precision,
            so keep the batch size fixed (``tvl1_torch_pairs`` pads the last batch). Off by
            default; compiling the 5 levels takes a minute or two.
        check_every: read back every this many iterations whether all pairs have converged, to
            stop the warp early; 0 never does (fixed counts, no syncs). Default: 1 on the CPU,
            10 elsewhere. The flow does not depend on it.

    Returns:
        ``(B, 2, H, W)`` float32 flow on the input's device: channel 0 is x (right), 1 is y
        (down), ``I0[b, y, x]`` moves to ``(x + flow[b, 0, y, x], y + flow[b, 1, y, x])`` in ``I1``.
    """
    p = params if params is not None else TVL1Params()
    if I0.shape != I1.shape or I0.ndim != 3:
        raise ConfigError(f"expected I0 and I1 of one shape (B, H, W), got {tuple(I0.shape)} and {tuple(I1.shape)}")
    if I0.device != I1.device:
        raise ConfigError(f"I0 and I1 must be on one device, got {I0.device} and {I1.device}")
    b, h, w = I0.shape
    if h < 3 or w < 3:
        raise ConfigError(f"frames must be at least 3x3 pixels, got {h}x{w}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if init_flow is not None and tuple(init_flow.shape) != (b, 2, h, w):
        raise ConfigError(f"init_flow must have shape {(b, 2, h, w)}, got {tuple(init_flow.shape)}")
    if check_every is None:
        check_every = 1 if I0.device.type == "cpu" else 10
    if check_every < 0:
        raise ConfigError(f"check_every must be >= 0, got {check_every}")
    store = PRECISIONS[precision]
    dev = I0.device
    channels = 3 if p.gamma != 0 else 2
    shape_key = (b, h, w, precision, p)
    compile = compile and _may_compile(shape_key)

    # Static shapes compile each function once per (level shape, batch, precision); lift dynamo's
    # recompile limit (8 per function) so that several frame sizes or precisions in one process
    # do not hit it (with fullgraph=True that would be an error, not a fallback).
    compile_ctx = torch._dynamo.config.patch(recompile_limit=256) if compile else contextlib.nullcontext()
    with torch.no_grad(), compile_ctx:
        sizes = pyramid_sizes(h, w, p.nscales, p.scale_step)
        I0s = [I0.to(torch.float32)]
        I1s = [I1.to(torch.float32)]
        for size in sizes[1:]:
            I0s.append(resize_bilinear(I0s[-1], size, p.scale_step))
            I1s.append(resize_bilinear(I1s[-1], size, p.scale_step))

        hc, wc = sizes[-1]
        if init_flow is None:
            u = torch.zeros(b, channels, hc, wc, device=dev)
        else:
            u = init_flow.to(device=dev, dtype=torch.float32)
            for size in sizes[1:]:
                u = resize_bilinear(u, size, p.scale_step) * p.scale_step
            if channels == 3:
                u = torch.cat((u, torch.zeros_like(u[:, :1])), dim=1)

        try:
            u = _coarse_to_fine(I0s, I1s, u, sizes, p, store, compile, check_every)
        except _compile_errors() as e:
            if not compile:
                raise
            _stop_compiling(shape_key, e)
            u = _coarse_to_fine(I0s, I1s, u, sizes, p, store, False, check_every)
        return u[:, :2].contiguous()


def warm_up(batch: int, height: int, width: int, *, device: torch.device | str = "cpu", precision: str = "float32",
            compile: bool = False, params: TVL1Params | None = None) -> None:
    """Solve one untimed batch of blank pairs at this shape: the CUDA context, kernel selection and, with
    ``compile``, the graphs of every pyramid level (1-2 minutes) are then paid for before anything is timed."""
    x = torch.zeros(batch, height, width, dtype=torch.uint8, device=device)
    tvl1(x, x, params=params, precision=precision, compile=compile)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _coarse_to_fine(I0s, I1s, u, sizes, p: TVL1Params, store, compile: bool, check_every: int) -> torch.Tensor:
    """Solve every level from the coarsest, ``u`` (B, C, hc, wc) the flow to start from at the coarsest."""
    for level in range(len(sizes) - 1, -1, -1):
        u = _solve_level(I0s[level], I1s[level], u, p, store, compile, check_every)
        if level == 0:
            break
        # Zoom to the next finer level; the displacement grows by 1/scale_step, u3 does not.
        u = resize_bilinear(u, sizes[level - 1])
        scale = torch.ones(u.shape[1], 1, 1, device=u.device)
        scale[:2] = 1.0 / p.scale_step
        u = u * scale
    return u


# torch.compile specialises on shapes: every new frame size (with its batch, precision and parameters)
# compiles each pyramid level again, 1-2 minutes, and dynamo stops with a hard error past its limits
# (with fullgraph=True, after about 51 sizes in one process: 5 levels x 2 functions each against
# accumulated_recompile_limit = 256). A dataset of many frame sizes (HMDB51 or Kinetics at a fixed short
# side) would pay for each; past this many sizes in a process new ones run eagerly, with a message. Resize
# to one size (flowprep extract --size WxH) to compile once. Once dynamo has failed, its limits being
# process-wide, no new size is compiled either.
MAX_COMPILED_SIZES = 16
_compiled_shapes: set = set()
_eager_shapes: set = set()
_compile_failed: list[str] = []


def _may_compile(key) -> bool:
    if key in _compiled_shapes:
        return True
    if key not in _eager_shapes and len(_compiled_shapes) < MAX_COMPILED_SIZES and not _compile_failed:
        _compiled_shapes.add(key)
        return True
    if key not in _eager_shapes:
        _eager_shapes.add(key)
        why = (f"torch.compile failed in this process ({_compile_failed[0]})" if _compile_failed
               else f"{MAX_COMPILED_SIZES} frame sizes compiled in this process already")
        log.warning("tvl1-torch: %s; (batch, height, width) %s runs without torch.compile (resize to one size, "
                    "e.g. --size 340x256, to compile once)", why, key[:3])
    return False


def _stop_compiling(key, error: BaseException) -> None:
    _compiled_shapes.discard(key)
    _eager_shapes.add(key)
    _compile_failed.append(type(error).__name__)
    log.warning("tvl1-torch: torch.compile failed for (batch, height, width) %s (%s: %s); solving it and every "
                "new size without compiling from now on", key[:3], type(error).__name__,
                " ".join(str(error).split())[:300])


def _compile_errors() -> tuple[type[BaseException], ...]:
    """What dynamo raises when it gives up (recompile limits under fullgraph=True, backend failures)."""
    import torch._dynamo.exc as exc

    return (exc.FailOnRecompileLimitHit, exc.TorchDynamoException)


# ----------------------------------------------------------------------------------------------
# flowprep method


# batch_size 0 picks per device: 1 on the CPU, where a batch only adds the masked work of pairs
# that converged early (run one process per core instead), and 64 on a GPU (0.86 GB of tensors at 340x256,
# bench/tvl1_memory.py).
# warm_start, warm_levels, warm_warps: see WarmStart (ours, not OpenCV's; off by default).
TVL1_TORCH_DEFAULTS = dict(TVL1_DEFAULTS, device="auto", precision="float32", batch_size=0, compile=False,
                           warm_start=False, warm_levels=0, warm_warps=0)
_AUTO_BATCH = {"cpu": 1, "cuda": 64}
_WARM_KEYS = {"warm_start": "enabled", "warm_levels": "levels", "warm_warps": "warps"}


# Where and how fast it runs, not the flow it computes (each pair stops on its own, so the batch size does not
# change its flow; compiled code computes the same operations).
RUNTIME_PARAMS = ("device", "batch_size", "compile")


@dataclass(frozen=True)
class WarmStart:
    """Start each pair of a video from the previous pair's flow (``tvl1-torch``'s ``warm_*`` parameters).

    In a video the motion changes little from one pair to the next, so the previous flow already holds
    the large displacements that the coarse pyramid levels exist to find: a warm pair can skip them
    (``levels``) and use fewer warps (``warps``), and the per-pair stopping rule ends its iterations
    sooner. Our addition: OpenCV has ``useInitialFlow`` (the flow seeds the coarsest level) but no way to
    shorten the pyramid. Measured on flowprep.groundtruth's sequences and the Middlebury pair in
    ``bench/tvl1_bench.py``; see the README.

    A pair is warm when it starts where the previous pair of the same call ended (its first frame equals
    the previous pair's second frame, as in ``video_flow``); the first pair of a video, and any pair that
    does not continue the previous one, is solved cold with the full parameters. Chained pairs are solved
    one after another whatever the batch size, so a pair's flow depends only on its video's earlier pairs.

    Attributes:
        enabled: warm-start chained pairs.
        levels: pyramid levels of a warm pair, finest first (the previous flow is resized to the coarsest
            of them); 0: all ``nscales`` levels, which is OpenCV's ``useInitialFlow``.
        warps: warps per level of a warm pair; 0: ``warps``.
    """

    enabled: bool = False
    levels: int = 0
    warps: int = 0

    def __post_init__(self):
        if self.levels < 0 or self.warps < 0:
            raise ConfigError(f"warm_levels and warm_warps must be >= 1, or 0 for the cold values, got "
                             f"{self.levels} and {self.warps}")

    def params(self, cold: TVL1Params) -> TVL1Params:
        """The TV-L1 parameters of a warm pair."""
        return replace(cold, nscales=self.levels or cold.nscales, warps=self.warps or cold.warps)


@dataclass(frozen=True)
class TorchRun:
    """A ``tvl1-torch`` parameter dict, checked and split into what runs where and the TV-L1 parameters.

    Attributes:
        device: the ``torch.device`` to solve on.
        precision: storage precision of the per-warp data (a key of :data:`PRECISIONS`).
        batch_size: pairs solved at once (0 in the parameters is resolved here: 1 on the CPU, 64 on CUDA).
        compile: ``torch.compile`` the iteration.
        tvl1: the TV-L1 parameters.
        warm: warm start from the previous pair's flow (:class:`WarmStart`).
    """

    device: torch.device
    precision: str
    batch_size: int
    compile: bool
    tvl1: TVL1Params
    warm: "WarmStart"


def parse_params(params: dict) -> TorchRun:
    """Check a ``tvl1-torch`` parameter dict (defaults filled in) and return it typed.

    Raises:
        ConfigError: an unknown name or a bad value, naming it.
    """
    opts = dict(TVL1_TORCH_DEFAULTS, **params)
    unknown = set(opts) - set(TVL1_TORCH_DEFAULTS)
    if unknown:
        raise ConfigError(
            f"tvl1-torch has no parameter(s) {', '.join(sorted(unknown))}; it takes "
            f"{', '.join(sorted(TVL1_TORCH_DEFAULTS))}"
        )
    device = resolve_device(str(opts.pop("device")))
    precision = opts.pop("precision")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    batch_size = int(opts.pop("batch_size"))
    if batch_size < 0:
        raise ConfigError(f"batch_size must be >= 1, or 0 to pick one for the device, got {batch_size}")
    compile_ = opts.pop("compile")
    if isinstance(compile_, str):  # e.g. from a command line
        compile_ = compile_.strip().lower() in ("1", "true", "yes", "on")
    warm = warm_start_options(opts)
    for key in _WARM_KEYS:
        opts.pop(key)
    return TorchRun(device, precision, batch_size or _AUTO_BATCH[device.type], bool(compile_), TVL1Params(**opts), warm)


def warm_start_options(params: dict) -> WarmStart:
    """The :class:`WarmStart` of a ``tvl1-torch`` parameter dict (absent keys: off)."""
    opts = {field: params[key] for key, field in _WARM_KEYS.items() if key in params}
    if isinstance(opts.get("enabled"), str):  # e.g. from a command line
        opts["enabled"] = opts["enabled"].strip().lower() in ("1", "true", "yes", "on")
    return WarmStart(**{k: (bool(v) if k == "enabled" else int(v)) for k, v in opts.items()})


def validate_params(params: dict) -> None:
    """Raise ``ValueError`` naming the bad entry of a ``tvl1-torch`` parameter dict."""
    parse_params(params)


def tvl1_torch_pairs(prev: np.ndarray, nxt: np.ndarray, **params) -> np.ndarray:
    """flowprep method: ``(B, H, W)`` uint8 pairs -> ``(B, H, W, 2)`` float32 flow via :func:`tvl1`.

    ``params``: the TV-L1 parameters of ``TVL1_DEFAULTS`` plus ``device`` ("cpu", "cuda", "auto"),
    ``precision`` ("float32", "float16", "bfloat16"), ``batch_size`` (pairs solved at once; 0: 1 on
    the CPU, 64 on CUDA), ``compile`` and ``warm_start`` / ``warm_levels`` / ``warm_warps`` (see
    :class:`WarmStart`).
    """
    check_pairs(prev, nxt)
    run = parse_params(params)
    if run.warm.enabled:
        return _solve_chained(prev, nxt, run)
    out = np.empty(prev.shape + (2,), np.float32)
    for start in range(0, len(prev), run.batch_size):
        stop = min(start + run.batch_size, len(prev))
        a = torch.from_numpy(np.ascontiguousarray(prev[start:stop])).to(run.device)
        b = torch.from_numpy(np.ascontiguousarray(nxt[start:stop])).to(run.device)
        n = stop - start
        if run.compile and n < run.batch_size:
            # A compiled step is specialised to its shapes: pad the last chunk with copies of
            # its last pair rather than compile again for one odd batch.
            pad = run.batch_size - n
            a = torch.cat((a, a[-1:].expand(pad, -1, -1)))
            b = torch.cat((b, b[-1:].expand(pad, -1, -1)))
        flow = tvl1(a, b, params=run.tvl1, precision=run.precision, compile=run.compile)[:n]
        out[start:stop] = flow.permute(0, 2, 3, 1).cpu().numpy()
    return out


def _solve_chained(prev, nxt, run: "TorchRun") -> np.ndarray:
    """Pairs one at a time, each chained pair warm-started from the previous pair's flow."""
    out = np.empty(prev.shape + (2,), np.float32)
    flow = None  # (1, 2, H, W) on the device: the previous pair's flow
    for i in range(len(prev)):
        a = torch.from_numpy(np.ascontiguousarray(prev[i : i + 1])).to(run.device)
        b = torch.from_numpy(np.ascontiguousarray(nxt[i : i + 1])).to(run.device)
        chained = i > 0 and np.array_equal(prev[i], nxt[i - 1])
        flow = tvl1(a, b, params=run.warm.params(run.tvl1) if chained else run.tvl1, init_flow=flow if chained else None,
                    precision=run.precision, compile=run.compile)
        out[i] = flow[0].permute(1, 2, 0).cpu().numpy()
    return out


def device_solver(params: dict) -> DeviceSolver:
    """The :class:`~flowprep.registry.DeviceSolver` through which the batched pipeline runs ``tvl1-torch``."""
    run = parse_params(params)

    def solve(a, b):
        # The global tvl1 is looked up at each call, so that tests can replace it to inject device errors.
        return tvl1(a, b, params=run.tvl1, precision=run.precision, compile=run.compile)

    # A warm-started pair needs its video's previous pair first: batching pairs across videos does not apply.
    per_video = ("warm_start solves each video's pairs one after another from the previous pair's flow"
                 if run.warm.enabled else "")
    return DeviceSolver(run.device, run.batch_size, run.compile, solve, per_video)


register_method(
    "tvl1-torch",
    TVL1_TORCH_DEFAULTS,
    "TV-L1 (Zach et al. 2007) in PyTorch, batched, CPU or CUDA; OpenCV's algorithm and defaults",
    devices=("cpu", "cuda"),
    validate=validate_params,
    runtime_params=RUNTIME_PARAMS,
    device_solver=device_solver,
)(tvl1_torch_pairs)
