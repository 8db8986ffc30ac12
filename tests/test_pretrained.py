"""Pretrained weights by name (download, hash, cache, offline, weights_only) and 2D -> 3D inflation.

No weights can be fetched here: a small HTTP server on 127.0.0.1 serves state dicts made in the test.
"""
import hashlib
import http.server
import io
import pathlib
import socket
import threading

import pytest
import torch

from twostream import pretrained as P
from twostream.models import (adapt_input_conv, inflate_resnet, inflate_state_dict, inflate_weight, load_state, r3d_18,
                              resnet18)
from twostream.pretrained import PretrainedError, Weights, download, load_weights


@pytest.fixture
def server(tmp_path):
    """(base URL, served directory, list of requested paths) of a server on 127.0.0.1."""
    root = tmp_path / "served"
    root.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/models/", root, requests
    httpd.shutdown()
    httpd.server_close()


def _publish(root: pathlib.Path, obj, arch: str = "resnet18") -> Weights:
    """Save ``obj`` under root/models/ with torchvision's naming: <arch>-<first 8 hex of its SHA-256>.pth."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    name = f"{arch}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / name).write_bytes(data)
    return Weights(name, arch, "imagenet")


def test_download_checks_hash_then_uses_the_cache(server, tmp_path, capsys):
    base, root, requests = server
    state = resnet18(base_width=8).state_dict()
    w = _publish(root, state)
    cache = tmp_path / "cache"
    path = download(w, base_url=base, directory=cache, progress=True)
    assert path == cache / w.file and path.read_bytes() == (root / "models" / w.file).read_bytes()
    assert requests == [f"/models/{w.file}"]
    assert w.file in capsys.readouterr().err  # the progress bar, named after the file
    assert sorted(p.name for p in cache.iterdir()) == [w.file]  # no temporary file left
    assert download(w, base_url=base, directory=cache) == path
    assert len(requests) == 1  # second call: the cache, checked against the hash, no request


def test_pretrained_by_name_into_the_torch_hub_cache(server, tmp_path, monkeypatch):
    base, root, requests = server
    src = resnet18(base_width=8)
    w = _publish(root, src.state_dict())
    monkeypatch.setitem(P.FILES, w.file, w)
    monkeypatch.setitem(P.PRETRAINED, "imagenet", {"resnet18": w.file, "r3d_18": w.file})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(P.BASE_URL_ENV, base)  # the URL base from the environment

    flow = resnet18(num_classes=5, in_channels=20, base_width=8)
    assert load_weights(flow, "imagenet", "resnet18", progress=False) == ["fc.bias", "fc.weight"]
    assert (tmp_path / "torch" / "hub" / "checkpoints" / w.file).is_file()
    # the temporal stream: cross-modality init of the first layer
    torch.testing.assert_close(flow.conv1.weight, adapt_input_conv(src.conv1.weight, 20))
    torch.testing.assert_close(flow.layer3[1].conv2.weight, src.layer3[1].conv2.weight)

    # a 3D ResNet from the same 2D file: inflated, and its first conv adapted to flow's 2 channels
    video = r3d_18(num_classes=5, in_channels=2, base_width=8)
    assert load_weights(video, "imagenet", "r3d_18", progress=False) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(video.stem[0].weight, adapt_input_conv(inflate_weight(src.conv1.weight, 3), 2))
    torch.testing.assert_close(video.layer2[0].conv1[1].running_var, src.layer2[0].bn1.running_var)
    assert len(requests) == 1


def test_kinetics_weights_adapt_a_3d_first_conv_to_flow(server, tmp_path, monkeypatch):
    base, root, _ = server
    src = r3d_18(base_width=8)
    w = _publish(root, src.state_dict(), "r3d_18")
    monkeypatch.setitem(P.FILES, w.file, w)
    monkeypatch.setitem(P.PRETRAINED, "kinetics400", {"r3d_18": w.file})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    flow = r3d_18(num_classes=6, in_channels=2, base_width=8)
    assert load_weights(flow, "kinetics400", "r3d_18", base_url=base, progress=False) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(flow.stem[0].weight, adapt_input_conv(src.stem[0].weight, 2))  # (8, 2, 3, 7, 7)


def test_a_corrupt_download_is_refused_and_removed(server, tmp_path):
    base, root, _ = server
    (root / "models").mkdir()
    (root / "models" / "resnet18-f37072fd.pth").write_bytes(b"not the published file" * 100)
    cache = tmp_path / "cache"
    with pytest.raises(PretrainedError, match="SHA-256.*does not start with f37072fd.*refused and removed"):
        download(P.FILES["resnet18-f37072fd.pth"], base_url=base, directory=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_a_corrupt_cached_file_is_replaced(server, tmp_path):
    base, root, requests = server
    w = _publish(root, resnet18(base_width=8).state_dict())
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / w.file).write_bytes(b"truncated")
    path = download(w, base_url=base, directory=cache, progress=False)
    assert path.read_bytes() == (root / "models" / w.file).read_bytes() and len(requests) == 1


def test_offline_names_the_url_and_where_to_put_the_file(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = P.FILES["r2plus1d_18-91a641e6.pth"]
    with pytest.raises(PretrainedError) as e:
        download(w, base_url=f"http://127.0.0.1:{port}/models", directory=tmp_path / "c", progress=False)
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}/models/r2plus1d_18-91a641e6.pth" in msg
    assert str(tmp_path / "c" / "r2plus1d_18-91a641e6.pth") in msg and "--pretrained" in msg
    assert not (tmp_path / "c").exists() or list((tmp_path / "c").iterdir()) == []


class _Payload:
    """Unpickling this would create a file: the code a malicious weights file could carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_weights_only_refuses_a_file_that_carries_code(server, tmp_path):
    base, root, _ = server
    marker = tmp_path / "pwned"
    w = _publish(root, {"conv1.weight": torch.zeros(1), "x": _Payload(marker)})
    path = download(w, base_url=base, directory=tmp_path / "cache", progress=False)  # the hash is right...
    with pytest.raises(ValueError, match="weights-only"):  # ...but loading refuses it
        load_weights(resnet18(base_width=8), path, "resnet18")
    assert not marker.exists()


