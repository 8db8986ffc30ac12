"""CPU tests of code paths that only a GPU runs (autocast choice, host syncs, channels-last benches, the GPU check)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from twostream.distributed import amp_policy
from twostream.models import build_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("capability, dtype, scales", [((7, 0), torch.float16, True), ((7, 5), torch.float16, True),
                                                       ((8, 0), torch.bfloat16, False), ((9, 0), torch.bfloat16, False)])
def test_bfloat16_only_on_ampere_and_newer(monkeypatch, capability, dtype, scales):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    p = amp_policy(torch.device("cuda"), True)
    assert p.dtype == dtype and p.scales_loss == scales
    assert f"{capability[0]}.{capability[1]}" in p.describe()
    assert amp_policy(torch.device("cuda"), False).dtype is None
    assert amp_policy(torch.device("cpu"), True).dtype is None


def test_float16_training_refuses_to_run_without_a_scaler(monkeypatch):
    from twostream.train import train_one_epoch

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    model = build_model("resnet18", num_classes=3, in_channels=3, base_width=8)
    batch = [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="GradScaler"):
        # the device is only looked at for its type: the policy is decided before anything runs on it
        train_one_epoch(model, batch, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cuda"),
                        epoch=0, progress=False)


def test_training_reads_back_loss_and_accuracy_once_per_log_interval(monkeypatch):
    # Each .item() is a host sync on a GPU; the loop must not do one per step.
    from twostream import train as T

    calls = []
    real_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: calls.append(1) or real_item(self))
    monkeypatch.setattr(T, "LOG_EVERY", 5)
    model = build_model("resnet18", num_classes=3, in_channels=3, base_width=8)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 3, (2,), generator=g)) for _ in range(12)]
    # (check_every: a GPU's cadence; on the CPU, where a read-back costs nothing, the count is read every batch)
    stats = T.train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.01), torch.device("cpu"),
                              epoch=0, progress=False, check_every=T.LOG_EVERY)
    # Per interval of 5 batches: the count of non-finite losses and the first of them (training stops on one); at
    # the end those two, the loss and the accuracy. Not one per step.
    intervals = 12 // 5
    assert len(calls) == 2 * intervals + 4
    assert 0 <= stats["acc"] <= 1 and stats["loss"] > 0
    calls.clear()
    T.train_one_epoch(model, batches, torch.optim.SGD(model.parameters(), lr=0.01), torch.device("cpu"),
                      epoch=0, progress=True, check_every=T.LOG_EVERY)
    assert len(calls) == 4 * intervals + 4  # and the loss and accuracy per interval for the progress bar


@pytest.mark.parametrize("arch", ["resnet18", "single_frame", "early_fusion", "r3d_18"])
def test_loader_bench_model_rate_with_channels_last_for_every_input_rank(arch):
    # The bench used to force 4-D channels-last on 5-D clips ("required rank 4 tensor") under --device cuda.
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import loader_bench
    finally:
        sys.path.pop(0)
    from twostream.models import ARCH_INPUT

    clip = ARCH_INPUT[arch] == "clip"
    model = build_model(arch, num_classes=3, in_channels=3, base_width=8, **({"num_frames": 4} if clip else {}))
    x = torch.randn(2, 3, 4, 32, 32) if clip else torch.randn(2, 3, 32, 32)
    rate = loader_bench.model_rate(model, x, torch.tensor([0, 1]), torch.device("cpu"), steps=1, amp=True,
                                   channels_last=True)
    assert rate > 0


def test_gpu_check_dry_run_on_a_host_without_optional_packages():
    # The prepared GPU script must run as is where only torch, h5py, joblib and OpenCV are installed:
    # tqdm and scikit-image are hidden from it here (an entry of None makes their import fail).
    code = ("import sys, runpy; sys.modules.update(dict.fromkeys(['tqdm', 'tqdm.auto', 'skimage', 'skimage.data', "
            "'skvideo', 'matplotlib'])); sys.argv = ['gpu_check.py', '--dry']; "
            "runpy.run_path('bench/gpu_check.py', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    sections = {line.split("|")[1].strip() for line in table[1:]}
    assert {"setup", "accuracy", "flow", "extract", "train"} <= sections, r.stdout
    assert "ERROR" not in r.stdout and "FAILED" not in r.stdout, r.stdout
    assert "scikit-image not installed" in r.stdout and "pass-through" in r.stdout
    shift = next(line for line in table if "known shift" in line)
    assert float(shift.split("|")[3].split()[0]) < 1.0  # px, of a 2.8 px shift: the flow is right, not just computed


def test_compile_falls_back_to_eager_past_the_size_limit_and_on_dynamo_failure(monkeypatch, caplog):
    # torch.compile itself is replaced (compiling for real takes minutes on a CPU): the fake compiles "work"
    # for the first size, and the dynamo limit error (what fullgraph=True raises after ~51 sizes) for the second.
    import torch._dynamo.exc as exc

    import flowprep.tvl1_torch as T

    compiled_calls = []

    def fake_compile(fn, **kw):
        def run(*a, **k):
            compiled_calls.append(tuple(a[0].shape))
            if a[0].shape[-1] == 20:  # the second frame size's finest level: dynamo gives up
                raise exc.FailOnRecompileLimitHit("recompile_limit reached with fullgraph=True")
            return fn(*a, **k)
        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(T, "_COMPILED", {})
    monkeypatch.setattr(T, "_compiled_shapes", set())
    monkeypatch.setattr(T, "_eager_shapes", set())
    monkeypatch.setattr(T, "_compile_failed", [])
    monkeypatch.setattr(T, "MAX_COMPILED_SIZES", 2)
    params = T.TVL1Params(nscales=1, warps=1, outer_iterations=1, inner_iterations=3)
    frames = {w: torch.randint(0, 255, (2, 2, 18, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(w))
              for w in (19, 20, 21)}

    def solve(w, compile):
        return T.tvl1(frames[w][0], frames[w][1], params=params, compile=compile)

    with caplog.at_level("WARNING", logger="flowprep.tvl1_torch"):
        assert torch.equal(solve(19, True), solve(19, False)) and compiled_calls  # compiled, same flow
        n = len(compiled_calls)
        assert torch.equal(solve(20, True), solve(20, False))  # dynamo failed: solved eagerly, same flow
        assert "torch.compile failed" in caplog.text and "FailOnRecompileLimitHit" in caplog.text
        n = len(compiled_calls)
        solve(20, True)
        assert len(compiled_calls) == n  # that size is not compiled again
        caplog.clear()
        solve(21, True)  # after dynamo gave up, no new size is compiled
        assert len(compiled_calls) == n and "runs without torch.compile" in caplog.text
        solve(19, True)  # the size compiled before still runs compiled
        assert len(compiled_calls) > n

    # the size limit alone
    monkeypatch.setattr(T, "_compiled_shapes", set())
    monkeypatch.setattr(T, "_eager_shapes", set())
    monkeypatch.setattr(T, "_compile_failed", [])
    monkeypatch.setattr(T, "MAX_COMPILED_SIZES", 1)
    caplog.clear()
    with caplog.at_level("WARNING", logger="flowprep.tvl1_torch"):
        solve(19, True)
        n = len(compiled_calls)
        solve(21, True)
        assert len(compiled_calls) == n and "1 frame sizes compiled in this process already" in caplog.text


def test_tvl1_bench_extract_warms_up_before_timing_the_pipeline(monkeypatch, capsys):
    # With --compile on a GPU the pipeline run used to pay compilation and CUDA start-up, the flow-alone run not.
    import flowprep.extract
    import flowprep.tvl1_torch

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import tvl1_bench
    finally:
        sys.path.pop(0)
    events = []
    real_warm, real_extract = flowprep.tvl1_torch.warm_up, flowprep.extract.extract_dataset
    monkeypatch.setattr(flowprep.tvl1_torch, "warm_up", lambda *a, **k: events.append(("warm", a[:3])) or real_warm(*a, **k))
    monkeypatch.setattr(flowprep.extract, "extract_dataset", lambda *a, **k: events.append(("extract",)) or real_extract(*a, **k))
    tvl1_bench.main(["--extract", "1", "--clip-frames", "3", "--cpu-batch", "2", "--jobs", "1"])
    assert events[0] == ("warm", (2, tvl1_bench.HEIGHT, tvl1_bench.WIDTH)) and events[1] == ("extract",), events
    assert "pipeline / flow alone" in capsys.readouterr().out


def test_cuda_index_beyond_the_visible_gpus_is_refused_up_front(monkeypatch, tmp_path):
    from flowprep.decode import DecodeConfig
    from flowprep.device import resolve_device
    from flowprep.extract import ExtractConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:2'.*sees 2 GPU\(s\), cuda:0 to cuda:1"):  # a ConfigError
        resolve_device("cuda:2")
    with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")
    # flowprep: the settings are refused before any store exists
    with pytest.raises(ValueError, match="cuda:7"):
        ExtractConfig(method="tvl1-torch", params={"device": "cuda:7"}, decode=DecodeConfig())
    # twostream: train refuses it before the run directory exists
    from twostream.train import TrainConfig, train

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="cuda:3"):
        train(TrainConfig(store=str(tmp_path), out_dir=str(out), device="cuda:3"), progress=False)
    assert not out.exists()
