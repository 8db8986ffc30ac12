"""The ``twostream`` command: train, evaluate, fuse, report, predict, convert, export, models."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import fields


def build_parser() -> argparse.ArgumentParser:
    from .models import ARCH_INPUT
    from .train import TrainConfig

    d = {f.name: f.default for f in fields(TrainConfig)}
    p = argparse.ArgumentParser(prog="twostream", description="Train, evaluate and late-fuse two-stream "
                                "action recognition models on a flowprep store.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one stream (or one video model)",
                       description="Train one stream on a flowprep store. Writes last.pt, best.pt, log.csv and "
                       "curves.png in RUN_DIR; --resume continues from RUN_DIR/last.pt.")
    t.add_argument("--store", required=True, help="flowprep store directory")
    t.add_argument("-o", "--out", required=True, metavar="RUN_DIR", help="run directory")
    t.add_argument("--stream", choices=("spatial", "temporal"), default=d["stream"],
                   help="spatial: RGB frames; temporal: stacked optical flow (default: spatial)")
    t.add_argument("--split", type=int, default=d["split"], help="split number (default: 1)")
    t.add_argument("--arch", default=d["arch"], choices=sorted(ARCH_INPUT), help="model (default: resnet18)")
    t.add_argument("--width", type=int, default=d["base_width"],
                   help="channels of the first stage (default: 64, the published width; smaller trains faster)")
    t.add_argument("--num-frames", type=int, default=None,
                   help="L flow frames per stack (default 10), or frames per clip for video models (default 16)")
    t.add_argument("--stride", type=int, default=d["stride"], help="frame step inside a clip (default: 1)")
    t.add_argument("--input-size", type=int, default=d["input_size"], help="network input side (default: 224)")
    t.add_argument("--pretrained", metavar="NAME|PATH",
                   help="weights to start from: 'imagenet' (resnet18/34/50, the 2D-backbone video models, r3d_18 "
                   "by inflation) or 'kinetics400' (r3d_18, r2plus1d_18), downloaded once into the torch hub cache; "
                   "or the path of a state dict. For the temporal stream the first conv is adapted by "
                   "cross-modality init")
    t.add_argument("--epochs", type=int, default=d["epochs"], help=f"(default: {d['epochs']})")
    t.add_argument("--batch-size", type=int, default=d["batch_size"], help=f"(default: {d['batch_size']})")
    t.add_argument("--lr", type=float, default=d["lr"], help=f"learning rate (default: {d['lr']})")
    t.add_argument("--momentum", type=float, default=d["momentum"], help=f"SGD momentum (default: {d['momentum']})")
    t.add_argument("--weight-decay", type=float, default=d["weight_decay"], help=f"(default: {d['weight_decay']})")
    t.add_argument("--optimizer", choices=("sgd", "adamw"), default=d["optimizer"], help="(default: sgd)")
    t.add_argument("--schedule", choices=("cosine", "step", "constant"), default=d["schedule"],
                   help="learning-rate schedule over the epochs (default: cosine)")
    t.add_argument("--dropout", type=float, default=d["dropout"], help=f"(default: {d['dropout']})")
    t.add_argument("--bn", choices=("train", "partial", "frozen"), default=d["bn"],
                   help="BatchNorm statistics: train (default), partial (TSN: all frozen but the first), frozen")
    t.add_argument("--samples-per-video", type=int, default=d["samples_per_video"],
                   help="random clips per video and epoch (default: 1)")
    t.add_argument("--workers", type=int, default=d["workers"], help="DataLoader workers (default: 2)")
    t.add_argument("--device", default=d["device"], help="auto, cpu or cuda (default: auto)")
    t.add_argument("--no-amp", action="store_true", help="no autocast on CUDA (default: bfloat16 on compute capability >= 8.0, float16 with loss scaling below)")
    t.add_argument("--no-channels-last", action="store_true", help="no channels-last memory format on CUDA")
    t.add_argument("--seed", type=int, default=d["seed"], help="(default: 0)")
    t.add_argument("--val-clips", type=int, default=d["val_clips"], help="clips per video in per-epoch validation")
    t.add_argument("--no-mean-subtraction", action="store_true",
                   help="keep the mean flow of each field (subtracting it removes a global pan: right when camera "
                   "motion is noise, as in UCF101; wrong when the camera motion is the class)")
    fl = t.add_mutually_exclusive_group()
    fl.add_argument("--no-flip", action="store_true",
                    help="no horizontal flips: for classes defined by a direction (pan left / pan right). Recorded in "
                    "the checkpoint: evaluate and predict then use no mirrored views (10 crops become 5)")
    fl.add_argument("--flip-map", metavar="FILE",
                    help="class pairs that swap under a horizontal flip (mmaction2's flip_label_map), one pair per "
                    "line ('Left Right'; a tab between names with spaces): flips stay and swap those labels, in "
                    "training and in the mirrored test views")
    t.add_argument("--tensorboard", action="store_true", help="also log to RUN_DIR/tb (needs tensorboard)")
    t.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
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

    r = sub.add_parser("predict", help="classify a raw video with one or both streams")
    r.add_argument("video")
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


def cmd_train(a) -> int:
    from .train import TrainConfig, train

    cfg = TrainConfig(store=a.store, out_dir=a.out, stream=a.stream, split=a.split, arch=a.arch, base_width=a.width,
                      num_frames=a.num_frames, stride=a.stride, input_size=a.input_size, pretrained=a.pretrained,
                      epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum,
                      weight_decay=a.weight_decay, optimizer=a.optimizer, schedule=a.schedule, dropout=a.dropout, bn=a.bn,
                      samples_per_video=a.samples_per_video, workers=a.workers, device=a.device, amp=not a.no_amp,
                      channels_last=not a.no_channels_last, seed=a.seed, val_clips=a.val_clips,
                      subtract_mean=not a.no_mean_subtraction, flip=not a.no_flip, flip_map=a.flip_map,
                      tensorboard=a.tensorboard, resume=a.resume)
    logger = logging.getLogger("twostream")
    level = logger.level
    if a.quiet:  # the per-epoch lines and the note on pretrained weights are INFO messages of this package
        logger.setLevel(logging.WARNING)
    try:
        row = train(cfg, progress=not a.quiet)
    finally:
        logger.setLevel(level)
    if _rank() == 0:
        print(f"trained {cfg.stream} {cfg.arch}: last epoch val video acc {row.get('val_video_acc', float('nan')):.3f}, "
              f"best {row['best_val_video_acc']:.3f} -> {a.out}")
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
    from .predict import predict

    r = predict(a.video, spatial=a.spatial, temporal=a.temporal, weights=a.weights, top=a.top, num_clips=a.clips,
                num_crops=a.crops, device=a.device)
    if a.json:
        print(json.dumps(r, indent=1))
    else:
        for i, t in enumerate(r["top"], 1):
            print(f"{i}. {t['class']:30s} {t['score']:.3f}")
    return 0


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


def main(argv=None) -> int:
    from flowprep.decode import VideoError
    from flowprep.store import StoreError

    from .checkpoint import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = build_parser().parse_args(argv)
    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "fuse": cmd_fuse, "predict": cmd_predict,
                "convert": cmd_convert, "export": cmd_export, "models": cmd_models, "report": cmd_report}
    try:
        return commands[a.command](a)
    except (CheckpointError, StoreError, VideoError, ValueError, OSError) as e:
        print(f"twostream: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twostream: interrupted; 'twostream train ... --resume' continues from the last epoch", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
