"""The ``flowprep`` command: extract, import-frames, export, info, verify, show, methods."""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

import numpy as np

from .errors import ConfigError, FlowprepError
from .options import Parser, add_fields, given


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 340x256, got {text!r}") from None
    return w, h


def _param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


def _add_dataset_options(p: argparse.ArgumentParser, *, frame_folders: bool = False) -> None:
    """Where the labels and splits come from: the options ``extract`` and ``import-frames`` share."""
    from .dataset import LIST_FORMATS

    names = (" Their entries name frame folders: Class/v_X.avi and Class/v_X both name ROOT/Class/v_X (flat: "
             "ROOT/v_X, whose class the entry gives)") if frame_folders else ""
    p.add_argument("--splits", metavar="DIR", help="directory holding the UCF101/HMDB51 split files, if not under "
                   "ROOT." + names)
    p.add_argument("--list", metavar="FILE", help="one list file of every video (any --list-format) instead of class "
                   "folders; split 1 is made as for class folders (every 4th video of a class is a test video)")
    p.add_argument("--train-list", metavar="FILE", help="the list file of the training videos, used as it is "
                   "(with --val-list and/or --test-list: one file per subset, e.g. an official train + val pair)")
    p.add_argument("--val-list", metavar="FILE", help="the list file of the validation videos; without --test-list "
                   "they are the split's test set (what training validates on and 'evaluate' scores)")
    p.add_argument("--test-list", metavar="FILE", help="the list file of the test videos")
    p.add_argument("--list-format", default="auto", choices=LIST_FORMATS,
                   help="format of the list files: video ('path label', mmaction2), rawframes ('dir num_frames "
                   "label', mmaction2; the video is dir.* under ROOT), kinetics (CSV label,youtube_id,time_start,"
                   "time_end,split), ssv2 (Something-Something v2 JSON); auto (default): .csv kinetics, .json ssv2, "
                   "else rawframes when the first line ends in two integers after a path without extension, else "
                   "video. Labels: a 0-based integer or a class name; multi-label and unlabelled lists are refused")
    p.add_argument("--classes", metavar="FILE", help="with list files: the class names in label order (classInd.txt "
                   "'1 name' lines, one name per line, or the SSv2 labels JSON, found beside an SSv2 list by "
                   "default); integer labels index it, names must be in it")


