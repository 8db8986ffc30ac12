"""Export a trained stream to ONNX or TorchScript, with the input layout in the file's metadata.

``twostream export CKPT -o model.onnx`` (or ``model.pt`` / ``.ts`` for TorchScript) writes the network of a
checkpoint, any ``--arch``, with a dynamic batch dimension. Everything a deployer needs to prepare inputs
without reading this code travels in the file (:func:`input_layout`): the tensor layout, channels, frames,
size, the RGB mean/std or the flow bound, mapping and mean subtraction, the frame and flow settings of the
store, the class names, and what the output is (logits; evaluation averages their softmax over views).
ONNX keeps it in ``metadata_props`` (each field as a key, and the whole as JSON under ``twostream``),
TorchScript in the extra file ``twostream.json`` (``torch.jit.load(path, _extra_files={"twostream.json": ""})``).

ONNX export uses torch's TorchScript-based exporter (``dynamo=False``): with torch 2.13 it needs only the
``onnx`` package, runs offline and takes about a second per model, where the ``torch.export``-based one
needs ``onnxscript`` and takes ten times longer; both give the same graph for these convolutional nets.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from flowprep.store import atomic_path

from .checkpoint import Checkpoint
from .errors import ConfigError
from .transforms import IMAGENET_MEAN, IMAGENET_STD

FORMATS = ("onnx", "torchscript")
METADATA_KEY = "twostream"
INPUT_NAME, OUTPUT_NAME = "input", "scores"


def format_for(path: str | Path) -> str:
    """``onnx`` for ``.onnx``, ``torchscript`` for ``.pt``/``.ts``/``.torchscript``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".pt", ".ts", ".torchscript"):
        return "torchscript"
    raise ConfigError(f"{path}: cannot tell the format from the suffix; use .onnx or .pt (or pass --format)")


def input_layout(ck: Checkpoint) -> dict:
    """What one network input is, from a checkpoint (:func:`twostream.checkpoint.read_checkpoint`): a JSON-ready dict.

    Keys: ``arch``, ``stream``, ``classes``, ``input_name``, ``input_shape`` (``N`` dynamic), ``layout``,
    ``channels``, ``frames``, ``frame_stride``, ``height``, ``width``, ``output``, then for RGB ``rgb_mean``,
    ``rgb_std`` (on 0-255 pixels, RGB order), for flow ``flow_bound``, ``flow_mapping``, ``mean_subtraction``
    and ``channel_order``; and ``store``: the frame, flow and quantisation settings of the training data.
    """
    spec = ck.spec
    c = 3 if spec.stream == "spatial" else 2
    t, s = spec.num_frames, spec.input_size
    frame = spec.layout == "frame"
    shape = ["N", c * t if frame else c] + ([] if frame else [t]) + [s, s]
    out = {
        "format": "twostream-export", "version": 1,
        "arch": ck.config.arch, "stream": spec.stream, "classes": list(ck.classes),
        "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
        "layout": "N,C,H,W" if frame else "N,C,T,H,W", "input_shape": shape,
        "channels": shape[1], "frames": t, "frame_stride": spec.stride, "height": s, "width": s,
        "output": "logits (N, num_classes); evaluation averages softmax(logits) over clips x crops",
    }
    if spec.stream == "spatial":
        out.update(rgb_mean=[float(v) for v in IMAGENET_MEAN], rgb_std=[float(v) for v in IMAGENET_STD],
                   normalisation="(pixel - rgb_mean) / rgb_std on 0-255 RGB pixels",
                   channel_order=("R,G,B per frame, frames consecutive" if frame and t > 1 else "R,G,B"))
    else:
        out.update(flow_bound=float(ck.store.bound), flow_mapping=ck.store.mapping,
                   mean_subtraction=bool(spec.subtract_mean),
                   normalisation=("flow in pixels of the network input" +
                                  (", minus each field's spatial mean" if spec.subtract_mean else "") +
                                  ", divided by flow_bound"),
                   channel_order=("x0,y0,x1,y1,... (x and y of each flow field interleaved)" if frame else "x,y"))
    settings = ck.store.to_json()
    out["store"] = {k: settings[k] for k in ("method", "params", "decode", "bound", "mapping", "flow_format")}
    return out


def _example(layout: dict, batch: int) -> torch.Tensor:
    shape = [batch] + layout["input_shape"][1:]
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def export_model(model: torch.nn.Module, layout: dict, out: str | Path, *, fmt: str | None = None,
                 opset: int = 17) -> Path:
    """Write ``model`` (eval mode, CPU) to ``out`` with ``layout`` as its metadata; the batch size stays free.

    Args:
        model: the network.
        layout: :func:`input_layout` of its checkpoint.
        out: the file to write (atomically).
        fmt: ``onnx`` or ``torchscript`` (default: from the suffix).
        opset: ONNX opset.
    """
    fmt = fmt or format_for(out)
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = model.to("cpu").eval()
    example = _example(layout, 2)
    text = json.dumps(layout, sort_keys=True)
    with warnings.catch_warnings():
        # The models check their input's shape in Python; for a fixed C, T, H, W the check is a constant.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        with atomic_path(out) as tmp, torch.no_grad():
            if fmt == "onnx":
                try:
                    import onnx
                except ImportError:
                    raise ConfigError("ONNX export needs the onnx package: pip install onnx") from None
                try:
                    torch.onnx.export(model, (example,), str(tmp), input_names=[INPUT_NAME],
                                      output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                                      opset_version=opset, dynamo=False)
                except torch.onnx.errors.OnnxExporterError as e:  # e.g. C3D's 4 x 4 pool from a small input
                    first = str(e).strip().splitlines()[0]
                    raise ConfigError(f"{layout['arch']} at input {layout['height']}x{layout['width']} cannot be "
                                     f"exported to ONNX: {first}") from None
                proto = onnx.load(str(tmp))
                props = {METADATA_KEY: text}
                props.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in layout.items()})
                for k, v in props.items():
                    entry = proto.metadata_props.add()
                    entry.key, entry.value = k, v
                onnx.save(proto, str(tmp))
            else:
                traced = torch.jit.trace(model, example, check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={f"{METADATA_KEY}.json": text})
    return Path(out)


def read_metadata(path: str | Path) -> dict:
    """The :func:`input_layout` stored in an exported file (ONNX or TorchScript)."""
    path = Path(path)
    if format_for(path) == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        if METADATA_KEY not in props:
            raise ConfigError(f"{path}: no twostream metadata in this ONNX file")
        return json.loads(props[METADATA_KEY])
    extra = {f"{METADATA_KEY}.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[f"{METADATA_KEY}.json"]:
        raise ConfigError(f"{path}: no twostream metadata in this TorchScript file")
    return json.loads(extra[f"{METADATA_KEY}.json"])


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, fmt: str | None = None, opset: int = 17) -> dict:
    """Export the network of a twostream checkpoint; returns the metadata written (see :func:`input_layout`)."""
    from .inference import load_model

    model, ck = load_model(checkpoint, torch.device("cpu"))
    layout = input_layout(ck)
    export_model(model, layout, out, fmt=fmt, opset=opset)
    return layout
