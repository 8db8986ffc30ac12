"""twostream export: ONNX (run in onnxruntime) and TorchScript give PyTorch's outputs for every arch and both
streams, at another batch size than the one traced; the input layout is read back from the metadata."""
from dataclasses import asdict

import numpy as np
import pytest
import torch

from twostream.checkpoint import save_checkpoint
from twostream.cli import main
from twostream.inference import load_model
from twostream.export import export_checkpoint, input_layout, read_metadata
from twostream.models import ARCHS
from twostream.inference import make_model
from twostream.train import TrainConfig

ort = pytest.importorskip("onnxruntime")  # the test extra installs it; without it only these tests skip

FRAMES = {"c3d": 16, "slow_fusion": 10}  # the others: 4-frame clips, 2-field flow stacks
# ONNX has no adaptive pooling to a size that does not divide the input: C3D's pool5 must give 4 x 4 (or 8 x 8...),
# which it does at the published input of 112 x 112.
SIZES = {"c3d": 112}
STORE = {"method": "farneback", "params": {"num_levels": 5}, "decode": {"size": None, "short_side": 64, "fps": None,
                                                                    "stride": 1, "max_truncation": 0.05},
         "bound": 20.0, "mapping": "symmetric", "flow_format": "jpeg"}


def make_checkpoint(path, arch: str, stream: str, *, classes=("a", "b", "c", "d", "e"), size: int | None = None):
    """A checkpoint as ``twostream train`` writes it, of a tiny net with non-trivial BatchNorm statistics."""
    layout_is_frame = arch.startswith("resnet")
    frames = (1 if stream == "spatial" else 2) if layout_is_frame else FRAMES.get(arch, 4)
    size = size or SIZES.get(arch, 16)
    cfg = TrainConfig(store="store", out_dir="run", stream=stream, arch=arch, base_width=4, num_frames=frames,
                      input_size=size, dropout=0.5)
    spec = cfg.clip_spec()
    torch.manual_seed(0)
    model = make_model(arch, spec, len(classes), cfg.dropout, cfg.base_width)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    meta = {"classes": list(classes), "spec": asdict(spec), "store": STORE, "num_classes": len(classes),
            "best_val_video_acc": 0.0, "world_size": 1}
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "epoch": 0,
                           "config": asdict(cfg), "meta": meta})
    return spec


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster than several, and far faster on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("stream", ["spatial", "temporal"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_onnx_and_torchscript_equal_pytorch(tmp_path, arch, stream):
    spec = make_checkpoint(tmp_path / "best.pt", arch, stream)
    model, ckpt = load_model(tmp_path / "best.pt", torch.device("cpu"))
    layout = export_checkpoint(tmp_path / "best.pt", tmp_path / "m.onnx")
    assert main(["export", str(tmp_path / "best.pt"), "-o", str(tmp_path / "m.pt")]) == 0

    x = torch.randn(3, *layout["input_shape"][1:])  # batch 3; traced with 2
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "input" and inp.shape[0] == "N" and inp.shape[1:] == layout["input_shape"][1:]
    np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], want, rtol=0, atol=1e-4)
    scripted = torch.jit.load(str(tmp_path / "m.pt"))
    with torch.no_grad(), torch.jit.optimized_execution(False):  # skip the JIT's optimising passes: one run
        np.testing.assert_allclose(scripted(x).numpy(), want, rtol=0, atol=1e-4)

    for path in (tmp_path / "m.onnx", tmp_path / "m.pt"):
        meta = read_metadata(path)
        assert meta == input_layout(ckpt)
        assert meta["arch"] == arch and meta["classes"] == ["a", "b", "c", "d", "e"]
        c, s = (3 if stream == "spatial" else 2), spec.input_size
        if spec.layout == "frame":
            assert meta["input_shape"] == ["N", c * spec.num_frames, s, s] and meta["layout"] == "N,C,H,W"
        else:
            assert meta["input_shape"] == ["N", c, spec.num_frames, s, s] and meta["layout"] == "N,C,T,H,W"
        if stream == "spatial":
            assert meta["rgb_mean"] == pytest.approx([123.675, 116.28, 103.53])
            assert meta["rgb_std"] == pytest.approx([58.395, 57.12, 57.375])
        else:
            assert meta["flow_bound"] == 20.0 and meta["mean_subtraction"] is True
            assert meta["flow_mapping"] == "symmetric"
        assert meta["store"]["decode"]["short_side"] == 64


def test_onnx_metadata_props_hold_each_field(tmp_path):
    onnx = pytest.importorskip("onnx")
    make_checkpoint(tmp_path / "best.pt", "resnet18", "temporal")
    export_checkpoint(tmp_path / "best.pt", tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert props["stream"] == "temporal" and props["channels"] == "4" and props["flow_bound"] == "20.0"
    assert props["layout"] == "N,C,H,W" and props["mean_subtraction"] == "true"


def test_export_refuses_an_unknown_suffix(tmp_path, capsys):
    make_checkpoint(tmp_path / "best.pt", "resnet18", "spatial")
    assert main(["export", str(tmp_path / "best.pt"), "-o", str(tmp_path / "m.bin")]) == 2
    assert "cannot tell the format from the suffix" in capsys.readouterr().err
    assert not (tmp_path / "m.bin").exists()