def build_parser() -> argparse.ArgumentParser:
    from .batched import PipelineConfig
    from .decode import DecodeConfig
    from .flow import method_names
    from .unit import ExtractConfig

    p = Parser(prog="flowprep", description="Precompute RGB frames and dense optical flow of a "
                                "labelled video dataset into an HDF5 store, in parallel and resumably.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("extract", help="extract frames and flow of every video under ROOT into STORE",
                       description="Extract frames and flow of every video under ROOT into the store -o STORE. "
                       "Rerun the same command to resume after an interruption: finished videos are kept, "
                       "failed ones are retried. Exit status 1 if any video failed.")
    e.add_argument("root", help="dataset root: ROOT/<class>/<video> with optional UCF101/HMDB51 split files")
    e.add_argument("-o", "--output", required=True, metavar="STORE", help="store directory (created or resumed)")
    add_fields(e, ExtractConfig, skip=("params", "decode"))
    e.add_argument("--param", action="append", type=_param, default=[], metavar="NAME=VALUE",
                   help="override a parameter of the flow method (see 'flowprep methods'); repeatable")
    e.add_argument("--device", default=None, help="device for methods that run on a GPU (tvl1-torch): cpu, cuda, auto")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--size", type=_size, metavar="WxH", help="resize frames to exactly WxH, e.g. 340x256 (TSN)")
    g.add_argument("--short-side", type=int, default=256, metavar="N",
                   help="resize so the shorter side is N pixels, keeping the aspect ratio (default: 256; 0 keeps the size)")
    add_fields(e, DecodeConfig, only=("fps", "stride"))
    _add_dataset_options(e)
    w = e.add_mutually_exclusive_group()
    w.add_argument("--jobs", type=int, help="worker processes on this machine (default: -1, one per core)")
    w.add_argument("--dask", metavar="ADDRESS", help="run the videos on the dask.distributed cluster whose scheduler "
                   "is at ADDRESS (tcp://host:8786) instead; its workers set the parallelism and must read ROOT at "
                   "the same path; only this process writes STORE. Needs: pip install \"twostream[dask]\"")
    e.add_argument("--threads", type=int, default=1,
                   help="OpenCV threads in each worker, and torch threads for tvl1-torch on the CPU (default: 1; one "
                   "process per core with one thread each was fastest for every method, see bench/parallel_bench.py)")
    add_fields(e, PipelineConfig, only=("batch_pairs", "writers"))
    e.add_argument("--check", choices=("full", "quick"), default="full",
                   help="how the finished videos of a resumed store are checked before they are trusted (a damaged "
                   "one is extracted again): full (default) also recomputes each file's sha256, reading the whole "
                   "store once; quick checks each file's structure and settings only (about 1 ms per file)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")

    m = sub.add_parser("import-frames", help="build a store from frame folders made by denseflow, mmaction2 or "
                       "TSN's dense_flow, without recomputing anything",
                       description="Build the store -o STORE from existing frame folders (rawframes): "
                       "ROOT/<class>/<video>/ (denseflow, mmaction2) or flat ROOT/<video>/ (TSN's dense_flow) of "
                       "img_NNNNN.jpg frames and flow_x_/flow_y_ (or x_/y_) grey JPEG flow images. The JPEG bytes are "
                       "kept as they are. Rerun the same command to resume. Exit status 1 if any folder failed.")
    m.add_argument("root", help="the frame folders' root")
    m.add_argument("-o", "--output", required=True, metavar="STORE", help="store directory (created or resumed)")
    m.add_argument("--bound", type=float, required=True,
                   help="the flow bound the folders were quantised with: codes round(255 (f + B) / 2B); "
                   "mmaction2 passes 20 to denseflow, denseflow's own default is 32, TSN used 20")
    m.add_argument("--layout", default="auto", choices=("auto", "denseflow", "mmaction2", "tsn"),
                   help="denseflow: nested, img_/flow_x_/flow_y_, from 0, T frames and T-1 flows; mmaction2: nested, "
                   "img_/x_/y_, from 1, T and T-1; tsn: flat, img_/flow_x_/flow_y_, from 1, T-1 of each; "
                   "auto (default): detect each folder's names, start and counts")
    m.add_argument("--start-index", type=int, metavar="N",
                   help="number of the first file, if not the layout's (with --layout auto: detected)")
    m.add_argument("--method", default="tvl1", choices=method_names(),
                   help="the flow method the folders were made with, recorded so that 'twostream predict' computes "
                   "a new video's flow with ours (default: tvl1)")
    g = m.add_mutually_exclusive_group()
    g.add_argument("--size", type=_size, metavar="WxH", help="the frame size the folders were made at (recorded for "
                   "'twostream predict'; default: a new video's own size)")
    g.add_argument("--short-side", type=int, metavar="N", help="the short side the frames were resized to (recorded "
                   "alike)")
    _add_dataset_options(m, frame_folders=True)
    m.add_argument("--jobs", type=int, help="worker processes (default: -1, one per core)")
    m.add_argument("--quiet", action="store_true", help="no progress bar")

    x = sub.add_parser("export", help="write a store as frame folders of denseflow, mmaction2 or TSN, with lists",
                       description="Write the finished videos of STORE as frame folders under -o OUT, and the "
                       "annotation lists (mmaction2 rawframe lists per split, UCF101-style split files) under "
                       "OUT/annotations. A store made with --mapping tsn --flow-format jpeg (or imported) exports its "
                       "JPEG bytes unchanged; any other store's flow is re-quantised, and the error this costs is "
                       "measured and printed. Rerun to resume.")
    x.add_argument("store")
    x.add_argument("-o", "--output", required=True, metavar="OUT", help="root of the frame folders (created)")
    x.add_argument("--layout", required=True, choices=("denseflow", "mmaction2", "tsn"),
                   help="denseflow: OUT/<class>/<video>/img_00000.jpg, flow_x_00000.jpg, ...; mmaction2: the same "
                   "with x_/y_ from 1; tsn: OUT/<video>/ from 1, without the first frame's image")
    x.add_argument("--bound", type=float, help="TSN bound of the exported flow codes (default: the store's)")
    x.add_argument("--jobs", type=int, help="worker processes (default: -1, one per core)")
    x.add_argument("--quiet", action="store_true", help="no progress bar")

    i = sub.add_parser("info", help="summarise a store: videos, frames, classes, splits, settings, sizes, failures")
    i.add_argument("store")
    v = sub.add_parser("verify", help="check and read every frame and flow of a store; exit 1 on any problem",
                       description="Check every video file of a store (structure, settings, sha256, image headers) "
                       "and decode all its frames and flow; exit 1 on any problem. With --repair, extract the "
                       "videos whose files fail again (from the dataset root and settings the store records), "
                       "then exit 0 if they now pass.")
    v.add_argument("store")
    v.add_argument("--repair", action="store_true", help="extract the damaged or missing videos again")
    v.add_argument("--jobs", type=int, default=-1, help="worker processes for --repair (default: -1, one per core)")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("show", help="write a PNG of a video's frames above its colour-coded flow, with a colour key",
                       description="Write a PNG: evenly spaced frames of a stored video (numbered) above their "
                       "colour-coded flow to the next frame, and the colour key (hue: direction, saturation: "
                       "magnitude up to the largest flow shown).")
    s.add_argument("store")
    s.add_argument("video", help="video id as stored, e.g. ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi")
    s.add_argument("-o", "--output", required=True, help="PNG file to write")
    s.add_argument("--frames", type=int, default=6, help="how many evenly spaced frames (default: 6)")
    s.add_argument("--scale", type=float, help="enlarge the tiles by this factor (default: the smallest whole "
                   "factor that makes a tile's short side at least 160 pixels; 1 keeps the stored size)")
    s.add_argument("--animation", metavar="PATH", help="also write every frame beside its flow as an animation "
                   "(.gif, .mp4 or .avi)")
    s.add_argument("--fps", type=float, default=5.0, help="frames per second of --animation (default: 5)")
    sub.add_parser("methods", help="list the flow methods and their parameters")
    return p


