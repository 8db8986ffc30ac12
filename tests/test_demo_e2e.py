"""The README's main job, end to end at a smaller size: fusion beats each stream alone; the results page works in a
real browser."""
import json
import os
import subprocess
import sys
from pathlib import Path

from headless import Chromium, check_report_page

ROOT = Path(__file__).parents[1]


def test_demo_pipeline_fusion_beats_each_stream(tmp_path):
    env = {**os.environ, "VIDEOS_PER_CLASS": "16", "EPOCHS": "4", "SAMPLES_PER_VIDEO": "4", "EVAL_CLIPS": "3",
           "EVAL_CROPS": "1"}
    r = subprocess.run(["bash", str(ROOT / "data" / "run_demo.sh"), str(tmp_path / "demo")], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    spatial, temporal = report["streams"]["spatial"]["top1"], report["streams"]["temporal"]["top1"]
    fused = report["fused"]["top1"]
    print(f"spatial {spatial:.3f} temporal {temporal:.3f} fused {fused:.3f}")
    assert fused > max(spatial, temporal)
    # each stream alone is stuck near its designed ceiling (1/3 and 1/2 of the classes, plus luck on 24 videos)
    assert spatial < 0.6 and temporal < 0.7
    assert "fused" in r.stdout and (tmp_path / "demo" / "temporal" / "curves.png").is_file()
    assert (tmp_path / "demo" / "fused_confusion.png").stat().st_size > 1000

    # the results page, in a real headless browser: loads cleanly, every image there, the numbers the score files'
    with Chromium() as browser:
        info = check_report_page(browser, tmp_path / "demo" / "report.html",
                                 [tmp_path / "demo" / s / "scores.npz" for s in ("spatial", "temporal")],
                                 tmp_path / "report.png")
    assert info["strips"] == 8 and info["images"] == 8 + 3 + 1  # 8 worst videos, 3 matrices, the curves

    # the whole path on a raw video: decode, flow as the store did, both streams, fusion
    video = next((tmp_path / "demo" / "videos" / "RedUp").glob("*.avi"))
    out = subprocess.run([sys.executable, "-m", "twostream", "predict", str(video),
                          "--spatial", str(tmp_path / "demo" / "spatial" / "last.pt"),
                          "--temporal", str(tmp_path / "demo" / "temporal" / "last.pt"),
                          "--clips", "3", "--crops", "1", "--top", "3", "--json", "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    pred = json.loads(out.stdout)
    assert len(pred["top"]) == 3 and set(pred["streams"]) == {"spatial", "temporal"}
    scores = [t["score"] for t in pred["top"]]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    # the spatial stream must at least get the colour right
    assert pred["streams"]["spatial"][0]["class"].startswith("Red")