def test_names_that_do_not_fit_the_arch():
    with pytest.raises(PretrainedError, match="no imagenet weights for --arch r2plus1d_18.*kinetics400"):
        P.weights_for("imagenet", "r2plus1d_18")
    with pytest.raises(PretrainedError, match="names: imagenet, kinetics400"):
        P.resolve("imagenette", "resnet18")
    with pytest.raises(FileNotFoundError, match="no such file"):
        P.resolve("missing/weights.pth", "resnet18")
    assert P.FILES["resnet18-f37072fd.pth"].url(None).startswith("https://download.pytorch.org/models/")


# --- 2D -> 3D inflation --------------------------------------------------------------------------


def _randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def test_inflated_net_answers_a_clip_of_identical_frames_like_the_2d_net():
    torch.manual_seed(0)
    net2d = resnet18(num_classes=7, base_width=8).eval()
    _randomise_bn(net2d)
    net3d = inflate_resnet(net2d, time_kernel=3).eval()
    assert net3d.state_dict().keys() == net2d.state_dict().keys()  # the 2D names: ImageNet files load as they are
    image = torch.randn(2, 3, 32, 32)
    clip = image.unsqueeze(2).expand(-1, -1, 3, -1, -1)  # (N, 3, T=3, H, W), every frame the image
    with torch.no_grad():
        torch.testing.assert_close(net3d(clip), net2d(image), rtol=1e-4, atol=1e-5)
        moving = clip.clone()
        moving[:, :, 0] = 0
        assert (net3d(moving) - net2d(image)).abs().max() > 1e-3  # and it does look at time


def test_r3d_blocks_from_inflated_resnet_weights_answer_like_the_2d_blocks():
    torch.manual_seed(0)
    net2d = resnet18(base_width=8).eval()
    _randomise_bn(net2d)
    net3d = r3d_18(base_width=8).eval()
    state = inflate_state_dict(net2d.state_dict(), net3d)
    assert set(state) == set(net3d.state_dict())  # every R3D-18 entry has a ResNet-18 counterpart
    assert load_state(net3d, state, "resnet18") == ["fc.bias", "fc.weight"]  # 1000 ImageNet classes vs 400
    x = torch.randn(1, 8, 16, 16)
    clip = x.unsqueeze(2).expand(-1, -1, 5, -1, -1)
    with torch.no_grad():
        # the middle frame is beyond the reach of the zero padding at the clip's ends
        torch.testing.assert_close(net3d.layer1[0](clip)[:, :, 2], net2d.layer1[0](x), rtol=1e-4, atol=1e-5)
        img = torch.randn(1, 3, 32, 32)
        stem = net3d.stem(img.unsqueeze(2).expand(-1, -1, 5, -1, -1))[:, :, 2]
        torch.testing.assert_close(stem, net2d.relu(net2d.bn1(net2d.conv1(img))), rtol=1e-4, atol=1e-5)


def test_train_cli_starts_from_pretrained_by_name(server, tmp_path, monkeypatch):
    """``twostream train --arch r3d_18 --pretrained imagenet``: downloaded, inflated, adapted to flow, trained on."""
    from conftest import make_dataset

    from flowprep.decode import DecodeConfig
    from flowprep.extract import ExtractConfig, extract_dataset
    from twostream.checkpoint import load_checkpoint
    from twostream.cli import main

    base, root, requests = server
    src = resnet18(base_width=8)
    w = _publish(root, src.state_dict())
    monkeypatch.setitem(P.FILES, w.file, w)
    monkeypatch.setitem(P.PRETRAINED, "imagenet", {"r3d_18": w.file})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(P.BASE_URL_ENV, base)
    ds = make_dataset(tmp_path / "ds", per_class=2, num_frames=8, size=(32, 24))
    assert extract_dataset(ds, tmp_path / "store", ExtractConfig(method="dis", decode=DecodeConfig(short_side=None)),
                           jobs=1, progress=False).ok
    assert main(["train", "--store", str(tmp_path / "store"), "--stream", "temporal", "--arch", "r3d_18",
                 "--width", "8", "--num-frames", "4", "--input-size", "16", "--epochs", "1", "--batch-size", "4",
                 "--lr", "1e-12", "--workers", "0", "--device", "cpu", "--val-clips", "1", "--quiet",
                 "--pretrained", "imagenet", "-o", str(tmp_path / "run")]) == 0
    assert requests == [f"/models/{w.file}"]
    model = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    torch.testing.assert_close(model["stem.0.weight"], adapt_input_conv(inflate_weight(src.conv1.weight, 3), 2))
    torch.testing.assert_close(model["layer3.1.conv2.0.weight"], inflate_weight(src.layer3[1].conv2.weight, 3))