def _dataset_source(a):
    from .dataset import DatasetSource

    return DatasetSource(splits_dir=a.splits, list_file=a.list, train_list=a.train_list, val_list=a.val_list,
                         test_list=a.test_list, list_format=a.list_format, classes_file=a.classes)


def extract_settings(a: argparse.Namespace):
    """The ExtractConfig and PipelineConfig (None unless --batch-pairs or --writers) of ``flowprep extract``."""
    from .batched import PipelineConfig
    from .decode import DecodeConfig
    from .unit import ExtractConfig

    params = dict(a.param)
    if a.device is not None:
        params["device"] = a.device
    decode = DecodeConfig(size=a.size, short_side=None if a.size or a.short_side == 0 else a.short_side,
                          **given(a, ["fps", "stride"]))
    cfg = ExtractConfig(params=params, decode=decode, **given(a, [f.name for f in fields(ExtractConfig)]))
    pipe = given(a, ["batch_pairs", "writers"])
    if any(v < 1 for v in pipe.values()):
        raise ConfigError(f"--batch-pairs and --writers must be at least 1, got {pipe}")
    return cfg, PipelineConfig(**pipe) if pipe else None


def cmd_extract(a) -> int:
    from .extract import extract_dataset

    cfg, pipeline = extract_settings(a)
    s = extract_dataset(a.root, a.output, cfg, jobs=a.jobs, threads=a.threads, source=_dataset_source(a),
                        progress=not a.quiet, log=lambda m: print(m, file=sys.stderr), dask=a.dask, pipeline=pipeline,
                        check=a.check)
    rate = s.pairs / s.seconds if s.seconds > 0 else 0.0
    print(f"{s.done} extracted, {s.skipped} already done, {len(s.failed)} failed, of {s.total}; "
          f"{s.pairs} flow pairs in {s.seconds:.1f} s ({rate:.1f} pairs/s) -> {a.output}")
    if s.damaged:
        print(f"{len(s.damaged)} damaged files were found and extracted again: {', '.join(sorted(s.damaged))}")
    if s.failed:
        print(f"{len(s.failed)} failed (recorded in {os.path.join(a.output, 'failed')}):", file=sys.stderr)
        for vid, why in sorted(s.failed.items()):
            print(f"  {vid}: {why}", file=sys.stderr)
    return 0 if s.ok else 1


