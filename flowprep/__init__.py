"""flowprep: decode videos, compute dense optical flow, store frames and flow in HDF5.

The pipeline, one module per stage::

    decode.py      -> frames from a video file (resize, temporal subsampling)
    registry.py    -> what a flow method is (FlowMethod, DeviceSolver) and register_method
    flow.py        -> the methods' lookup, the OpenCV methods, flow of a pair or a video
    tvl1.py        -> TV-L1's parameters, shared by OpenCV's tvl1 and tvl1_torch.py (our batched TV-L1)
    device.py      -> which torch device a name means (shared with twostream)
    groundtruth.py -> a flow benchmark with exact ground truth (photographs moved by known motions)
    quantize.py    -> flow <-> uint8 mappings
    dataset.py     -> discover labelled videos and splits under a dataset root: class folders, split files, list files
    store.py       -> the on-disk store (one HDF5 file per video) and its reader
    h5guard.py     -> checks of a file's HDF5 structures before the HDF5 library reads them (untrusted files)
    unit.py        -> the per-video unit of work: settings (ExtractConfig), result, decode, write, failure;
                      prepare_video: a new video exactly as a store holds its videos
    extract.py     -> parallel, resumable extraction of a whole dataset; picks a backend:
                      joblib workers (here), batched.py (device batches across videos), cluster.py (Dask)
    rawframes.py   -> import frame folders of denseflow / mmaction2 / TSN into a store, export a store to them
    visualize.py   -> colour-coded flow images
    errors.py      -> FlowprepError, the base of every error for users
    options.py     -> command-line options derived from the config dataclasses; the one-line-error parser
    signals.py     -> SIGTERM handled as Ctrl-C (workers ended, resumable), for both commands
    cli.py         -> the ``flowprep`` command
"""

__version__ = "0.1.0"
