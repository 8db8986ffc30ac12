"""The ``twostream`` command: train, evaluate, fuse, report, predict, convert, export, models."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from flowprep.errors import FlowprepError

from .errors import ConfigError, TwostreamError


def build_parser() -> argparse.ArgumentParser:
    from flowprep.options import Parser, add_fields

    from .config import TrainConfig
    from .models import ARCH_INPUT

    p = Parser(prog="twostream", description="Train, evaluate and late-fuse two-stream "
               "action recognition models on a flowprep store.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one stream (or one video model)",
                       description="Train one stream on a flowprep store. Writes last.pt, best.pt, log.csv, "
                       "curves.png and config.json in RUN_DIR; --resume continues from RUN_DIR/last.pt. Every "
                       "option is a field of twostream.config.TrainConfig; --config FILE reads them from a JSON "
                       "file (a run's config.json repeats that run) and the options given override it.")
    t.add_argument("--config", metavar="FILE", help="settings from a JSON file of TrainConfig fields, e.g. a run's "
                   "RUN_DIR/config.json (its 'resume' is not taken: give --resume)")
    add_fields(t, TrainConfig)
    t.add_argument("--quiet", action="store_true", help="no progress bars and no line per epoch: only the final "
                   "result line, warnings and errors (the per-epoch figures are still written to RUN_DIR/log.csv)")

    e = sub.add_parser("evaluate", help="score the test videos with multi-clip, multi-crop averaging")
    e.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    e.add_argument("--store", required=True)
    e.add_argument("--split", type=int, help="split number (default: the one trained on)")
    e.add_argument("-o", "--out", required=True, metavar="SCORES", help="score file to write (.npz)")
    e.add_argument("--clips", type=int, default=25, help="evenly spaced clips per video (default: 25)")
    e.add_argument("--crops", type=int, default=10, choices=(1, 5, 10),
                   help="crops per clip (default: 10, the 5 and each mirrored; 5 for a model trained with --no-flip)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--device", default="auto")
    e.add_argument("--quiet", action="store_true", help="no progress bar: only the result line, warnings and errors")

    f = sub.add_parser("fuse", help="late-fuse score files by (weighted) averaging")
    f.add_argument("scores", nargs="+", help="score files written by 'twostream evaluate'")
    f.add_argument("--weights", type=float, nargs="+", help="one weight per score file (default: equal)")
    f.add_argument("--report", help="write the table as JSON here")
    f.add_argument("-o", "--out", help="also write the fused scores (.npz)")
    f.add_argument("--confusion", metavar="PNG", help="write the fused confusion matrix here (default: "
                   "<out stem>_confusion.png beside --out, else fused_confusion.png beside --report)")

    rp = sub.add_parser("report", help="write one self-contained HTML page of the results",
                        description="Fuse the streams' score files and write one HTML file (images inline, no network "
                        "needed): accuracy table and run settings, per-class accuracy sorted by what fusion gains, "
                        "confusion matrices and most confused pairs, the worst test videos with their frames, flow "
                        "and each stream's top 3, and the training curves.")
    rp.add_argument("scores", nargs="+", help="score files written by 'twostream evaluate'")
    rp.add_argument("-o", "--out", required=True, metavar="HTML", help="the page to write")
    rp.add_argument("--runs", nargs="+", metavar="RUN_DIR", help="the run directory of each score file (default: the "
                    "score file's directory when it holds the run's config.json or log.csv)")
    rp.add_argument("--store", help="the flowprep store of the test videos (default: the one the runs recorded)")
    rp.add_argument("--weights", type=float, nargs="+", help="one fusion weight per score file (default: equal)")
    rp.add_argument("--worst", type=int, default=8, metavar="K", help="show the K worst test videos (default: 8)")
    rp.add_argument("--frames", type=int, default=5, help="frames in each worst video's strip (default: 5)")
    rp.add_argument("--listed", type=int, default=15, metavar="N",
                    help="classes in the largest gains / losses lists and confused pairs per matrix (default: 15)")
    rp.add_argument("--title", default="twostream results")

    r = sub.add_parser("predict", help="classify raw videos with one or both streams",
                       description="Classify videos (files, or folders searched for video files) with one or both "
                       "stream checkpoints, each video prepared as the training store's settings say and scored on "
                       "the evaluation views; the checkpoints are loaded once. Exit status 1 if any video failed "
                       "(it is reported and the others go on).")
    r.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or folders of videos")
    r.add_argument("-o", "--out", metavar="FILE", help="write every video's result to FILE (.csv or .json)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--spatial", metavar="CKPT")
    r.add_argument("--temporal", metavar="CKPT")
    r.add_argument("--weights", type=float, nargs=2, default=(1.0, 1.0), metavar=("SPATIAL", "TEMPORAL"),
                   help="fusion weights (default: 1 1)")
    r.add_argument("--top", type=int, default=5)
    r.add_argument("--clips", type=int, default=25)
    r.add_argument("--crops", type=int, default=10, choices=(1, 5, 10))
    r.add_argument("--device", default="auto")
    r.add_argument("--json", action="store_true", help="print JSON")

    c = sub.add_parser("convert", help="convert an mmaction2 or torchvision-reference checkpoint to a plain state dict",
                       description="Convert another tool's checkpoint (mmaction2 recognizer: TSN ResNet-18/34/50, "
                       "R3D-18, R(2+1)D-18 where the names map; torchvision video-classification reference: "
                       "checkpoint.pth) into a state dict with twostream's names, checked to fill the model exactly. "
                       "Use the output with 'twostream train --pretrained OUT'.")
    c.add_argument("checkpoint", help="the other tool's checkpoint file")
    c.add_argument("-o", "--out", required=True, help="state dict to write (.pth)")
    c.add_argument("--from", dest="source", choices=("auto", "mmaction2", "torchvision-reference"), default="auto",
                   help="the tool that wrote it (default: detect)")
    c.add_argument("--arch", choices=sorted(ARCH_INPUT),
                   help="twostream arch to convert to (default: inferred from the names, or the reference's --model)")

    x = sub.add_parser("export", help="export a checkpoint's network to ONNX or TorchScript",
                       description="Write the network of a checkpoint (any --arch) to ONNX (.onnx) or TorchScript (.pt), "
                       "batch size free, with the input layout (channels, frames, size, RGB mean/std or flow bound "
                       "and mean subtraction, the store's frame and flow settings, the classes) in its metadata.")
    x.add_argument("checkpoint", help="a best.pt or last.pt")
    x.add_argument("-o", "--out", required=True, help="file to write: .onnx or .pt")
    x.add_argument("--format", choices=("onnx", "torchscript"), help="(default: from the suffix of --out)")
    x.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")

    sub.add_parser("models", help="list the model choices with parameter counts")
    return p


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 prints results."""
    return int(os.environ.get("RANK", "0"))