def _report_failures(failed: dict, where: str) -> None:
    if failed:
        print(f"{len(failed)} failed (recorded in {where}):", file=sys.stderr)
        for vid, why in sorted(failed.items()):
            print(f"  {vid}: {why}", file=sys.stderr)


def cmd_import_frames(a) -> int:
    from .decode import DecodeConfig
    from .rawframes import ImportConfig, import_dataset

    decode = DecodeConfig(size=a.size, short_side=a.short_side)
    cfg = ImportConfig(bound=a.bound, layout=a.layout, start_index=a.start_index, method=a.method, decode=decode)
    s = import_dataset(a.root, a.output, cfg, jobs=a.jobs, source=_dataset_source(a), progress=not a.quiet,
                       log=lambda m: print(m, file=sys.stderr))
    rate = s.pairs / s.seconds if s.seconds > 0 else 0.0
    print(f"{s.done} imported, {s.skipped} already done, {len(s.failed)} failed, of {s.total}; "
          f"{s.pairs} flow frames in {s.seconds:.1f} s ({rate:.0f} flow frames/s) -> {a.output}")
    _report_failures(s.failed, os.path.join(a.output, "failed"))
    return 0 if s.ok else 1


def cmd_export(a) -> int:
    from .quantize import step
    from .rawframes import export_store

    s = export_store(a.store, a.output, a.layout, bound=a.bound, jobs=a.jobs, progress=not a.quiet,
                     log=lambda m: print(m, file=sys.stderr))
    print(f"{s.exported} exported, {s.skipped} already there, {len(s.failed)} failed -> {a.output} ({a.layout}); "
          f"lists in {os.path.join(a.output, 'annotations')}")
    if s.byte_exact:
        print(f"flow: the store's TSN-coded JPEG bytes, unchanged (bound {s.bound:g})")
    elif s.exported:
        print(f"flow: RE-QUANTISED to TSN codes at bound {s.bound:g} (step {step(s.bound, 'tsn'):.4f} px) and JPEG "
              f"quality 95: measured error against the store's flow {s.mean_error:.4f} px mean, {s.max_error:.4f} px "
              f"max, {100 * s.clipped_fraction:.2f} % of values beyond the bound clipped")
    _report_failures(s.failed, "this output; nothing was written for them")
    return 0 if s.ok else 1


def cmd_info(a) -> int:
    from .decode import DecodeConfig
    from .store import Store

    s = Store(a.store).summary()
    v, cfg, classes = s["videos"], s["settings"], s["classes"]
    for problem in s["damaged"]:
        print(f"DAMAGED    {problem}")
    print(f"store      {s['root']}")
    print(f"videos     {v['done']} done, {v['failed']} failed, {v['pending']} pending, of {v['found']} found"
          + (f" (+{v['problems']} dataset problems)" if v["problems"] else ""))
    print(f"frames     {s['frames']} RGB, {s['flow_frames']} flow")
    print(f"classes    {len(classes)}: {', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}")
    for n, sp in s["splits"].items():
        val = f", {sp['val']} val" if "val" in sp else ""
        print(f"split {n}    {sp['train']} train{val}, {sp['test']} test ({s['split_source']})")
    params = ", ".join(f"{k}={v}" for k, v in cfg.get("params", {}).items())
    print(f"method     {cfg.get('method', 'not recorded')} ({params})")
    d = DecodeConfig.from_dict(cfg.get("decode", {}))  # checked when the store was opened
    size = f"{d.size[0]}x{d.size[1]}" if d.size else (f"short side {d.short_side}" if d.short_side else "source")
    print(f"frames at  {size}, fps {d.fps or 'source'}, stride {d.stride}")
    print(f"flow       {cfg.get('flow_format', 'jpeg')}, mapping {cfg.get('mapping')}, bound {cfg.get('bound')} px; "
          f"rgb {cfg.get('rgb_format', 'jpeg')}")
    if "imported" in cfg:
        print(f"imported   from frame folders (layout {cfg['imported'].get('layout') if isinstance(cfg['imported'], dict) else None}); method and frame size as stated "
              "at import")
    if s["bytes_per_frame"]:
        b = s["bytes_per_frame"]
        print(f"bytes      {b['rgb']:.0f} per RGB frame, {b['flow']:.0f} per flow frame (x and y)")
    for vid, why in s["failures"].items():
        print(f"FAILED     {vid}: {why}")
    return 0


