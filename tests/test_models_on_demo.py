"""Every model choice learns on the demo data through the real data pipeline."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from flowprep.decode import DecodeConfig
from flowprep.extract import ExtractConfig, extract_dataset
from flowprep.store import Store
from twostream.data import TrainClips
from twostream.models import ARCHS
from twostream.inference import make_model
from twostream.train import TrainConfig


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("make_demo", Path(__file__).parents[1] / "data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    tmp = tmp_path_factory.mktemp("demo")
    root = mod.make_demo(tmp / "videos", videos_per_class=2, num_frames=18, size=(40, 40))
    summary = extract_dataset(root, tmp / "store", ExtractConfig(method="farneback", decode=DecodeConfig(short_side=None)),
                              jobs=1, progress=False)
    assert summary.ok and summary.done == 12
    return Store(tmp / "store")


RGB_ONLY = ("single_frame", "late_fusion", "early_fusion")  # 2D nets over RGB frames
CASES = [(arch, stream) for arch in sorted(ARCHS) if arch not in ("resnet34", "resnet50")
         for stream in ("spatial", "temporal") if not (arch in RGB_ONLY and stream == "temporal")]


@pytest.mark.parametrize("arch, stream", CASES)
def test_loss_falls_on_demo_data(demo_store, arch, stream):
    torch.manual_seed(0)
    cfg = TrainConfig(store=str(demo_store.root), out_dir="unused", stream=stream, arch=arch, base_width=8,
                      num_frames=None if arch.startswith("resnet") else 16, input_size=32)
    spec = cfg.clip_spec()
    ds = TrainClips(demo_store, demo_store.video_ids(), spec, seed=0)
    x, y = next(iter(DataLoader(ds, batch_size=12)))
    model = make_model(arch, spec, len(demo_store.classes), dropout=0.0, base_width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