def train_config(a: argparse.Namespace):
    """The TrainConfig of ``twostream train``: the dataclass's defaults, under the ``--config`` file, under the
    options given."""
    from flowprep.options import given

    from .config import TrainConfig

    values = {}
    if a.config:
        try:
            values = json.loads(Path(a.config).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{a.config}: cannot read it as a JSON file of training settings ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{a.config}: expected a JSON object of training settings, got {type(values).__name__}")
        values.pop("resume", None)  # a run repeated from its config.json starts afresh unless --resume says so
    values.update(given(a, [f.name for f in fields(TrainConfig)]))
    missing = [flag for name, flag in (("store", "--store"), ("out_dir", "-o")) if name not in values]
    if missing:
        raise ConfigError(f"{' and '.join(missing)} required (or a --config file that gives them)")
    return TrainConfig.from_dict(values)


def cmd_train(a) -> int:
    from .train import train

    cfg = train_config(a)
    logger = logging.getLogger("twostream")
    level = logger.level
    if a.quiet:  # the per-epoch lines and the note on pretrained weights are INFO messages of this package
        logger.setLevel(logging.WARNING)
    try:
        row = train(cfg, progress=not a.quiet)
    finally:
        logger.setLevel(level)
    if _rank() == 0:
        done = "already finished before: " if row.get("finished_before") else ""
        print(f"trained {cfg.stream} {cfg.arch}: {done}last epoch val video acc "
              f"{float(row.get('val_video_acc', float('nan'))):.3f}, best {row['best_val_video_acc']:.3f} -> {cfg.out_dir}")
    return 0


def cmd_evaluate(a) -> int:
    from .evaluate import evaluate

    m = evaluate(a.checkpoint, a.store, a.out, split=a.split, num_clips=a.clips, num_crops=a.crops,
                 batch_size=a.batch_size, workers=a.workers, device=a.device, progress=not a.quiet)
    if _rank() == 0:
        if m["crops"] != a.crops:
            print(f"the model was trained without flips: {m['crops']} unmirrored crops per clip, not {a.crops}")
        print(f"{m['videos']} videos: clip top1 {m['clip_top1']:.3f}, video top1 {m['top1']:.3f}, "
              f"top5 {m['top5']:.3f}, mean class {m['mean_class']:.3f} -> {a.out}")
    return 0


def cmd_fuse(a) -> int:
    from .fuse import format_table, fuse_files

    result = fuse_files(a.scores, a.weights, a.report, a.out, a.confusion)
    print(format_table(result))
    if "confusion" in result:
        print(f"fused confusion matrix -> {result['confusion']}")
    return 0


def cmd_report(a) -> int:
    from .fuse import format_table
    from .report import ReportConfig, write_report

    cfg = ReportConfig(scores=a.scores, runs=a.runs, store=a.store, weights=a.weights, worst=a.worst,
                       strip_frames=a.frames, listed=a.listed, title=a.title)
    result = write_report(cfg, a.out)
    print(format_table(result))
    print(f"report -> {a.out}" + ("" if result["store_shown"] else f" (no frames: {result['store']})"))
    return 0


def cmd_predict(a) -> int:
    from .predict import Predictor, find_videos, write_predictions

    videos = find_videos(a.videos)
    predictor = Predictor(a.spatial, a.temporal, a.weights, device=a.device, num_clips=a.clips, num_crops=a.crops)
    results = predictor.predict_many(videos, progress=not a.quiet and len(videos) > 1)
    if a.out:
        write_predictions(results, a.out, top=a.top)
    if a.json:
        out = [r.to_dict(a.top) for r in results]
        print(json.dumps(out[0] if len(a.videos) == 1 and len(out) == 1 else out, indent=1))
    elif len(results) == 1 and not results[0].error:
        for i, t in enumerate(results[0].top(a.top), 1):
            print(f"{i}. {t['class']:30s} {t['score']:.3f}")
    else:
        for r in results:
            if not r.error:
                best = r.top(1)[0]
                print(f"{r.video}: {best['class']} {best['score']:.3f}")
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"twostream: error: {r.error}", file=sys.stderr)
    if a.out:
        print(f"{len(results) - len(failed)} of {len(results)} videos classified -> {a.out}", file=sys.stderr)
    return 1 if failed else 0