def cmd_verify(a) -> int:
    from .extract import repair_videos
    from .store import Store

    st = Store(a.store)
    damaged = st.verify(progress=not a.quiet)
    failures = st.failures()
    if a.repair and damaged:
        for vid, why in sorted(damaged.items()):
            print(f"REPAIR {vid}: {why}", file=sys.stderr)
        s = repair_videos(a.store, sorted(damaged), jobs=a.jobs, log=lambda m: print(m, file=sys.stderr))
        st = Store(a.store)
        again = st.verify([v for v in sorted(damaged) if v not in s.failed], progress=not a.quiet)
        print(f"repaired {len(damaged) - len(s.failed) - len(again)} of {len(damaged)} damaged videos")
        failures = st.failures()
        damaged = again
    problems = [f"{vid}: failed: {rec['error']}" for vid, rec in sorted(failures.items())]
    problems += [why if why.startswith(vid) else f"{vid}: {why}" for vid, why in sorted(damaged.items())]
    for p in problems:
        print(f"PROBLEM {p}", file=sys.stderr)
    print(f"verified {len(st.manifest['videos'])} videos: {len(problems)} problems")
    return 1 if problems else 0


def cmd_show(a) -> int:
    import cv2

    from .store import Store
    from .visualize import animation_frames, contact_sheet, default_scale, write_animation

    if a.scale is not None and not 0 < a.scale <= 32:
        raise ConfigError(f"--scale must be in (0, 32], got {a.scale}")
    if a.frames < 1:
        raise ConfigError(f"--frames must be at least 1, got {a.frames}")
    st = Store(a.store)
    n = st.num_frames(a.video)
    idx = [int(i) for i in np.unique(np.linspace(0, n - 2, a.frames).round())]
    frames, flows = st.frames(a.video, idx), st.flow(a.video, idx)
    scale = a.scale or default_scale(*frames.shape[1:3])
    sheet = contact_sheet(frames, flows, labels=[f"frame {i}" for i in idx],
                          flow_labels=[f"flow {i}>{i + 1}" for i in idx], scale=scale)
    if not cv2.imwrite(a.output, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{a.output}: could not write the image (is the directory there, is the name a .png?)")
    print(f"wrote {a.output}: frames {list(idx)} of {a.video} above their flow, tiles x{scale:g}, with the colour key")
    if a.animation:
        every = list(range(n - 1))
        write_animation(animation_frames(st.frames(a.video, every), st.flow(a.video, every), frame_numbers=every,
                                         scale=scale), a.animation, fps=a.fps)
        print(f"wrote {a.animation}: {len(every)} frames beside their flow")
    return 0


def cmd_methods(a) -> int:
    from .flow import get_method, method_names

    for name in method_names():
        m = get_method(name)
        print(f"{name}: {m.description} [devices: {', '.join(m.devices)}]")
        print("    " + ", ".join(f"{k}={v}" for k, v in m.defaults.items()))
    return 0


def main(argv=None) -> int:
    from . import signals

    parser = build_parser()
    a = parser.parse_args(argv)
    commands = {"extract": cmd_extract, "import-frames": cmd_import_frames, "export": cmd_export, "info": cmd_info, "verify": cmd_verify, "show": cmd_show, "methods": cmd_methods}
    try:
        with signals.sigterm_as_interrupt():
            return commands[a.command](a)
    # Errors for users: one line, exit 2. flowprep's own (FlowprepError: bad input, settings, stores, clusters)
    # and the system's (a file that cannot be read or written). Anything else is a bug and keeps its traceback;
    # after a SIGTERM, whatever the cleanup met (a worker the same SIGTERM ended, too) is the SIGTERM's.
    except Exception as e:
        if signals.received():
            return _stopped(terminated=True)
        if isinstance(e, (FlowprepError, OSError)):
            print(f"flowprep: error: {e}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (a batch scheduler's stop): the workers are ended on the way
        return _stopped(terminated=signals.received())


def _stopped(*, terminated: bool) -> int:
    how = "terminated (SIGTERM)" if terminated else "interrupted"
    print(f"flowprep: {how}; run the same command again to resume", file=sys.stderr)
    return 143 if terminated else 130


if __name__ == "__main__":
    sys.exit(main())