def cmd_convert(a) -> int:
    from .convert import convert_checkpoint, save_state_dict

    c = convert_checkpoint(a.checkpoint, source=a.source, arch=a.arch)
    save_state_dict(c.state_dict, a.out)
    print(f"{c.source} -> {c.arch} ({c.num_classes} classes, {c.in_channels} input channels, width {c.base_width}): "
          f"{len(c.state_dict)} entries -> {a.out}")
    for key, why in c.ignored.items():
        print(f"  left out {key}: {why}")
    return 0


def cmd_export(a) -> int:
    from .export import export_checkpoint

    m = export_checkpoint(a.checkpoint, a.out, fmt=a.format, opset=a.opset)
    print(f"{m['arch']} {m['stream']} -> {a.out}: input '{m['input_name']}' {m['layout']} "
          f"{'x'.join(map(str, m['input_shape']))}, output '{m['output_name']}' logits over {len(m['classes'])} classes")
    return 0


def cmd_models(a) -> int:
    from .models import ARCH_INPUT, DESCRIPTIONS, build_model, count_parameters

    for name in sorted(ARCH_INPUT):
        n = count_parameters(build_model(name, num_classes=101))
        print(f"{name:14s} {n / 1e6:6.1f}M  {ARCH_INPUT[name]:5s}  {DESCRIPTIONS.get(name, '')}")
    return 0


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line. An error re-raised from a DataLoader worker carries the worker's whole
    traceback in its message; its last line is the worker's own error (``module.Class: message``)."""
    text = str(e).strip()
    if "DataLoader worker" in text and "Traceback" in text:
        last = text.splitlines()[-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and " " not in head else last
    return text.splitlines()[0] if text else type(e).__name__


# OpenMP settings the twostream command starts torch with, unless the environment sets them. With its default
# (active) wait policy, an OpenMP thread that reaches a barrier first spins for its siblings; when one of them is
# descheduled (the DataLoader's worker processes, or any other work, take the cores) the spinning burns the
# core it needs: on 2 cores with 2 workers, training on the CPU fell to 1/6 of its rate with one other busy
# process on the machine (bench/train_bench.py; the README's performance section). Passive waiting sleeps.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def openmp_defaults() -> None:
    """Put :data:`OPENMP_DEFAULTS` into the environment where it does not set them. Only before torch is first
    imported (the OpenMP runtime reads them when it loads); later, nothing changes."""
    if "torch" not in sys.modules:
        for key, value in OPENMP_DEFAULTS.items():
            os.environ.setdefault(key, value)


def main(argv=None) -> int:
    openmp_defaults()
    from flowprep import signals

    from .train import TrainingDiverged

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "fuse": cmd_fuse, "predict": cmd_predict,
                "convert": cmd_convert, "export": cmd_export, "models": cmd_models, "report": cmd_report}
    try:
        with signals.sigterm_as_interrupt():
            return commands[a.command](a)
    except Exception as e:
        if signals.received():  # whatever the cleanup met after a SIGTERM (a DataLoader worker it ended, too)
            return _stopped(a.command, terminated=True)
        if isinstance(e, TrainingDiverged):
            print(f"twostream: training stopped: {e}", file=sys.stderr)
            return 1
        # Errors for users: one line, exit 2. twostream's own, and flowprep's (a store or video that cannot be
        # read), the system's (a file that cannot be written), and an error re-raised from a DataLoader worker
        # (its type may not be one of ours). Anything else is a bug and keeps its traceback.
        if isinstance(e, (TwostreamError, FlowprepError, OSError)) or "DataLoader worker" in str(e):
            print(f"twostream: error: {_one_line(e)}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (flowprep.signals)
        return _stopped(a.command, terminated=signals.received())


def _stopped(command: str, *, terminated: bool) -> int:
    """Say how to go on after Ctrl-C (exit status 130) or SIGTERM (143)."""
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    then = ("'twostream train ... --resume' continues from the last finished epoch" if command == "train"
            else "run the same command again")
    print(f"twostream: {how}; {then}", file=sys.stderr)
    return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
